"""A throwaway second dockerd for tests that stop or restart Docker.

It has its own data root, exec root, socket and network namespace, so the suite's daemon, its
containers and its docker0 bridge are left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest


class PrivateDockerd:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dspy-dockerd-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.endpoint = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.dir / "dockerd.log", "ab")
        self.process = subprocess.Popen(
            [
                # Its own network namespace: a dockerd with --bridge=none in the host's namespace
                # deletes the host's docker0 bridge out from under the suite's daemon.
                "unshare", "--net",
                "dockerd", "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
                "--pidfile", str(self.dir / "dockerd.pid"), "--host", self.endpoint,
                "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        client = docker.APIClient(base_url=self.endpoint, version="1.40", timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                return
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.dir / "dockerd.log").read_text()[-3000:])
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None


@pytest.fixture
def private_dockerd(docker_api: docker.APIClient) -> Iterator[PrivateDockerd]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("unshare") is None:
        pytest.skip("a second dockerd needs root, dockerd and unshare")
    daemon = PrivateDockerd()
    daemon.start()
    yield daemon
    daemon.stop()
    # dockerd leaves its data root and the netns file it binds under exec/netns mounted.
    for mounted in ("data", "exec/netns/default"):
        subprocess.run(["umount", "-R", str(daemon.dir / mounted)], capture_output=True)
    shutil.rmtree(daemon.dir, ignore_errors=True)

"""A Docker daemon that stops and comes back: UNAVAILABLE meanwhile, recovery without a shim restart.

Runs its own throwaway dockerd (own data root, exec root, socket and network namespace), so the
suite's daemon, its containers and its docker0 bridge are left alone.
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
import grpc
import pytest

from dockershim_py.api import api_pb2 as api


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
def private_dockerd(docker_api) -> Iterator[PrivateDockerd]:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("unshare") is None:
        pytest.skip("a second dockerd needs root, dockerd and unshare")
    daemon = PrivateDockerd()
    daemon.start()
    yield daemon
    daemon.stop()
    subprocess.run(["umount", "-R", str(daemon.dir / "data")], capture_output=True)
    shutil.rmtree(daemon.dir, ignore_errors=True)


def _runtime_ready(runtime) -> bool:
    conditions = runtime.Status(api.StatusRequest(), timeout=10).status.conditions
    return next(c for c in conditions if c.type == "RuntimeReady").status


def test_stopped_daemon_is_unavailable_and_the_shim_recovers(start_shim, private_dockerd) -> None:
    shim = start_shim(docker_endpoint=private_dockerd.endpoint)
    assert _runtime_ready(shim.runtime)
    shim.images.ListImages(api.ListImagesRequest(), timeout=10)

    private_dockerd.stop()
    time.sleep(1.1)  # readiness may be cached for at most a second
    started = time.monotonic()
    reply = shim.runtime.Status(api.StatusRequest(), timeout=10)
    runtime_ready = next(c for c in reply.status.conditions if c.type == "RuntimeReady")
    assert runtime_ready.status is False
    assert runtime_ready.reason == "DockerDaemonNotReady"
    assert "cannot reach the Docker daemon" in runtime_ready.message
    for call in (
        lambda: shim.images.ListImages(api.ListImagesRequest(), timeout=10),
        lambda: shim.runtime.Version(api.VersionRequest(), timeout=10),
        lambda: shim.images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image="busybox")), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE,), caught.value.details()
        assert "cannot reach the Docker daemon" in caught.value.details()
    assert time.monotonic() - started < 8, "an absent daemon must be reported quickly"

    private_dockerd.start()
    deadline = time.monotonic() + 10
    while not _runtime_ready(shim.runtime):
        assert time.monotonic() < deadline, "the shim did not see the daemon come back"
        time.sleep(0.2)
    shim.images.ListImages(api.ListImagesRequest(), timeout=10)
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "docker"
    assert shim.process.poll() is None

"""Shared fixtures: a real shim process on a real socket, talking to the real Docker daemon.

`make test` runs tests/env/setup.sh first, which provides dockerd, the registries on 127.0.0.1
and the test images named below.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest

from dockershim_py.api import api_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"
AUTH_REGISTRY = "127.0.0.1:5001"
AUTH_USER = "dspy-user"
AUTH_PASSWORD = "dspy-pass"
BUSYBOX = f"{REGISTRY}/dspy/busybox:1.0"
PAUSE = f"{REGISTRY}/dspy/pause:3.10"
USER_UID_IMAGE = f"{REGISTRY}/dspy/user-uid:1.0"
USER_NAME_IMAGE = f"{REGISTRY}/dspy/user-name:1.0"
USER_UID_GID_IMAGE = f"{REGISTRY}/dspy/user-uid-gid:1.0"
PRIVATE_IMAGE = f"{AUTH_REGISTRY}/dspy/private:1.0"
DOCKER_SOCKET = "unix:///var/run/docker.sock"
# crictl is built from cri-tools by hand (no Debian package has it): tests that run it skip without it.
CRICTL = Path("/opt/cri-tools/bin/crictl")
needs_crictl = pytest.mark.skipif(not CRICTL.exists(), reason=f"crictl is not installed at {CRICTL}")


def host_has_capability(number: int) -> bool:
    """Whether the capability bounding set holds capability `number` (CAP_SYS_RESOURCE is 24)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> number & 1)
    return False



class ManualClock:
    """A monotonic clock for unit tests: it moves only when a test sets or advances `now`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05):
    """The first truthy value of `predicate()`, or the last one after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Shim:
    """One dockershim-py process serving on a unix socket in a private temporary directory."""

    created: list["Shim"] = []  # every shim of the session, removed by pytest_sessionfinish if all passed

    def __init__(
        self, args: list[str] | None = None, docker_endpoint: str = DOCKER_SOCKET, endpoint: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.dir = Path(tempfile.mkdtemp(prefix="dspy-shim-"))
        self.socket = self.dir / "dockershim.sock"
        self.endpoint = endpoint or f"unix://{self.socket}"
        self.root = self.dir / "root"
        self.log_path = self.dir / "shim.log"
        self.args = [
            "--container-runtime-endpoint", self.endpoint,
            "--docker-endpoint", docker_endpoint,
            "--root-directory", str(self.root),
            "--pod-infra-container-image", PAUSE,
            "--log-level", "debug",
            *(args or []),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        Shim.created.append(self)

    def start(self, wait: float = 15.0) -> "Shim":
        """Start the process and wait until it says it serves (or fail with its log)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dockershim_py", *self.args],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=self.env,
            )
        deadline = time.monotonic() + wait
        while "serving CRI" not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"shim exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"shim did not start serving in {wait}s:\n{self.log()}")
            time.sleep(0.05)
        target = self.endpoint.removeprefix("tcp://")
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        grpc.channel_ready_future(self.channel).result(timeout=wait)
        return self

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        assert self.channel is not None
        return api_pb2_grpc.RuntimeServiceStub(self.channel)

    @property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        assert self.channel is not None
        return api_pb2_grpc.ImageServiceStub(self.channel)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove_files(self) -> None:
        """The socket directory, root directory and log; kept when a shim failed, for its log."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code


@pytest.fixture(scope="session")
def docker_api() -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url=DOCKER_SOCKET, version="auto", timeout=120)
    try:
        client.ping()
    except Exception as exc:  # the environment is missing: say how to get it
        pytest.fail(f"Docker is not running ({exc}); run `make test` or `bash tests/env/setup.sh` first")
    yield client
    client.close()


@pytest.fixture(scope="session")
def shim(docker_api: docker.APIClient) -> Iterator[Shim]:
    """The suite's shared shim; tests that need other flags start their own with `start_shim`."""
    process = Shim().start()
    yield process
    code = process.stop()
    assert code == 0, f"shim exited with {code} on SIGTERM:\n{process.log()[-4000:]}"
    process.remove_files()


@pytest.fixture
def runtime(shim: Shim) -> api_pb2_grpc.RuntimeServiceStub:
    return shim.runtime


@pytest.fixture
def images(shim: Shim) -> api_pb2_grpc.ImageServiceStub:
    return shim.images


@pytest.fixture
def start_shim(docker_api: docker.APIClient) -> Iterator[callable]:
    started: list[Shim] = []

    def start(args: list[str] | None = None, docker_endpoint: str = DOCKER_SOCKET, endpoint: str | None = None,
              env: dict[str, str] | None = None) -> Shim:
        process = Shim(args, docker_endpoint, endpoint, env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.stop() == 0:
            process.remove_files()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A passing run leaves no shim directories behind; a failing one keeps them all, logs and all."""
    if exitstatus == 0:
        for process in Shim.created:
            process.remove_files()


def pytest_report_header(config: pytest.Config) -> str:
    return f"dockershim-py tests; python {sys.version.split()[0]}; uid {os.getuid()}"

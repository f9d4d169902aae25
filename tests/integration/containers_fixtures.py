"""Fixtures of the container tests: a pod sandbox (made through the shim) to run containers in.

Not a conftest.py (see sandbox_fixtures.py). Test modules import these fixtures by name.
Everything a test makes is removed afterwards: the pod's containers, the pod, its log directory.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import grpc
import pytest

from conftest import BUSYBOX, Shim, wait_for
from proto_fields import with_fields
from dockershim_py.api import api_pb2 as api
from dockershim_py.api import api_pb2_grpc

CRI_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z) (stdout|stderr) ([FP]) (.*)$")


def rpc_error(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code(), caught.value.details()


class Pod:
    """One pod sandbox through the shim, in a namespace of its own, and the containers made in it."""

    def __init__(self, runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient,
                 linux: api.LinuxPodSandboxConfig | None = None) -> None:
        self.runtime = runtime
        self.docker = docker_api
        self.namespace = f"dspy-ctr-{secrets.token_hex(4)}"
        self.log_directory = Path(tempfile.mkdtemp(prefix="dspy-pod-logs-"))
        self.config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name="pod", namespace=self.namespace, uid=f"uid-{self.namespace}"),
            log_directory=str(self.log_directory),
            linux=linux or api.LinuxPodSandboxConfig(),
        )
        self.id = runtime.RunPodSandbox(api.RunPodSandboxRequest(config=self.config), timeout=60).pod_sandbox_id
        self._attempts: dict[str, int] = {}

    def container_config(self, name: str, command: list[str] | None = None, **fields: object) -> api.ContainerConfig:
        attempt = self._attempts.get(name, -1) + 1
        self._attempts[name] = attempt
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name, attempt=attempt),
            image=api.ImageSpec(image=BUSYBOX),
            command=command or ["sleep", "3600"],
            log_path=f"{name}/{attempt}.log",
        )
        return with_fields(config, **fields)

    def create(self, config: api.ContainerConfig, runtime: api_pb2_grpc.RuntimeServiceStub | None = None) -> str:
        request = api.CreateContainerRequest(pod_sandbox_id=self.id, config=config, sandbox_config=self.config)
        return (runtime or self.runtime).CreateContainer(request, timeout=60).container_id

    def start(self, container_id: str) -> None:
        self.runtime.StartContainer(api.StartContainerRequest(container_id=container_id), timeout=60)

    def run(self, name: str, command: list[str] | None = None, **fields: object) -> str:
        container_id = self.create(self.container_config(name, command, **fields))
        self.start(container_id)
        return container_id

    def status(self, container_id: str, verbose: bool = False,
               runtime: api_pb2_grpc.RuntimeServiceStub | None = None) -> api.ContainerStatus:
        request = api.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return (runtime or self.runtime).ContainerStatus(request, timeout=30).status

    def exited(self, container_id: str, timeout: float = 30.0,
               runtime: api_pb2_grpc.RuntimeServiceStub | None = None) -> api.ContainerStatus:
        status = wait_for(lambda: (s := self.status(container_id, runtime=runtime)).state == api.CONTAINER_EXITED and s,
                          timeout=timeout)
        assert status, f"container {container_id} did not exit in {timeout}s"
        return status

    def exec(self, container_id: str, cmd: list[str], timeout: int = 30) -> api.ExecSyncResponse:
        return self.runtime.ExecSync(api.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
                                     timeout=timeout + 30)

    def sh(self, container_id: str, script: str) -> str:
        """stdout of a shell script in the container, which must succeed."""
        reply = self.exec(container_id, ["sh", "-c", script])
        assert reply.exit_code == 0, f"{script!r} exited {reply.exit_code}: {reply.stderr.decode()}"
        return reply.stdout.decode()

    def log_file(self, container_id: str) -> Path:
        return Path(self.status(container_id).log_path)

    def log_lines(self, path: Path) -> list[tuple[str, str, str, str]]:
        """(time, stream, tag, text) of every line of a CRI log file; each must be well formed."""
        lines = []
        for line in path.read_bytes().decode().split("\n")[:-1]:
            match = CRI_LOG_LINE.match(line)
            assert match, f"not a CRI log line: {line!r}"
            lines.append((match.group(1), match.group(3), match.group(4), match.group(5)))
        return lines

    def remove(self, container_id: str) -> None:
        self.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=container_id), timeout=60)

    def close(self) -> None:
        for call, request in ((self.runtime.StopPodSandbox, api.StopPodSandboxRequest(pod_sandbox_id=self.id)),
                              (self.runtime.RemovePodSandbox, api.RemovePodSandboxRequest(pod_sandbox_id=self.id))):
            try:
                call(request, timeout=60)
            except grpc.RpcError:
                pass
        for entry in self.docker.containers(all=True, filters={"name": f"_{self.namespace}_"}):
            self.docker.remove_container(entry["Id"], force=True, v=True)
        shutil.rmtree(self.log_directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pod(shim: Shim, docker_api: docker.APIClient) -> Iterator[Pod]:
    """One pod for a test module (starting a sandbox per test would cost seconds each)."""
    made = Pod(shim.runtime, docker_api)
    yield made
    made.close()


@pytest.fixture
def fresh_pod(shim: Shim, docker_api: docker.APIClient) -> Iterator[Pod]:
    """A pod of the test's own, for tests that need an empty one or special sandbox settings."""
    made = Pod(shim.runtime, docker_api)
    yield made
    made.close()

"""Fixtures of the pod sandbox tests: sandboxes in a namespace of their own, cleaned up afterwards.

Not a conftest.py: a second `conftest` module in tests/integration would shadow tests/conftest.py
for the test modules that `from conftest import ...`. Test modules import these fixtures by name.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator

import docker
import pytest

from conftest import BUSYBOX
from dockershim_py.api import api_pb2 as api
from dockershim_py.api import api_pb2_grpc

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sandboxes:
    """Makes pod sandboxes through a shim, in a pod namespace unique to one test, and removes them."""

    def __init__(self, runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient) -> None:
        self.runtime = runtime
        self.docker = docker_api
        self.namespace = f"dspy-sbx-{secrets.token_hex(4)}"
        self._helpers: list[str] = []

    def config(self, name: str = "pod", attempt: int = 0, **fields: object) -> api.PodSandboxConfig:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=self.namespace, uid=f"uid-{name}", attempt=attempt),
            hostname=name,
            labels={"dspy-test": self.namespace, "pod": name},
            annotations={"dspy.example/note": f"sandbox {name}"},
        )
        for key, value in fields.items():
            if isinstance(value, list):
                getattr(config, key).extend(value)
            elif isinstance(value, dict):
                getattr(config, key).update(value)
            elif isinstance(value, str):
                setattr(config, key, value)
            else:
                getattr(config, key).CopyFrom(value)
        return config

    def run(self, config: api.PodSandboxConfig | None = None, handler: str = "",
            runtime: api_pb2_grpc.RuntimeServiceStub | None = None) -> str:
        request = api.RunPodSandboxRequest(config=config or self.config(), runtime_handler=handler)
        return (runtime or self.runtime).RunPodSandbox(request, timeout=60).pod_sandbox_id

    def status(self, sandbox_id: str, verbose: bool = False) -> api.PodSandboxStatusResponse:
        return self.runtime.PodSandboxStatus(
            api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose), timeout=30
        )

    def listed(self, runtime: api_pb2_grpc.RuntimeServiceStub | None = None) -> list[api.PodSandbox]:
        """This test's sandboxes, plus checkpoint-only ones of this namespace."""
        items = (runtime or self.runtime).ListPodSandbox(api.ListPodSandboxRequest(), timeout=30).items
        return [item for item in items if item.metadata.namespace == self.namespace]

    def listed_soon(self, expected: set[str], within_seconds: float = 2.0) -> dict[str, api.PodSandbox]:
        """This test's sandboxes by ID, once they are `expected` (AssertionError after `within_seconds`).

        For containers made directly in Docker: the shim learns of them from Docker's events.
        """
        deadline = time.monotonic() + within_seconds
        while True:
            listed = {item.id: item for item in self.listed()}
            if set(listed) == expected or time.monotonic() > deadline:
                assert set(listed) == expected
                return listed
            time.sleep(0.05)

    def join(self, sandbox_id: str, command: str) -> str:
        """A busybox container in the sandbox's network and IPC namespaces (CreateContainer's stand-in)."""
        container = self.docker.create_container(
            BUSYBOX, ["sh", "-c", command],
            name=f"dspy-sbx-helper-{secrets.token_hex(4)}",
            host_config=self.docker.create_host_config(
                network_mode=f"container:{sandbox_id}", ipc_mode=f"container:{sandbox_id}"
            ),
        )["Id"]
        self._helpers.append(container)
        self.docker.start(container)
        return container

    def output_of(self, sandbox_id: str, command: str) -> str:
        container = self.join(sandbox_id, command)
        self.docker.wait(container, timeout=30)
        return self.docker.logs(container).decode()

    def docker_containers(self) -> list[dict]:
        """Every Docker container, running or not, named for this test's pod namespace."""
        return [
            entry for entry in self.docker.containers(all=True)
            if any(f"_{self.namespace}_" in name for name in entry.get("Names") or [])
        ]

    def cleanup(self) -> None:
        for container in self._helpers + [entry["Id"] for entry in self.docker_containers()]:
            try:
                self.docker.remove_container(container, force=True, v=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture
def sandboxes(runtime: api_pb2_grpc.RuntimeServiceStub, docker_api: docker.APIClient) -> Iterator[Sandboxes]:
    made = Sandboxes(runtime, docker_api)
    yield made
    made.cleanup()

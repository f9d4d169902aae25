"""No lock that a call answered on the connection's thread takes is ever held while something
waits (a Docker request, a sleep, a subprocess, a file opened on a disk): if one were, a
ContainerStatus tried inline could wait behind it and hold up every other call of its connection.

The shim runs with the lock audit of tests/hooks/lock_audit loaded, while a poller asks the
inline calls over and over and the test churns pods through the shim and behind its back, and
restarts dockerd (a private one) so that the index falls back to Docker and resyncs.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

import docker
import grpc

from conftest import BUSYBOX, PAUSE, wait_for
from private_dockerd import private_dockerd  # noqa: F401  (fixture)
from dockershim_py.api import api_pb2 as api

HOOK_DIRECTORY = Path(__file__).resolve().parents[1] / "hooks" / "lock_audit"
HOST_NETWORK = api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
    namespace_options=api.NamespaceOption(network=api.NODE)))  # the private daemon has no bridge
UNKNOWN_ID = "0" * 64


class Poller:
    """Asks every inline call, for every sandbox and container made so far, until stopped."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.sandboxes: list[str] = []
        self.containers: list[str] = []
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            calls = [(self.runtime.ListPodSandbox, api.ListPodSandboxRequest()),
                     (self.runtime.ListContainers, api.ListContainersRequest()),
                     (self.runtime.ContainerStatus, api.ContainerStatusRequest(container_id=UNKNOWN_ID))]
            calls += [(self.runtime.PodSandboxStatus, api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
                      for sandbox_id in list(self.sandboxes)]
            calls += [(self.runtime.ContainerStatus, api.ContainerStatusRequest(container_id=container_id))
                      for container_id in list(self.containers)]
            for call, request in calls:
                try:
                    call(request, timeout=10)
                    self.outcomes["answered"] += 1
                except grpc.RpcError as exc:
                    self.outcomes[exc.code().name] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def make_pod(runtime, daemon: docker.APIClient, poller: Poller, number: int, log_directory: Path) -> dict[str, str]:
    """A pod of a talker that exits and a sleeper killed behind the shim's back, with stats and an exec."""
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=f"locks-{number}", namespace="dspy-locks", uid=f"uid-locks-{number}"),
        log_directory=str(log_directory), linux=HOST_NETWORK)
    sandbox_id = runtime.RunPodSandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
    poller.sandboxes.append(sandbox_id)
    made = {"sandbox": sandbox_id}
    for name, command in (("talker", ["sh", "-c", "echo out; echo err >&2"]), ("sleeper", ["sleep", "3600"])):
        made[name] = runtime.CreateContainer(api.CreateContainerRequest(
            pod_sandbox_id=sandbox_id, sandbox_config=config,
            config=api.ContainerConfig(metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=BUSYBOX),
                                       command=command, log_path=f"{name}.log")), timeout=60).container_id
        poller.containers.append(made[name])
        runtime.StartContainer(api.StartContainerRequest(container_id=made[name]), timeout=60)
    assert runtime.ExecSync(api.ExecSyncRequest(container_id=made["sleeper"], cmd=["true"], timeout=10),
                            timeout=40).exit_code == 0
    runtime.ListContainerStats(api.ListContainerStatsRequest(), timeout=30)
    runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest(), timeout=30)
    runtime.ContainerStats(api.ContainerStatsRequest(container_id=made["sleeper"]), timeout=30)

    def state(container_id: str) -> int:
        return runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id), timeout=10).status.state

    assert wait_for(lambda: state(made["talker"]) == api.CONTAINER_EXITED)
    daemon.kill(made["sleeper"])
    assert wait_for(lambda: state(made["sleeper"]) == api.CONTAINER_EXITED)
    return made


def test_no_lock_taken_inline_is_held_while_anything_waits(start_shim, private_dockerd, docker_api, tmp_path) -> None:
    daemon = docker.APIClient(base_url=private_dockerd.endpoint, version="1.41", timeout=120)
    for image in (PAUSE, BUSYBOX):  # the private daemon cannot reach the registries: load them
        daemon.load_image(b"".join(docker_api.get_image(image)))
    report = tmp_path / "locks.json"
    shim = start_shim(docker_endpoint=private_dockerd.endpoint,
                      env={"PYTHONPATH": str(HOOK_DIRECTORY), "DSPY_LOCK_AUDIT": str(report)})
    runtime = shim.runtime
    poller = Poller(runtime)
    try:
        first = make_pod(runtime, daemon, poller, 0, tmp_path / "logs-0")
        private_dockerd.stop()  # the event stream breaks: the index falls back to Docker, then resyncs
        time.sleep(1)
        private_dockerd.start()
        assert wait_for(lambda: poller.outcomes["answered"] and _lists(runtime), timeout=30)
        runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=first["sandbox"]), timeout=60)
        runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=first["sandbox"]), timeout=60)
        second = make_pod(runtime, daemon, poller, 1, tmp_path / "logs-1")
        runtime.RemoveContainer(api.RemoveContainerRequest(container_id=second["talker"]), timeout=60)
        daemon.remove_container(second["sleeper"], force=True)  # behind the shim's back
        runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=second["sandbox"]), timeout=60)
        runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=second["sandbox"]), timeout=60)
        time.sleep(0.5)  # the poller asks after what was removed: NOT_FOUND, deferred to a worker
    finally:
        poller.stop()
        exit_code = shim.stop()
    assert exit_code == 0
    assert daemon.containers(all=True) == []
    audit = json.loads(report.read_text())
    assert poller.outcomes["answered"] > 100 and poller.outcomes["NOT_FOUND"] > 0, poller.outcomes
    assert audit["waits_seen"].get("may_wait", 0) > 50, audit["waits_seen"]  # the Docker requests were seen
    assert audit["waits_seen"].get("file", 0) > 10, audit["waits_seen"]  # log copiers and checkpoints opened
    taken_inline = {site for site, seen in audit["sites"].items() if seen["taken_inline"]}
    assert any(site.startswith("events.py:") for site in taken_inline), taken_inline  # the index's lock
    assert audit["violations"] == [], json.dumps(audit["violations"], indent=1)


def _lists(runtime) -> bool:
    try:
        runtime.ListContainers(api.ListContainersRequest(), timeout=10)
        return True
    except grpc.RpcError:
        return False

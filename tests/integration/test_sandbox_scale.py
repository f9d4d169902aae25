"""Many sandboxes at once, a shim that crashes in the middle, and the pause image pulled on demand."""

from __future__ import annotations

import base64
import json
import signal
from concurrent import futures

import docker
import grpc
import pytest

from conftest import AUTH_PASSWORD, AUTH_REGISTRY, AUTH_USER, PRIVATE_IMAGE, host_has_capability, wait_for
from dockershim_py.api import api_pb2 as api
from sandbox_fixtures import Sandboxes, sandboxes  # noqa: F401 (fixtures)

OOM_WARNING = "cannot lower OOM scores"


def test_twenty_concurrent_sandboxes(sandboxes: Sandboxes, shim) -> None:
    configs = [sandboxes.config(f"pod{index}") for index in range(20)]
    with futures.ThreadPoolExecutor(max_workers=20) as pool:
        ids = list(pool.map(sandboxes.run, configs))
    assert len(set(ids)) == 20

    request = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(
        label_selector={"dspy-test": sandboxes.namespace},
        state=api.PodSandboxStateValue(state=api.SANDBOX_READY),
    ))
    listed = sandboxes.runtime.ListPodSandbox(request, timeout=10).items
    assert sorted(item.id for item in listed) == sorted(ids)
    assert sorted(item.metadata.name for item in listed) == sorted(f"pod{index}" for index in range(20))

    # 20 IDs over 16 hex digits: some first digit is shared, and as a prefix it is ambiguous.
    firsts = [sandbox_id[0] for sandbox_id in ids]
    shared = next(first for first in firsts if firsts.count(first) > 1)
    with pytest.raises(grpc.RpcError) as caught:
        sandboxes.status(shared)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "ambiguous" in caught.value.details()

    def remove(sandbox_id: str) -> None:
        sandboxes.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)

    with futures.ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(remove, ids))
    assert sandboxes.listed() == []
    assert sandboxes.docker_containers() == []
    assert not {path.name for path in (shim.root / "sandbox").iterdir()} & set(ids)


def test_shim_crash_in_the_middle_loses_no_sandbox(sandboxes: Sandboxes, start_shim, docker_api) -> None:
    shim = start_shim()
    assert shim.log().count(OOM_WARNING) == (0 if host_has_capability(24) else 1)
    ready = sandboxes.run(sandboxes.config("ready"), runtime=shim.runtime)
    stopped = sandboxes.run(sandboxes.config("stopped"), runtime=shim.runtime)
    shim.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=stopped), timeout=30)
    orphan = sandboxes.run(sandboxes.config("orphan"), runtime=shim.runtime)
    docker_api.remove_container(orphan, force=True)

    # Kill the shim while sandboxes are being made: whatever those calls got done stays visible.
    with futures.ThreadPoolExecutor(max_workers=6) as pool:
        attempts = [pool.submit(sandboxes.run, sandboxes.config(f"busy{index}"), "", shim.runtime)
                    for index in range(6)]
        wait_for(lambda: sandboxes.docker_containers()[3:], timeout=10, interval=0.01)
        shim.stop(sig=signal.SIGKILL)
        outcomes = [attempt.exception() for attempt in attempts]
    print("calls cut short by the crash:", sum(isinstance(outcome, grpc.RpcError) for outcome in outcomes))

    shim.start()
    listed = {item.id: item for item in sandboxes.listed(runtime=shim.runtime)}
    assert listed[ready].state == api.SANDBOX_READY
    assert listed[stopped].state == api.SANDBOX_NOTREADY
    assert listed[orphan].state == api.SANDBOX_NOTREADY  # from its checkpoint, which survived the crash
    assert listed[orphan].metadata.name == "orphan"
    in_docker = {entry["Id"] for entry in sandboxes.docker_containers()}
    assert in_docker <= set(listed), "a container the crash left behind is invisible to ListPodSandbox"

    # The kubelet's clean-up of everything listed leaves nothing behind.
    for sandbox_id in listed:
        shim.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=30)
        shim.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=30)
    assert sandboxes.listed(runtime=shim.runtime) == []
    assert sandboxes.docker_containers() == []
    assert list((shim.root / "sandbox").iterdir()) == []


@pytest.fixture
def private_image_absent(docker_api: docker.APIClient):
    def remove() -> None:
        try:
            docker_api.remove_image(PRIVATE_IMAGE)
        except docker.errors.NotFound:
            pass

    remove()
    yield
    remove()


def test_sandbox_image_is_pulled_with_docker_config_credentials(
    sandboxes: Sandboxes, start_shim, docker_api, private_image_absent, tmp_path
) -> None:
    auth = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps({"auths": {AUTH_REGISTRY: {"auth": auth}}}))
    shim = start_shim(["--pod-infra-container-image", PRIVATE_IMAGE, "--docker-config", str(config_json)])
    sandbox_id = sandboxes.run(runtime=shim.runtime)
    assert docker_api.inspect_container(sandbox_id)["Config"]["Image"] == PRIVATE_IMAGE
    shim.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=30)


def test_sandbox_image_pull_failure_is_reported(sandboxes: Sandboxes, start_shim, private_image_absent) -> None:
    shim = start_shim(["--pod-infra-container-image", PRIVATE_IMAGE, "--docker-config", "/nonexistent/config.json"])
    with pytest.raises(grpc.RpcError) as caught:
        sandboxes.run(runtime=shim.runtime)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert sandboxes.docker_containers() == []

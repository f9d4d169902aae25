"""A node switching from dockershim or cri-dockerd: their pods stay visible and manageable.

The containers are made directly through docker-py, with exactly the names and labels those
shims (and the kubelet's labels and annotations) wrote.
"""

from __future__ import annotations

import json
import secrets

import docker
import pytest

from conftest import BUSYBOX, PAUSE, wait_for
from dockershim_py.api import api_pb2 as api
from sandbox_fixtures import Sandboxes, sandboxes  # noqa: F401 (fixtures)


def _kubelet_labels(sandboxes: Sandboxes, pod: str, uid: str) -> dict[str, str]:
    return {
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": sandboxes.namespace,
        "io.kubernetes.pod.uid": uid,
        "dspy-test": sandboxes.namespace,
    }


def _legacy_sandbox(docker_api: docker.APIClient, sandboxes: Sandboxes, name: str, pod: str, uid: str,
                    running: bool) -> str:
    """A pause container as dockershim's / cri-dockerd's RunPodSandbox left it."""
    labels = {
        **_kubelet_labels(sandboxes, pod, uid),
        "annotation.kubernetes.io/config.seen": "2024-05-01T10:20:30.123456789Z",
        "annotation.kubernetes.io/config.source": "api",
        "io.kubernetes.container.name": "POD",
        "io.kubernetes.docker.type": "podsandbox",
    }
    sandbox_id = docker_api.create_container(
        PAUSE, name=name, hostname=pod, labels=labels,
        host_config=docker_api.create_host_config(
            ipc_mode="shareable", cpu_shares=2, security_opt=["no-new-privileges"], network_mode="default"
        ),
    )["Id"]
    if running:
        docker_api.start(sandbox_id)
    return sandbox_id


def _legacy_container(docker_api: docker.APIClient, sandboxes: Sandboxes, sandbox_id: str, pod: str,
                      uid: str) -> str:
    """An app container as dockershim's / cri-dockerd's CreateContainer and StartContainer left it."""
    labels = {
        **_kubelet_labels(sandboxes, pod, uid),
        "annotation.io.kubernetes.container.hash": "4a1e9b3c",
        "annotation.io.kubernetes.container.restartCount": "0",
        "annotation.io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
        "io.kubernetes.container.logpath": f"/var/log/pods/{sandboxes.namespace}_{pod}_{uid}/app/0.log",
        "io.kubernetes.container.name": "app",
        "io.kubernetes.docker.type": "container",
        "io.kubernetes.sandbox.id": sandbox_id,
    }
    container_id = docker_api.create_container(
        PAUSE, name=f"k8s_app_{pod}_{sandboxes.namespace}_{uid}_0", labels=labels,
        host_config=docker_api.create_host_config(
            network_mode=f"container:{sandbox_id}", ipc_mode=f"container:{sandbox_id}"
        ),
    )["Id"]
    docker_api.start(container_id)
    return container_id


def test_legacy_pods_are_listed_stopped_and_removed(sandboxes: Sandboxes, docker_api: docker.APIClient) -> None:
    ns = sandboxes.namespace
    live = _legacy_sandbox(docker_api, sandboxes, f"k8s_POD_web_{ns}_uid-web_1", "web", "uid-web", running=True)
    app = _legacy_container(docker_api, sandboxes, live, "web", "uid-web")
    # cri-dockerd's name after a conflict: a random 7th part. Exited, as after a node reboot.
    dead = _legacy_sandbox(docker_api, sandboxes, f"k8s_POD_db_{ns}_uid-db_0_0badcafe", "db", "uid-db",
                           running=False)

    # Containers made behind the shim's back reach its index by Docker's events, in milliseconds.
    listed = sandboxes.listed_soon({live, dead})
    assert listed[live].state == api.SANDBOX_READY
    assert listed[live].metadata == api.PodSandboxMetadata(name="web", namespace=ns, uid="uid-web", attempt=1)
    # Docker adds the image's own labels, as it did under dockershim; the internal ones stay hidden.
    assert _kubelet_labels(sandboxes, "web", "uid-web").items() <= dict(listed[live].labels).items()
    assert not {"io.kubernetes.docker.type", "io.kubernetes.container.name"} & set(listed[live].labels)
    assert dict(listed[live].annotations) == {
        "kubernetes.io/config.seen": "2024-05-01T10:20:30.123456789Z", "kubernetes.io/config.source": "api"
    }
    assert listed[dead].state == api.SANDBOX_NOTREADY
    assert listed[dead].metadata == api.PodSandboxMetadata(name="db", namespace=ns, uid="uid-db", attempt=0)

    # The kubelet's per-pod query.
    request = api.ListPodSandboxRequest(
        filter=api.PodSandboxFilter(label_selector={"io.kubernetes.pod.uid": "uid-web", "dspy-test": ns})
    )
    assert [item.id for item in sandboxes.runtime.ListPodSandbox(request, timeout=10).items] == [live]

    status = sandboxes.status(live).status
    assert status.state == api.SANDBOX_READY
    assert status.network.ip == docker_api.inspect_container(live)["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert status.metadata.attempt == 1

    sandboxes.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=live), timeout=60)
    assert not docker_api.inspect_container(app)["State"]["Running"]
    assert not docker_api.inspect_container(live)["State"]["Running"]
    for sandbox_id in (live, dead):
        sandboxes.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    for container_id in (live, app, dead):
        with pytest.raises(docker.errors.NotFound):
            docker_api.inspect_container(container_id)
    assert sandboxes.listed() == []


def test_checkpoints_dockershim_and_cri_dockerd_wrote_are_kept(start_shim, tmp_path, docker_api: docker.APIClient
                                                              ) -> None:
    """A root directory taken over from dockershim or cri-dockerd: their checksums are of a Go
    rendering of the data, and a sandbox whose container is gone still lists NOTREADY."""
    root = tmp_path / "root"
    (root / "sandbox").mkdir(parents=True)
    namespace = f"dspy-ckpt-{secrets.token_hex(3)}"
    written = {  # data and checksum as dockershim (kubelet 1.21) and cri-dockerd wrote them
        secrets.token_hex(32): ("hostnet", {"host_network": True}, 996107268),
        secrets.token_hex(32): ("web", {"port_mappings": [{"protocol": "tcp", "container_port": 80,
                                                            "host_port": 30080}]}, 157299536),
    }
    for sandbox_id, (name, data, checksum) in written.items():
        (root / "sandbox" / sandbox_id).write_text(json.dumps(
            {"version": "v1", "name": name, "namespace": namespace, "data": data, "checksum": checksum}))
    shim = start_shim(["--root-directory", str(root)])
    listed = {item.id: item for item in shim.runtime.ListPodSandbox(api.ListPodSandboxRequest(), timeout=10).items
              if item.metadata.namespace == namespace}
    assert {sandbox_id: (item.metadata.name, item.state) for sandbox_id, item in listed.items()} == {
        sandbox_id: (name, api.SANDBOX_NOTREADY) for sandbox_id, (name, _, _) in written.items()}
    for sandbox_id in written:
        shim.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=30)
    assert list((root / "sandbox").iterdir()) == []


def test_a_legacy_containers_log_link_is_rotated_by_a_reopen(sandboxes: Sandboxes, docker_api: docker.APIClient,
                                                              tmp_path) -> None:
    """dockershim and cri-dockerd linked the log path to Docker's JSON file; the kubelet renames
    it at rotation and asks for a new file. ReopenContainerLog failed (no copier), so the kubelet
    renamed the link back and tried again every 10 s while Docker's file grew."""
    ns = sandboxes.namespace
    pod = _legacy_sandbox(docker_api, sandboxes, f"k8s_POD_web_{ns}_uid-web_0", "web", "uid-web", running=True)
    log_path = tmp_path / "pods" / "app" / "0.log"
    log_path.parent.mkdir(parents=True)
    labels = {**_kubelet_labels(sandboxes, "web", "uid-web"), "io.kubernetes.container.logpath": str(log_path),
              "io.kubernetes.container.name": "app", "io.kubernetes.docker.type": "container",
              "io.kubernetes.sandbox.id": pod}
    app = docker_api.create_container(
        BUSYBOX, ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"],
        name=f"k8s_app_web_{ns}_uid-web_0", labels=labels,
        host_config=docker_api.create_host_config(network_mode=f"container:{pod}"))["Id"]
    docker_api.start(app)
    log_path.symlink_to(docker_api.inspect_container(app)["LogPath"])  # as their StartContainer did
    sandboxes.listed_soon({pod})
    rotated = log_path.with_name("0.log.20261208-020000")
    log_path.rename(rotated)  # the kubelet's rotation
    sandboxes.runtime.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=app), timeout=10)
    assert wait_for(lambda: log_path.exists() and len(log_path.read_text().splitlines()) >= 3, timeout=10)
    lines = log_path.read_text().splitlines()
    assert all(line.split(" ", 3)[1:3] == ["stdout", "F"] for line in lines), lines  # CRI lines
    first_copied = int(lines[0].rsplit(" ", 1)[1])
    assert first_copied > 1 and f'"line {first_copied - 1}\\n"' in rotated.read_text()  # none lost or repeated
    sandboxes.runtime.ReopenContainerLog(api.ReopenContainerLogRequest(container_id=app), timeout=10)  # again
    sandboxes.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    sandboxes.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)

"""The shim's own /metrics endpoint (--metrics-address), scraped over loopback while real calls
go through it: CRI calls by method and code, Docker requests, the index, streaming sessions."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable, Iterator

import docker
import grpc
import pytest

from conftest import Shim, wait_for
from containers_fixtures import Pod
from dockershim_py.api import api_pb2 as api
from streaming_client import WsExec


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_shim(docker_api: docker.APIClient) -> Iterator[tuple[Shim, str]]:
    port = free_port()
    shim = Shim(["--metrics-address", f"127.0.0.1:{port}"]).start()
    yield shim, f"http://127.0.0.1:{port}/metrics"
    assert shim.stop() == 0, shim.log()[-3000:]
    shim.remove_files()


def scrape(url: str) -> Callable[[str, dict[str, str]], float | None]:
    """The value of the series named with exactly these labels in one scrape; None when absent."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    series: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match and not line.startswith("#"):
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            series[(match.group(1), labels)] = float(match.group(3))

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return series.get((name, frozenset((labels or {}).items())))

    return value


def grpc_labels(method: str, code: str | None = None, service: str = "runtime.v1.RuntimeService") -> dict[str, str]:
    labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": method}
    return labels if code is None else {**labels, "grpc_code": code}


def test_cri_calls_by_method_and_code(metrics_shim: tuple[Shim, str]) -> None:
    shim, url = metrics_shim
    before = scrape(url)
    for _ in range(3):
        shim.runtime.Version(api.VersionRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as missing:
        shim.runtime.ContainerStatus(api.ContainerStatusRequest(container_id="0" * 64), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError):
        shim.runtime.UpdatePodSandboxResources(api.UpdatePodSandboxResourcesRequest(pod_sandbox_id="x"), timeout=10)
    after = scrape(url)

    def grew(name: str, labels: dict[str, str]) -> float:
        return (after(name, labels) or 0) - (before(name, labels) or 0)

    assert grew("grpc_server_handled_total", grpc_labels("Version", "OK")) == 3
    assert grew("grpc_server_started_total", grpc_labels("Version")) == 3
    assert grew("grpc_server_handled_total", grpc_labels("ContainerStatus", "NotFound")) == 1
    assert grew("grpc_server_handled_total", grpc_labels("UpdatePodSandboxResources", "Unimplemented")) == 1
    assert grew("grpc_server_handling_seconds_count", grpc_labels("Version")) == 3
    assert after("grpc_server_handling_seconds_bucket", {**grpc_labels("Version"), "le": "+Inf"}) == after(
        "grpc_server_handling_seconds_count", grpc_labels("Version"))
    # the v1alpha2 service is counted apart
    shim.channel.unary_unary("/runtime.v1alpha2.RuntimeService/Version")(b"", timeout=10)
    assert scrape(url)("grpc_server_handled_total",
                       grpc_labels("Version", "OK", service="runtime.v1alpha2.RuntimeService")) == 1


def test_docker_requests_the_index_and_the_process(metrics_shim: tuple[Shim, str],
                                                   docker_api: docker.APIClient) -> None:
    shim, url = metrics_shim
    value = scrape(url)
    assert value("dockershim_py_index_fresh") == 1
    assert value("dockershim_py_index_resyncs_total", {"reason": "start"}) == 1
    assert (value("dockershim_py_docker_requests_total", {"operation": "list_containers", "code": "OK"}) or 0) >= 1
    listed = value("dockershim_py_docker_requests_total", {"operation": "list_containers", "code": "OK"})
    for _ in range(10):  # answered from the index, not by Docker
        shim.runtime.ListContainers(api.ListContainersRequest(), timeout=10)
    value = scrape(url)
    # (an event about some other container on the node may still make the index re-read it)
    assert value("dockershim_py_docker_requests_total", {"operation": "list_containers", "code": "OK"}) < listed + 3
    status = shim.images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image="dspy/none:0")), timeout=10)
    assert not status.HasField("image")  # no such image: Docker said 404, the CRI answer is empty
    value = scrape(url)
    assert (value("dockershim_py_docker_requests_total", {"operation": "inspect_image", "code": "NotFound"})
            or 0) >= 1
    assert (value("dockershim_py_docker_request_duration_seconds_count", {"operation": "inspect_image"}) or 0) >= 1
    assert (value("process_resident_memory_bytes") or 0) > 10 << 20
    assert value("process_cpu_seconds_total") is not None


def test_inline_calls_answered_on_the_connections_thread_or_deferred(metrics_shim: tuple[Shim, str],
                                                                      docker_api: docker.APIClient) -> None:
    """A status the index holds is answered where it was read; one that needs Docker goes to a worker
    first, and the gRPC series count it once either way."""
    shim, url = metrics_shim
    pod = Pod(shim.runtime, docker_api)

    def inline(outcome: str, method: str = "ContainerStatus") -> float:
        return scrape(url)("dockershim_py_grpc_inline_attempts_total", {
            "grpc_service": "runtime.v1.RuntimeService", "grpc_method": method, "outcome": outcome}) or 0

    def status() -> None:
        shim.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id), timeout=10)

    def answered_inline(method: str, call: Callable[[], object]) -> bool:
        before = inline("answered", method)
        call()
        return inline("answered", method) == before + 1

    try:
        container_id = pod.run("shell", ["sleep", "3600"])
        assert wait_for(lambda: answered_inline("ContainerStatus", status))  # once the index has settled the start
        answered, deferred = inline("answered"), inline("deferred")
        started = scrape(url)("grpc_server_started_total", grpc_labels("ContainerStatus")) or 0
        for _ in range(5):
            status()
        assert (inline("answered"), inline("deferred")) == (answered + 5, deferred)

        with pytest.raises(grpc.RpcError) as missing:  # not in the index: only Docker can say
            shim.runtime.ContainerStatus(api.ContainerStatusRequest(container_id="f" * 64), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert (inline("answered"), inline("deferred")) == (answered + 5, deferred + 1)
        assert scrape(url)("grpc_server_started_total", grpc_labels("ContainerStatus")) == started + 6

        # (an event about any container marks it for a re-read, which the next list makes by Docker)
        assert wait_for(lambda: answered_inline(
            "ListContainers", lambda: shim.runtime.ListContainers(api.ListContainersRequest(), timeout=10)))
        shim.runtime.Version(api.VersionRequest(), timeout=10)  # a worker's call, never tried inline
        assert inline("answered", "Version") == inline("deferred", "Version") == 0
    finally:
        pod.close()


def test_streaming_sessions(metrics_shim: tuple[Shim, str], docker_api: docker.APIClient) -> None:
    shim, url = metrics_shim
    pod = Pod(shim.runtime, docker_api)
    try:
        container_id = pod.run("shell", ["sleep", "3600"])
        before = scrape(url)("dockershim_py_streaming_sessions_started_total",
                             {"kind": "exec", "transport": "websocket"}) or 0
        request = api.ExecRequest(container_id=container_id, cmd=["sh", "-c", "read line; echo got:$line"],
                                  stdin=True, stdout=True, stderr=True)
        session = WsExec(shim.runtime.Exec(request, timeout=10).url, "v5.channel.k8s.io", stdin=True)
        assert wait_for(lambda: scrape(url)("dockershim_py_streaming_sessions", {"kind": "exec"}) == 1)
        session.write(b"hi\n")
        assert session.finish().stdout == b"got:hi\n"
        assert wait_for(lambda: scrape(url)("dockershim_py_streaming_sessions", {"kind": "exec"}) == 0)
        assert scrape(url)("dockershim_py_streaming_sessions_started_total",
                           {"kind": "exec", "transport": "websocket"}) == before + 1
    finally:
        pod.close()


def test_a_taken_address_stops_the_start(metrics_shim: tuple[Shim, str]) -> None:
    _, url = metrics_shim
    taken = url.split("/")[2]
    shim = Shim(["--metrics-address", taken])
    with pytest.raises(RuntimeError, match="cannot start"):
        shim.start()
    shim.remove_files()


def test_time_calls_waited_for_a_worker(docker_api: docker.APIClient) -> None:
    """With one worker for long calls, the second of two ExecSyncs waits out the first one's second."""
    port = free_port()
    shim = Shim(["--metrics-address", f"127.0.0.1:{port}", "--grpc-workers", "1"]).start()
    url = f"http://127.0.0.1:{port}/metrics"
    pod = Pod(shim.runtime, docker_api)
    try:
        container_id = pod.run("shell", ["sleep", "3600"])

        def queued(suffix: str, labels: dict[str, str]) -> float:
            return scrape(url)(f"dockershim_py_grpc_queued_seconds_{suffix}", {"pool": "long", **labels}) or 0

        count, quick = queued("count", {}), queued("bucket", {"le": "0.5"})
        request = api.ExecSyncRequest(container_id=container_id, cmd=["sleep", "1"], timeout=10)
        calls = [shim.runtime.ExecSync.future(request, timeout=30) for _ in range(2)]
        assert [call.result().exit_code for call in calls] == [0, 0]
        assert queued("count", {}) == count + 2
        assert queued("bucket", {"le": "0.5"}) == quick + 1  # the other waited about a second
        shim.runtime.Version(api.VersionRequest(), timeout=10)
        assert scrape(url)("dockershim_py_grpc_queued_seconds_count", {"pool": "calls"})
    finally:
        pod.close()
        assert shim.stop() == 0, shim.log()[-3000:]
        shim.remove_files()

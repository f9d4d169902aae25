"""The gRPC server itself: socket handling, limits, API versions, shutdown."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from conftest import Shim, wait_for
from dockershim_py.api import api_pb2 as api


class DelayingDockerProxy:
    """Forwards a unix socket to dockerd, holding each new connection back for `delay` seconds."""

    def __init__(self, path: Path, delay: float, target: str = "/var/run/docker.sock") -> None:
        self.path, self.delay, self.target = path, delay, target
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.target)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@pytest.fixture
def slow_docker(tmp_path: Path) -> Iterator[str]:
    proxy = DelayingDockerProxy(tmp_path / "slow-docker.sock", delay=1.5)
    yield f"unix://{proxy.path}"
    proxy.close()


def test_socket_is_created_with_mode_0660(shim: Shim) -> None:
    assert stat.S_ISSOCK(os.stat(shim.socket).st_mode)
    assert stat.S_IMODE(os.stat(shim.socket).st_mode) == 0o660


def test_stale_socket_file_is_replaced(docker_api: object) -> None:
    process = Shim()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(process.socket))
    stale.close()
    assert process.socket.exists()
    try:
        process.start()
        assert process.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "docker"
    finally:
        assert process.stop() == 0
    assert not process.socket.exists()


def test_refuses_to_take_over_a_live_socket(shim: Shim) -> None:
    intruder = Shim(endpoint=shim.endpoint)
    with pytest.raises(RuntimeError, match="another server is already listening"):
        intruder.start(wait=10)
    assert intruder.process.returncode == 2
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "docker"


def test_sigterm_lets_in_flight_calls_finish_and_removes_the_socket(slow_docker: str) -> None:
    process = Shim(docker_endpoint=slow_docker).start()
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["reply"] = process.runtime.Version(api.VersionRequest(), timeout=30)
        except grpc.RpcError as exc:
            result["error"] = exc

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the call now waits on the slow Docker connection
    process.process.send_signal(signal.SIGTERM)
    caller.join(timeout=30)
    assert "error" not in result, result.get("error")
    assert result["reply"].runtime_name == "docker"
    assert process.process.wait(timeout=30) == 0
    assert not process.socket.exists()
    assert "shutting down" in process.log()


def test_the_shutdown_grace_holds_even_while_a_docker_call_hangs(tmp_path: Path) -> None:
    """The process used to wait, past the grace, for every worker thread a Docker call still held."""
    proxy = DelayingDockerProxy(tmp_path / "hung-docker.sock", delay=40)
    process = Shim(["--shutdown-grace-period", "1s"], docker_endpoint=f"unix://{proxy.path}").start()
    try:
        hung = process.images.ListImages.future(api.ListImagesRequest(), timeout=60)  # (Version answers anyway)
        assert wait_for(lambda: "Docker is not reachable yet" in process.log(), timeout=15)  # its start is done
        process.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.process.wait(timeout=20) == 0
        assert time.monotonic() - started < 8  # the grace, and a moment for the rest
        assert hung.exception(timeout=10) is not None
    finally:
        proxy.close()
        process.stop()


def test_the_shutdown_grace_holds_while_a_stop_waits_out_a_long_timeout(docker_api) -> None:
    """A StopContainer of a container that ignores SIGTERM holds its worker for its whole timeout;
    the process used to wait for it at exit, past the grace (73 s in the audit's run)."""
    from containers_fixtures import Pod
    process = Shim(["--shutdown-grace-period", "1s"]).start()
    pod = Pod(process.runtime, docker_api)
    try:
        container_id = pod.run("stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
        stopping = process.runtime.StopContainer.future(
            api.StopContainerRequest(container_id=container_id, timeout=60), timeout=90)
        time.sleep(1)  # Docker now waits out the 60 s
        process.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.process.wait(timeout=30) == 0
        assert time.monotonic() - started < 8
        assert stopping.exception(timeout=10) is not None
    finally:
        process.stop()
        restarted = Shim(["--root-directory", str(process.root)]).start()
        pod.runtime = restarted.runtime
        pod.close()
        restarted.stop()


def test_unimplemented_rpcs_answer_unimplemented_with_a_reason(runtime) -> None:
    with pytest.raises(grpc.RpcError) as unary:
        runtime.CheckpointContainer(api.CheckpointContainerRequest(container_id="x"), timeout=10)
    assert unary.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer is not implemented by dockershim-py" in unary.value.details()
    with pytest.raises(grpc.RpcError) as resources:
        runtime.UpdatePodSandboxResources(api.UpdatePodSandboxResourcesRequest(pod_sandbox_id="x"), timeout=10)
    assert resources.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "pod-level cgroup" in resources.value.details()


def test_unknown_service_is_unimplemented(shim: Shim) -> None:
    call = shim.channel.unary_unary("/runtime.v9.RuntimeService/Version")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_messages_up_to_16_mib_are_accepted(shim: Shim) -> None:
    big = api.ImageStatusRequest(image=api.ImageSpec(image="no-such-image:1", annotations={"pad": "x" * (6 << 20)}))
    assert not shim.images.ImageStatus(big, timeout=30).HasField("image")
    too_big = api.ImageStatusRequest(image=api.ImageSpec(image="x", annotations={"pad": "x" * (17 << 20)}))
    with pytest.raises(grpc.RpcError) as caught:
        shim.images.ImageStatus(too_big, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _alpha(shim: Shim, service: str, method: str, request, response_type):
    call = shim.channel.unary_unary(
        f"/runtime.v1alpha2.{service}/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return call(request, timeout=10)


def test_v1alpha2_is_served_beside_v1(shim: Shim) -> None:
    version = _alpha(shim, "RuntimeService", "Version", api.VersionRequest(), api.VersionResponse)
    assert version.runtime_api_version == "v1alpha2"
    assert version.runtime_name == "docker"
    assert shim.runtime.Version(api.VersionRequest(), timeout=10).runtime_api_version == "v1"
    listed = _alpha(shim, "ImageService", "ListImages", api.ListImagesRequest(), api.ListImagesResponse)
    assert any(image.repo_tags for image in listed.images)
    # RPCs added to v1 after v1alpha2's last release are unknown there, as on the runtimes that served it.
    assert shim.runtime.RuntimeConfig(api.RuntimeConfigRequest(), timeout=10).linux.cgroup_driver
    with pytest.raises(grpc.RpcError) as unknown:
        _alpha(shim, "RuntimeService", "RuntimeConfig", api.RuntimeConfigRequest(), api.RuntimeConfigResponse)
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_tcp_endpoint(start_shim) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    process = start_shim(endpoint=f"tcp://127.0.0.1:{port}")
    assert process.runtime.Version(api.VersionRequest(), timeout=10).runtime_name == "docker"


@pytest.mark.parametrize("transport", ["http2", "grpcio"])
def test_a_tcp_endpoint_on_port_0_names_the_port_it_got(transport: str) -> None:
    process = Shim(["--grpc-transport", transport], endpoint="tcp://127.0.0.1:0")
    try:
        with pytest.raises(grpc.FutureTimeoutError):  # it serves, but not on port 0: the fixture cannot reach it
            process.start(wait=5)
        bound = re.search(r"serving CRI v1 and v1alpha2 on tcp://127\.0\.0\.1:(\d+)", process.log())
    finally:
        process.stop()
    assert bound and int(bound.group(1)) > 0


@pytest.mark.parametrize("transport", ["http2", "grpcio"])
def test_either_transport_serves_both_versions_statuses_and_streams(start_shim, transport: str) -> None:
    process = start_shim(args=["--grpc-transport", transport])
    assert f"({transport})" in process.log()
    assert process.runtime.Version(api.VersionRequest(), timeout=10).runtime_api_version == "v1"
    assert _alpha(process, "RuntimeService", "Version", api.VersionRequest(), api.VersionResponse).runtime_api_version == "v1alpha2"
    with pytest.raises(grpc.RpcError) as missing:
        process.runtime.ContainerStatus(api.ContainerStatusRequest(container_id="no-such-container"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-container" in missing.value.details()
    events = process.runtime.GetContainerEvents(api.GetEventsRequest(), timeout=30)
    events.cancel()
    with pytest.raises(grpc.RpcError) as cancelled:
        next(events)
    assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    assert process.runtime.Status(api.StatusRequest(), timeout=10).status.conditions


def test_an_error_that_repeats_a_huge_input_still_reaches_the_client(shim: Shim) -> None:
    """grpcio clients take 8 KiB of trailers: a status message echoing a 15 KB ID came back as
    RESOURCE_EXHAUSTED instead of the NOT_FOUND it was."""
    for call, request in ((shim.runtime.ContainerStatus, api.ContainerStatusRequest(container_id="a" * 15000)),
                          (shim.images.ImageStatus, api.ImageStatusRequest(image=api.ImageSpec(image="d" * 15000))),
                          (shim.runtime.PodSandboxStatus, api.PodSandboxStatusRequest(pod_sandbox_id="é" * 5000)),
                          (shim.runtime.PodSandboxStatus, api.PodSandboxStatusRequest(pod_sandbox_id="名" * 5000))):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=10)
        assert caught.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
        assert len(caught.value.details().encode()) < 2200

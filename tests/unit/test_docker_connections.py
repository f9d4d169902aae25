"""The container requests' kept connections, against a scripted dockerd on a unix socket."""

from __future__ import annotations

import json
import os
import resource
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import grpc
import pytest

from dockershim_py.docker_client import DockerClient
from dockershim_py.errors import CRIError


class _FakeDocker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        super().__init__(path, _Handler)
        self.connections = 0
        self.requests: list[str] = []
        self.hang_up_after_answer: set[str] = set()  # paths answered, then the connection closed unannounced
        self.hang_up_before_answer: set[str] = set()  # paths read, then the connection closed unanswered
        self.slow: dict[str, float] = {}
        self.pull_answer = b""  # what POST /images/create sends as its chunked body before hanging up


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeDocker

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, *_: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(f"{self.command} {self.path} {body.decode()}".strip())
        path = self.path.split("?")[0]
        if path in self.server.hang_up_before_answer:
            self.server.hang_up_before_answer.discard(path)
            self.close_connection = True
            return
        time.sleep(self.server.slow.get(path, 0))
        if path.endswith("/export") and "/missing/" not in path:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"200\r\n" + b"\0" * 100)  # 100 of a 512-byte chunk
            self.wfile.flush()
            if "/stalls/" in path:
                time.sleep(3)  # longer than the client's 2 s timeout
            self.close_connection = True
            return
        if path == "/v1.41/images/create":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(self.server.pull_answer), self.server.pull_answer))
            self.close_connection = True  # no last chunk: dockerd went away mid-pull
            return
        status, answer = _route(self.command, path)
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if path in self.server.hang_up_after_answer:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _answer


def _route(method: str, path: str) -> tuple[int, object]:
    if path in ("/version", "/v1.40/version"):
        return 200, {"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.24"}
    if path == "/v1.41/containers/json":
        return 200, [{"Id": "abc"}]
    if path == "/v1.41/containers/create":
        return 409, {"message": 'Conflict. The container name "/x" is already in use by container "0123456789ab".'}
    if path.startswith("/v1.41/exec/"):
        return 409, {"message": "container 0123 is not running"}
    if path.endswith(("/missing/json", "/missing/export")):
        return 404, {"message": "No such container: missing"}
    if path.endswith("/start"):
        return 304, None
    if path.endswith("/json"):
        return 200, {"Id": path.split("/")[-2]}
    return 500, {"message": "unexpected"}


@pytest.fixture()
def docker(tmp_path: Path) -> Iterator[tuple[_FakeDocker, DockerClient]]:
    path = str(tmp_path / "docker.sock")
    server = _FakeDocker(path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = DockerClient(f"unix://{path}", timeout=2)
    client._clients()  # negotiated through docker-py: its connections are not the ones counted below
    server.connections = 0
    server.requests.clear()
    yield server, client
    client._forget_connection()
    server.shutdown()
    server.server_close()


def test_container_requests_share_one_kept_connection(docker) -> None:
    server, client = docker
    for n in range(20):
        assert client.inspect_container(f"c{n}") == {"Id": f"c{n}"}
    assert client.list_containers({"label": "a=b"}) == [{"Id": "abc"}]
    client.start_container("c1")  # Docker's 304: already running, which is not an error
    assert server.connections == 1
    assert server.requests[-2] == "GET /v1.41/containers/json?all=1&filters=%7B%22label%22%3A+%5B%22a%3Db%22%5D%7D"


def test_a_connection_dockerd_closed_while_idle_is_replaced_unnoticed(docker) -> None:
    server, client = docker
    server.hang_up_after_answer.add("/v1.41/containers/first/json")
    client.inspect_container("first")
    time.sleep(0.1)  # dockerd's close reaches the idle connection
    client.start_container("second")  # a write: it must not meet the dead connection
    assert server.connections == 2
    assert server.requests[-1] == "POST /v1.41/containers/second/start"


def test_kept_connections_work_past_descriptor_1023(docker) -> None:
    """A node with hundreds of containers holds hundreds of log files and pidfds open."""
    server, client = docker
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit {hard} is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        client._forget_connection()  # the next connections get descriptors past the filler
        for n in range(3):
            assert client.inspect_container(f"high{n}") == {"Id": f"high{n}"}
        assert max(connection.fileno() for connection in client._kept) > 1023
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_dockers_error_statuses_keep_their_message(docker) -> None:
    _, client = docker
    with pytest.raises(CRIError) as missing:
        client.inspect_container("missing")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert missing.value.message == "container missing: not found (No such container: missing)"
    with pytest.raises(CRIError) as conflict:
        client.create_container("x", {"Image": "busybox", "Cmd": None})
    assert conflict.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "already in use by container" in conflict.value.message


def test_streams_map_dockers_statuses_like_every_other_request(docker) -> None:
    _, client = docker
    with pytest.raises(CRIError) as stopped:
        client.start_exec("e1", timeout=2)
    assert stopped.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert stopped.value.message == "start exec e1: conflict: container 0123 is not running"


def test_create_sends_dockers_body_without_empty_fields(docker) -> None:
    server, client = docker
    with pytest.raises(CRIError):
        client.create_container("web", {"Image": "busybox", "Cmd": None, "Labels": {"a": "b"}})
    assert server.requests[-1] == 'POST /v1.41/containers/create?name=web {"Image": "busybox", "Labels": {"a": "b"}}'


def test_a_read_is_asked_again_when_the_connection_breaks_but_a_write_is_not(docker) -> None:
    server, client = docker
    server.hang_up_before_answer.add("/v1.41/containers/flaky/json")
    assert client.inspect_container("flaky") == {"Id": "flaky"}
    assert server.requests.count("GET /v1.41/containers/flaky/json") == 2
    server.hang_up_before_answer.add("/v1.41/containers/once/stop")
    with pytest.raises(CRIError) as lost:
        client.stop_container("once", 0)
    assert lost.value.code == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach the Docker daemon" in lost.value.message
    assert server.requests.count("POST /v1.41/containers/once/stop?t=0") == 1


def test_a_slow_answer_is_a_deadline_and_the_next_request_gets_its_own_answer(docker) -> None:
    server, client = docker
    server.slow["/v1.41/containers/slow/json"] = 3
    with pytest.raises(CRIError) as slow:
        client.inspect_container("slow")
    assert slow.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert client.inspect_container("next") == {"Id": "next"}
    assert server.connections == 2  # not the connection the late answer will arrive on


def test_a_pull_cut_off_is_unavailable_and_an_unreadable_progress_message_internal(docker) -> None:
    server, client = docker
    heard: list[dict[str, object]] = []
    server.pull_answer = b'{"status":"Pulling fs layer","id":"abc"}\n'
    with pytest.raises(CRIError) as cut:
        client.pull_image("docker.io/library/busybox", "latest", None, 2, heard.append, lambda cancel: True)
    assert cut.value.code == grpc.StatusCode.UNAVAILABLE  # worth a retry, as any lost connection
    assert "connection to Docker lost" in cut.value.message
    assert heard == [{"status": "Pulling fs layer", "id": "abc"}]
    server.pull_answer = b"{not json\n"
    with pytest.raises(CRIError) as garbled:
        client.pull_image("docker.io/library/busybox", "latest", None, 2, heard.append, lambda cancel: True)
    assert garbled.value.code == grpc.StatusCode.INTERNAL
    assert "unreadable answer from Docker" in garbled.value.message


@pytest.mark.parametrize("container, code, words", [
    ("stalls", grpc.StatusCode.DEADLINE_EXCEEDED, "Docker sent nothing for 2s"),
    ("cut", grpc.StatusCode.UNAVAILABLE, "connection to Docker lost"),
    ("missing", grpc.StatusCode.NOT_FOUND, "No such container: missing"),
])
def test_an_export_that_stalls_is_cut_off_or_breaks_says_so(docker, container: str, code, words: str) -> None:
    _, client = docker
    started = time.monotonic()
    with pytest.raises(CRIError) as failed:
        b"".join(client.export_container(container))
    assert failed.value.code == code and words in failed.value.message
    assert time.monotonic() - started < 5


def test_stop_waits_out_the_grace_period_beyond_the_request_timeout(docker) -> None:
    server, client = docker
    server.slow["/v1.41/containers/graceful/stop"] = 2.5  # the client's timeout is 2 s
    with pytest.raises(CRIError) as stopped:  # the fake answers 500 once it has waited
        client.stop_container("graceful", 2)
    assert stopped.value.code == grpc.StatusCode.UNKNOWN


def test_an_unreachable_daemon_is_unavailable(tmp_path: Path) -> None:
    client = DockerClient(f"unix://{tmp_path}/absent.sock", timeout=1)
    with pytest.raises(CRIError) as absent:
        client.inspect_container("c")
    assert absent.value.code == grpc.StatusCode.UNAVAILABLE


def test_calls_behind_a_version_probe_to_a_silent_dockerd_do_not_queue_one_probe_each(tmp_path: Path) -> None:
    """Twelve calls took 5, 10, ... 60 s when each probed in turn under the client's lock."""
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(64)  # accepts, answers nothing
    client = DockerClient(f"unix://{tmp_path}/silent.sock", timeout=1)
    outcomes: list[grpc.StatusCode] = []
    started = time.monotonic()
    try:
        threads = [threading.Thread(target=lambda: outcomes.append(_code_of(client.inspect_container, "c")))
                   for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert len(outcomes) == 12 and set(outcomes) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert elapsed < 6, f"{elapsed:.1f}s"


def _code_of(call, *args) -> grpc.StatusCode:
    try:
        call(*args)
    except CRIError as exc:
        return exc.code
    return grpc.StatusCode.OK

"""The streaming server in-process, with a fake Docker side: routes, tokens, refusals, limits, sessions.

The "Docker" of these tests is one end of a socket pair speaking Docker's stream framing, so the
server's sessions run for real (threads, loop, protocol cores) without a daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from wsproto.events import BytesMessage, CloseConnection
from wsproto.utilities import LocalProtocolError

import streaming_client as client
from conftest import ManualClock, wait_for
from dockershim_py.api import api_pb2 as api
from dockershim_py.config import Config
from dockershim_py.docker_client import RawStream
from dockershim_py.errors import CRIError, failed_precondition, not_found
from dockershim_py.streaming import server as server_module
from dockershim_py.streaming.channels import Status, TerminalSize
from dockershim_py.streaming.server import StreamingServer, url_host
from dockershim_py.streaming.tokens import TokenCache

CONTAINER = "c" * 64
SANDBOX = "s" * 64


def frame(stream: int, data: bytes) -> bytes:
    return bytes((stream, 0, 0, 0)) + len(data).to_bytes(4, "big") + data


class FakeProcess:
    """A process behind a socket pair: echoes stdin to stdout (and "err:" + it to stderr) until stdin ends."""

    def __init__(self, tty: bool, status: Status) -> None:
        ours, self._docker = socket.socketpair()
        self.stream = RawStream(ours)
        self.multiplexed = not tty
        self.status = status
        self.sizes: list[tuple[int, int]] = []
        self.terminated = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self._docker:
            while chunk := self._docker.recv(65536):
                if self.multiplexed:
                    self._docker.sendall(frame(1, chunk) + frame(2, b"err:" + chunk))
                else:
                    self._docker.sendall(chunk)

    def resize(self, size: TerminalSize) -> None:
        self.sizes.append((size.width, size.height))

    def outcome(self) -> Status:
        return self.status

    def ended(self) -> bool:
        return True  # once its output has

    def terminate(self) -> int:
        self.terminated = True
        return 1


class HeadProcess:
    """`head -c 10`: reads ten bytes of stdin, prints them and exits, as dockerd then closes the stream."""

    multiplexed = True

    def __init__(self) -> None:
        ours, docker = socket.socketpair()
        self.stream = RawStream(ours)

        def serve() -> None:
            with docker:
                taken = b""
                while len(taken) < 10:
                    taken += docker.recv(10 - len(taken))
                docker.sendall(frame(1, taken))

        threading.Thread(target=serve, daemon=True).start()

    def resize(self, size: TerminalSize) -> None:
        pass

    def outcome(self) -> Status:
        return Status.ok()

    def terminate(self) -> int:
        return 0


class FakeRuntime:
    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []
        self.status = Status.exit_code(3)
        self.fail: CRIError | None = None

    def running_container(self, container_id: str) -> dict:
        if container_id != CONTAINER:
            raise not_found(f"container {container_id!r} not found")
        return {"Id": CONTAINER}

    def running_sandbox(self, sandbox_id: str) -> dict:
        if sandbox_id != SANDBOX:
            raise not_found(f"pod sandbox {sandbox_id!r} not found")
        return {"Id": SANDBOX}

    def exec(self, container_id: str, cmd: list[str], *, stdin: bool, stdout: bool, stderr: bool,
             tty: bool) -> FakeProcess:
        if self.fail:
            raise self.fail
        self.processes.append(FakeProcess(tty, self.status))
        return self.processes[-1]

    def attach(self, container_id: str, *, stdin: bool, stdout: bool, stderr: bool) -> FakeProcess:
        self.processes.append(FakeProcess(False, Status.ok()))
        return self.processes[-1]

    def sandbox_network_namespace(self, sandbox_id: str) -> int:
        """This process's own namespace: forwards reach the test's loopback servers."""
        return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)



@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def server(runtime: FakeRuntime, clock: ManualClock) -> Iterator[StreamingServer]:
    made = StreamingServer(Config(streaming_creation_timeout=1.0), runtime,  # type: ignore[arg-type]
                           TokenCache(clock=clock))
    made.start()
    yield made
    made.stop()


def address(server: StreamingServer) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def exec_url(server: StreamingServer, **fields: object) -> str:
    fields = {"container_id": CONTAINER, "cmd": ["cat"], "stdin": True, "stdout": True, "stderr": True, **fields}
    return server.get_exec(api.ExecRequest(**fields))


def test_urls(server: StreamingServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:")
    assert exec_url(server).startswith(server.base_url + "/exec/")
    assert server.get_attach(api.AttachRequest(container_id=CONTAINER, stdout=True)).startswith(
        server.base_url + "/attach/")
    assert server.get_port_forward(api.PortForwardRequest(pod_sandbox_id=SANDBOX, port=[80])).startswith(
        server.base_url + "/portforward/")
    assert url_host("0.0.0.0") == "127.0.0.1" and url_host("::") == "[::1]" and url_host("::1") == "[::1]"


@pytest.mark.parametrize(("call", "fields", "code"), [
    ("exec", {"tty": True}, grpc.StatusCode.INVALID_ARGUMENT),
    ("exec", {"stdin": False, "stdout": False, "stderr": False}, grpc.StatusCode.INVALID_ARGUMENT),
    ("exec", {"cmd": []}, grpc.StatusCode.INVALID_ARGUMENT),
    ("exec", {"container_id": "other"}, grpc.StatusCode.NOT_FOUND),
    ("attach", {"tty": True}, grpc.StatusCode.INVALID_ARGUMENT),
    ("portforward", {"port": [0]}, grpc.StatusCode.INVALID_ARGUMENT),
    ("portforward", {"pod_sandbox_id": "other"}, grpc.StatusCode.NOT_FOUND),
])
def test_rpc_checks(server: StreamingServer, call: str, fields: dict, code: grpc.StatusCode) -> None:
    with pytest.raises(CRIError) as refused:
        if call == "exec":
            exec_url(server, **fields)
        elif call == "attach":
            server.get_attach(api.AttachRequest(**{"container_id": CONTAINER, "stdout": True, "stderr": True,
                                                   **fields}))
        else:
            server.get_port_forward(api.PortForwardRequest(**{"pod_sandbox_id": SANDBOX, **fields}))
    assert refused.value.code == code


def test_a_full_token_cache_is_resource_exhausted(runtime: FakeRuntime) -> None:
    server = StreamingServer(Config(), runtime, TokenCache(capacity=1))  # type: ignore[arg-type]
    server.start()
    try:
        exec_url(server)
        with pytest.raises(CRIError) as full:
            exec_url(server)
        assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop()


def test_unknown_used_expired_and_misrouted_tokens_are_404(server: StreamingServer, clock: ManualClock) -> None:
    used = exec_url(server)
    session = client.SpdyExec(used, "v4.channel.k8s.io", stdin=True)
    session.close_stdin()
    session.finish()
    expired = exec_url(server)
    clock.now += 60
    misrouted = exec_url(server).replace("/exec/", "/attach/")
    for url in (used, expired, misrouted, server.base_url + "/exec/unknown", server.base_url + "/exec/a/b",
                server.base_url + "/"):
        answer = client.http_get(url, {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                       "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
        assert (answer.status, answer.body) == (404, b"404 page not found\n"), url


def test_refusals(server: StreamingServer) -> None:
    assert client.http_get(exec_url(server)).status == 400  # not an upgrade
    with pytest.raises(client.Refused) as spdy:
        client.SpdySession(exec_url(server), ["v9.channel.k8s.io", "other"])
    assert spdy.value.status == 403
    assert spdy.value.body == (b"unable to upgrade: unable to negotiate protocol: client supports "
                               b"[v9.channel.k8s.io other], server accepts [v5.channel.k8s.io v4.channel.k8s.io "
                               b"v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]\n")
    with pytest.raises(client.Refused) as websocket:
        client.WsExec(exec_url(server), "v9.channel.k8s.io", stdin=True)
    assert websocket.value.status == 403
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"PUT /exec/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 405 ")
    with socket.create_connection(address(server)) as sock:  # a HEAD answer has no body
        sock.sendall(b"HEAD /exec/x HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(1000):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 405 ") and answer.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"])
def test_spdy_exec_session(server: StreamingServer, runtime: FakeRuntime, protocol: str) -> None:
    session = client.SpdyExec(exec_url(server), protocol, stdin=True)
    session.write(b"abc")
    session.wait_output(b"abc")
    session.close_stdin()
    outcome = session.finish()
    assert (outcome.stdout, outcome.stderr) == (b"abc", b"err:abc")
    if protocol.startswith("v4"):
        assert outcome.status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    else:
        assert outcome.error.endswith(b": 3")


def test_websocket_exec_session_with_resize(server: StreamingServer, runtime: FakeRuntime) -> None:
    session = client.WsExec(exec_url(server, tty=True, stderr=False), "v5.channel.k8s.io", stdin=True, tty=True,
                            stderr=False)
    session.resize(0, 24)  # dropped: Docker cannot size a terminal to nothing
    session.resize(80, 24)
    session.write(b"typed")
    session.wait_output(b"typed")
    session.close_stdin()
    outcome = session.finish()
    assert outcome.status["reason"] == "NonZeroExitCode"
    assert runtime.processes[0].sizes == [(80, 24)]
    assert session.first == [client.STDOUT]


def test_a_burst_of_resizes_is_one_docker_resize_to_the_last_size(server: StreamingServer,
                                                                    runtime: FakeRuntime) -> None:
    """A client that sends many resize messages at once (a window dragged on a slow link) gets
    one resize call, not one Docker round trip per message on the session's thread."""
    session = client.WsExec(exec_url(server, tty=True, stderr=False), "v5.channel.k8s.io", stdin=True, tty=True,
                            stderr=False)
    session.write(b"started")
    session.wait_output(b"started")
    ws = session.ws
    with ws.reader.lock:  # every message in one write, so that the server reads them together
        burst = b"".join(ws.ws.send(BytesMessage(bytes([client.RESIZE]) + client.resize_message(width, 24)))
                         for width in range(1, 201))
        ws.sock.sendall(burst + ws.ws.send(BytesMessage(bytes([client.STDIN]) + b"after")))
    session.wait_output(b"after")
    assert runtime.processes[0].sizes == [(200, 24)]
    session.close_stdin()
    session.finish()


@pytest.mark.parametrize("websocket", [False, True])
def test_a_process_that_exits_before_reading_all_its_stdin_gives_its_output_and_status(
        server: StreamingServer, runtime: FakeRuntime, websocket: bool) -> None:
    """`kubectl exec -i pod -- head -c 10 < big`: once the process is gone, writing stdin to Docker
    fails; that ends stdin, not the session ("connection to Docker lost" and no output, before)."""
    runtime.exec = lambda *args, **kwargs: HeadProcess()  # type: ignore[method-assign]
    url = exec_url(server, stderr=False)
    session = (client.WsExec(url, "v5.channel.k8s.io", stdin=True, stderr=False) if websocket
               else client.SpdyExec(url, "v4.channel.k8s.io", stdin=True, stderr=False))
    with contextlib.suppress(OSError, LocalProtocolError):  # the client may find the session over meanwhile
        for _ in range(64):
            session.write(b"z" * 65536)
    outcome = session.finish(10)
    assert outcome.stdout == b"z" * 10
    assert outcome.status["status"] == "Success", outcome.error


def reset(sock: socket.socket, reader: client._Reader) -> None:
    """Drop a client's connection with a TCP reset, as a killed client's kernel does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.shutdown(socket.SHUT_RD)  # wakes the client's reader without sending anything
    reader.wait(lambda: reader.eof)
    sock.close()


@pytest.mark.parametrize("websocket", [False, True])
def test_a_client_that_vanishes_mid_exec_has_its_process_terminated(
        server: StreamingServer, runtime: FakeRuntime, websocket: bool) -> None:
    """Docker keeps an exec running when its connection closes: a process nobody reads any more
    (`sleep 1000`, a shell whose kubectl was killed) is ended, not left in the container."""
    url = exec_url(server)
    session = client.WsExec(url, "v5.channel.k8s.io", stdin=True) if websocket else client.SpdyExec(
        url, "v4.channel.k8s.io", stdin=True)
    session.write(b"abc")
    session.wait_output(b"abc")
    connection = session.ws if isinstance(session, client.WsExec) else session.session
    reset(connection.sock, connection.reader)
    assert wait_for(lambda: not server._threads, 5)
    assert runtime.processes[0].terminated


def test_an_idle_exec_has_its_process_terminated(runtime: FakeRuntime) -> None:
    """The idle timeout ends the session the way a vanished client does, and the process with it."""
    idle = StreamingServer(Config(streaming_idle_timeout=0.3), runtime)  # type: ignore[arg-type]
    idle.start()
    try:
        session = client.SpdyExec(exec_url(idle), "v4.channel.k8s.io", stdin=True)
        session.write(b"abc")
        session.wait_output(b"abc")
        assert wait_for(lambda: not idle._threads, 5)
        assert runtime.processes[0].terminated
        session.session.close()
    finally:
        idle.stop()


def test_a_process_that_ended_is_not_terminated(server: StreamingServer, runtime: FakeRuntime) -> None:
    session = client.WsExec(exec_url(server), "v5.channel.k8s.io", stdin=True)
    session.write(b"abc")
    session.close_stdin()
    session.finish()
    assert wait_for(lambda: not server._threads, 5)
    assert not runtime.processes[0].terminated


def test_start_failures_reach_the_error_stream(server: StreamingServer, runtime: FakeRuntime) -> None:
    runtime.fail = failed_precondition("container is not running")
    outcome = client.SpdyExec(exec_url(server), "v4.channel.k8s.io", stdin=True).finish()
    assert outcome.status["reason"] == "InternalError"
    assert outcome.status["message"] == ("Internal error occurred: error executing command in container: "
                                         "container is not running")
    assert outcome.status["code"] == 500


def test_attach_session(server: StreamingServer) -> None:
    url = server.get_attach(api.AttachRequest(container_id=CONTAINER, stdin=True, stdout=True))
    session = client.SpdyExec(url, "v4.channel.k8s.io", stdin=True, stderr=False)
    session.write(b"in")
    session.wait_output(b"in")
    session.close_stdin()
    assert session.finish().status == {"metadata": {}, "status": "Success"}


def test_missing_streams_close_the_connection(server: StreamingServer) -> None:
    session = client.SpdySession(exec_url(server), ["v4.channel.k8s.io"])
    session.open({"streamtype": "error"})
    refused = session.open({"streamtype": "bogus"})
    assert session.streams[refused].reset
    started = time.monotonic()
    session.wait(lambda: session.eof, 10)
    assert 0.5 < time.monotonic() - started < 5  # the 1 s stream-creation timeout


@pytest.fixture
def one_slot_server(runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> Iterator[StreamingServer]:
    monkeypatch.setattr(server_module, "MAX_CONNECTIONS", 1)
    made = StreamingServer(Config(), runtime)  # type: ignore[arg-type]
    made.start()
    yield made
    made.stop()


def session_in_the_only_slot(server: StreamingServer) -> client.SpdyExec:
    session = client.SpdyExec(exec_url(server), "v4.channel.k8s.io", stdin=True)
    session.write(b"x")
    session.wait_output(b"x")
    return session


def test_connections_are_bounded(one_slot_server: StreamingServer) -> None:
    session = session_in_the_only_slot(one_slot_server)
    assert client.http_get(exec_url(one_slot_server)).status == 503
    session.session.close()  # gives the slot back
    assert wait_for(lambda: client.http_get(exec_url(one_slot_server)).status == 400, 5)


def test_a_connection_that_sends_no_request_gives_its_slot_to_a_new_one(one_slot_server: StreamingServer) -> None:
    """Idle connections (a slowloris) must not lock out clients with a URL, which ask at once."""
    with socket.create_connection(address(one_slot_server)) as idle:  # holds the only slot, asks nothing
        time.sleep(0.2)
        assert client.http_get(exec_url(one_slot_server)).status == 400  # served: no upgrade headers
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed for it


def test_stop_ends_sessions_with_a_reason(runtime: FakeRuntime) -> None:
    server = StreamingServer(Config(), runtime)  # type: ignore[arg-type]
    server.start()
    session = client.SpdyExec(exec_url(server), "v4.channel.k8s.io", stdin=True)
    session.write(b"x")
    session.wait_output(b"x")
    server.stop()
    outcome = session.finish(5)
    assert outcome.status["reason"] == "InternalError" and "shutting down" in outcome.status["message"]
    assert not server._threads


@pytest.mark.skipif(os.geteuid() != 0, reason="setns needs root")
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_port_forward_in_this_namespace(server: StreamingServer, family: int) -> None:
    listener = socket.socket(family)
    listener.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def echo() -> None:
        connection, _ = listener.accept()
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    forward = client.SpdyForward(server.get_port_forward(api.PortForwardRequest(pod_sandbox_id=SANDBOX)))
    data, error = forward.connect(port)
    payload = os.urandom(300_000)
    forward.send(data, payload, fin=True)
    assert forward.wait_end(data) == payload
    assert forward.wait_end(error) == b""
    forward.close()
    listener.close()


def close_from_the_client(ws: client.WebSocket) -> int | None:
    """Start the closing handshake with 1001 and return the code of the server's answer (None: just EOF)."""
    with ws.reader.lock:
        ws.sock.sendall(ws.ws.send(CloseConnection(code=1001, reason="going away")))
    ws.reader.wait(lambda: ws.close_code is not None or ws.reader.eof)
    code = ws.close_code
    ws.close()
    return code


@pytest.mark.parametrize(("action", "protocol"), [("exec", "v5.channel.k8s.io"), ("exec", "v4.channel.k8s.io"),
                                                  ("attach", "v5.channel.k8s.io")])
def test_a_client_that_closes_a_remote_command_gets_the_close_answered(
        server: StreamingServer, action: str, protocol: str) -> None:
    """RFC 6455 5.5.1: the server answers a Close with its own, echoing the code; it used to stop
    without sending it, and the client saw an abnormal closure (1006)."""
    url = (exec_url(server) if action == "exec"
           else server.get_attach(api.AttachRequest(container_id=CONTAINER, stdin=True, stdout=True, stderr=True)))
    session = client.WsExec(url, protocol, stdin=True)
    session.write(b"hello")
    session.wait_output(b"hello")
    assert close_from_the_client(session.ws) == 1001
    assert wait_for(lambda: not server._threads, 5)


@pytest.mark.skipif(os.geteuid() != 0, reason="setns needs root")
@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"])
def test_a_client_that_closes_a_port_forward_gets_the_close_answered(server: StreamingServer, protocol: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    url = server.get_port_forward(api.PortForwardRequest(pod_sandbox_id=SANDBOX, port=[port]))
    if protocol.startswith("SPDY"):
        tunnel = client.SpdyForward(url, tunnel=True)
        tunnel.connect(port)
        ws = tunnel.session._ws
        assert ws is not None
    else:
        ws = client.WsForward(url, protocol).ws
    assert wait_for(lambda: accepted, 5)  # the forward is up
    assert close_from_the_client(ws) == 1001
    listener.close()
    for connection in accepted:  # the session waits for the pod's end to close its own
        connection.close()
    assert wait_for(lambda: not server._threads, 5)


def test_port_forward_errors_are_json(server: StreamingServer) -> None:
    if os.geteuid() != 0:
        pytest.skip("setns needs root")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        forward = client.SpdyForward(server.get_port_forward(api.PortForwardRequest(pod_sandbox_id=SANDBOX)))
        data, error = forward.connect(port)
        report = json.loads(forward.wait_end(error))
        forward.close()
    assert report["closeConnection"] is True
    assert report["message"].startswith(f"error forwarding port {port} to pod {SANDBOX}, uid : failed to connect")


def test_garbage_is_answered_or_closed_never_crashes(server: StreamingServer) -> None:
    with socket.create_connection(address(server)) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
    spdy = client.SpdySession(exec_url(server), ["v4.channel.k8s.io"])
    spdy.sock.sendall(os.urandom(4096))
    spdy.wait(lambda: spdy.eof, 10)
    websocket = client.WsExec(exec_url(server), "v5.channel.k8s.io", stdin=True)
    websocket.ws.sock.sendall(os.urandom(4096))
    websocket.ws.reader.wait(lambda: websocket.ws.reader.eof or websocket.ws.close_code is not None, 10)
    assert wait_for(lambda: not server._threads, 10)


def test_a_session_idle_long_enough_gives_its_slot_to_a_new_connection(
        one_slot_server: StreamingServer, runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgotten sessions (port-forwards left open) must not lock out everyone's exec until their
    idle timeout; a busy one keeps its slot."""
    monkeypatch.setattr(server_module, "EVICTABLE_IDLE_SECONDS", 0.5)
    session = session_in_the_only_slot(one_slot_server)
    assert client.http_get(exec_url(one_slot_server)).status == 503  # not idle long enough yet
    time.sleep(0.7)
    assert client.http_get(exec_url(one_slot_server)).status == 400  # served: no upgrade headers
    session.session.wait(lambda: session.session.eof, 5)  # ended for it, as its idle timeout would
    assert runtime.processes[-1].terminated


def test_a_failure_admitting_one_connection_does_not_end_the_accepting(
        runtime: FakeRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    server = StreamingServer(Config(), runtime)  # type: ignore[arg-type]
    admit = server._admit
    failures = iter([RuntimeError("a bug")])

    def admit_failing_once(sock: socket.socket) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        admit(sock)

    monkeypatch.setattr(server, "_admit", admit_failing_once)
    server.start()
    try:
        with contextlib.suppress(OSError, client.Refused):
            client.http_get(exec_url(server))  # closed unanswered
        assert client.http_get(exec_url(server)).status == 400  # the next one is served
    finally:
        server.stop()

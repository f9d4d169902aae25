"""The gRPC transport on a real unix socket, called by grpcio's client, with handlers made for the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import hpack
import pytest

from dockershim_py import grpc_transport, http2, inline
from dockershim_py.grpc_transport import GrpcServer, parse_timeout, status_headers

LIMIT = 1 << 20
identity = bytes


class Behaviour:
    """Handlers whose effects the tests watch."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.callbacks: list[str] = []
        self.remaining: list[float | None] = []
        self.closed = threading.Event()

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode())
        raise AssertionError("abort returned")

    def refuse(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        context.set_details("not now")
        assert context.code() == grpc.StatusCode.FAILED_PRECONDITION and context.details() == "not now"
        return b"ignored"

    def crash(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("boom")

    def wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.remaining.append(context.time_remaining())
        context.add_callback(lambda: self.callbacks.append("wait ended"))
        self.release.wait(10)
        return b"released"

    def huge(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"h" * (LIMIT + 1)

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        context.add_callback(lambda: self.callbacks.append("stream ended"))
        try:
            for index in range(int(request)):
                yield str(index).encode().ljust(100_000, b".")
        finally:
            self.closed.set()

    def huge_stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield b"fits"
        yield b"h" * (LIMIT + 1)
        yield b"never sent"


def serve_on_socket(server: GrpcServer, tmp_path: Path) -> tuple[str, grpc.Channel]:
    """The server listening on a unix socket in `tmp_path`; the socket's path and a channel to it."""
    path = str(tmp_path / "grpc.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    server.serve(listener, "unix")
    return path, grpc.insecure_channel(f"unix://{path}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[grpc.Channel, Behaviour, GrpcServer, str]]:
    behaviour = Behaviour()
    unary = {name: grpc.unary_unary_rpc_method_handler(getattr(behaviour, name), identity, identity)
             for name in ("echo", "fail", "refuse", "crash", "wait", "huge")}
    handlers = {f"/t.Test/{name}": handler for name, handler in unary.items()}
    handlers["/t.Test/stream"] = grpc.unary_stream_rpc_method_handler(behaviour.stream, identity, identity)
    handlers["/t.Test/huge_stream"] = grpc.unary_stream_rpc_method_handler(behaviour.huge_stream, identity, identity)
    handlers["/t.Test/raw"] = grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])
    server = GrpcServer(handlers, workers=8, max_message_bytes=LIMIT)
    path, channel = serve_on_socket(server, tmp_path)
    yield channel, behaviour, server, path
    behaviour.release.set()
    channel.close()
    server.stop(0)


def call(channel: grpc.Channel, name: str, request: bytes = b"", **kwargs: object) -> bytes:
    return channel.unary_unary(f"/t.Test/{name}")(request, **kwargs)


def code_of(channel: grpc.Channel, name: str, request: bytes = b"", **kwargs: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call(channel, name, request, **kwargs)
    return failure.value.code(), failure.value.details()


@pytest.mark.parametrize(("header", "seconds"), [(b"100m", 0.1), (b"5S", 5.0), (b"2H", 7200.0), (b"7u", 7e-6),
                                                 (b"", None), (b"5", None), (b"123456789S", None), (b"1x", None)])
def test_grpc_timeout_headers(header: bytes, seconds: float | None) -> None:
    assert parse_timeout(header) == seconds


def test_status_messages_are_percent_encoded() -> None:
    assert status_headers(grpc.StatusCode.NOT_FOUND, "no pod \"x\" 100% ünïcode\n") == [
        (b"grpc-status", b"5"), (b"grpc-message", b"no pod \"x\" 100%25 %C3%BCn%C3%AFcode%0A")]
    assert status_headers(grpc.StatusCode.OK, "") == [(b"grpc-status", b"0")]


def test_unary_calls_of_every_size_up_to_the_limit(served) -> None:
    channel = served[0]
    for size in (0, 1, 65_535, 65_536, 300_000, LIMIT):
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        assert call(channel, "echo", payload) == payload


def test_a_handler_without_serializers_sees_and_returns_bytes(served) -> None:
    assert call(served[0], "raw", b"abc") == b"cba"


def test_many_calls_at_once_each_get_their_own_answer(served) -> None:
    channel = served[0]
    answers: dict[int, bytes] = {}

    def one(index: int) -> None:
        answers[index] = call(channel, "echo", str(index).encode() * 1000)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {index: str(index).encode() * 1000 for index in range(64)}


def test_failures_reach_the_client_as_statuses(served) -> None:
    channel = served[0]
    assert code_of(channel, "fail", "pod \"a\" not found: ünïcode 100%".encode()) == (
        grpc.StatusCode.NOT_FOUND, "pod \"a\" not found: ünïcode 100%")
    assert code_of(channel, "refuse") == (grpc.StatusCode.FAILED_PRECONDITION, "not now")
    code, details = code_of(channel, "crash")
    assert code == grpc.StatusCode.UNKNOWN and "boom" in details
    assert code_of(channel, "nothing")[0] == grpc.StatusCode.UNIMPLEMENTED
    assert code_of(channel, "echo", b"r" * (LIMIT + 1))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(channel, "huge")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(channel, "echo", b"z" * 1000, compression=grpc.Compression.Gzip)[0] == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as stream_failure:
        list(channel.unary_stream("/t.Test/stream")(b"not a number", timeout=10))
    assert stream_failure.value.code() == grpc.StatusCode.UNKNOWN and "not a number" in stream_failure.value.details()
    received = []
    with pytest.raises(grpc.RpcError) as too_big:
        received.extend(channel.unary_stream("/t.Test/huge_stream")(b"", timeout=10))
    assert received == [b"fits"]
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"a stream message of {LIMIT + 1} bytes is over the {LIMIT} allowed" in too_big.value.details()
    assert call(channel, "echo", b"still serving") == b"still serving"


def test_the_deadline_reaches_the_handler_and_a_cancel_runs_its_callbacks(served) -> None:
    channel, behaviour = served[0], served[1]
    future = channel.unary_unary("/t.Test/wait").future(b"", timeout=30)
    deadline = time.monotonic() + 10
    while not behaviour.remaining and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 25 < behaviour.remaining[0] <= 31  # clients round the timeout they send up
    future.cancel()
    while not behaviour.callbacks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert behaviour.callbacks == ["wait ended"]


def test_a_server_stream_is_read_to_its_end_and_a_cancelled_one_is_closed(served) -> None:
    channel, behaviour = served[0], served[1]
    stream = channel.unary_stream("/t.Test/stream")
    assert [message[:3].rstrip(b".") for message in stream(b"50")] == [str(i).encode() for i in range(50)]
    behaviour.closed.clear()
    responses = stream(b"1000000")  # 100 GB unless backpressure holds it
    next(responses)
    time.sleep(0.5)
    responses.cancel()
    assert behaviour.closed.wait(10)
    assert behaviour.callbacks == ["stream ended", "stream ended"]


def test_garbage_on_one_connection_leaves_the_others_served(served) -> None:
    channel, path = served[0], served[3]
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(path)
    raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw.settimeout(5)
    received = b""
    while chunk := raw.recv(4096):
        received += chunk
    assert b"connection preface" in received  # the GOAWAY's debug text, then the close
    assert call(channel, "echo", b"fine") == b"fine"


def test_stop_lets_an_open_call_finish_within_the_grace_and_refuses_new_ones(served) -> None:
    channel, behaviour, server = served[0], served[1], served[2]
    finishing = channel.unary_unary("/t.Test/wait").future(b"", timeout=30)
    while not behaviour.remaining:
        time.sleep(0.01)
    threading.Timer(0.3, behaviour.release.set).start()
    server.stop(5)
    assert finishing.result(timeout=10) == b"released"
    with pytest.raises(grpc.RpcError):
        call(channel, "echo", b"after stop", timeout=2)


def test_a_client_that_hangs_up_mid_call_has_its_calls_cancelled(served) -> None:
    behaviour, path = served[1], served[3]
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(path)
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/t.Test/wait"),
               (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    raw.sendall(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0)
                + http2.frame(http2.HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(headers))
                + http2.frame(http2.DATA, http2.FLAG_END_STREAM, 1, b"\0\0\0\0\0"))
    deadline = time.monotonic() + 10
    while not behaviour.remaining and time.monotonic() < deadline:
        time.sleep(0.01)
    assert behaviour.remaining == [None]  # no grpc-timeout: no deadline
    raw.close()
    while not behaviour.callbacks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert behaviour.callbacks == ["wait ended"]


def test_a_stream_whose_client_reads_nothing_is_ended_and_its_worker_freed(served, monkeypatch) -> None:
    """A GetContainerEvents subscriber that keeps its connection but never opens its flow control
    window held a worker (and its backlog) for good."""
    monkeypatch.setattr(grpc_transport, "SEND_STALL_SECONDS", 0.5)
    behaviour, path = served[1], served[3]
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(path)
    headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/t.Test/stream"),
               (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    request = b"1000"
    raw.sendall(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0)  # the default 64 KiB window, never opened
                + http2.frame(http2.HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(headers))
                + http2.frame(http2.DATA, http2.FLAG_END_STREAM, 1, b"\0" + len(request).to_bytes(4, "big") + request))
    try:
        assert behaviour.closed.wait(10), "the stream's worker is still waiting for the client"
        assert behaviour.callbacks == ["stream ended"]
    finally:
        raw.close()


def _ran_echo_handlers(tmp_path: Path, workers: int, long_paths: frozenset[str] = frozenset()
                       ) -> tuple[GrpcServer, grpc.Channel, list[bytes], threading.Event]:
    ran: list[bytes] = []
    release = threading.Event()

    def held(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(10)
        return b"released"

    def noted(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append(request)
        return request

    handlers = {f"/t.Test/{fn.__name__}": grpc.unary_unary_rpc_method_handler(fn, identity, identity)
                for fn in (held, noted)}
    server = GrpcServer(handlers, workers=workers, max_message_bytes=LIMIT, long_paths=long_paths)
    return server, serve_on_socket(server, tmp_path)[1], ran, release


def test_long_calls_have_workers_of_their_own(tmp_path: Path) -> None:
    """As many ExecSync probes sleeping as there are workers held up every other call (Version by 5 s)."""
    server, channel, ran, release = _ran_echo_handlers(tmp_path, workers=1, long_paths=frozenset({"/t.Test/held"}))
    try:
        holding = channel.unary_unary("/t.Test/held").future(b"")
        time.sleep(0.2)  # the only long worker is taken
        assert call(channel, "noted", b"not held up", timeout=2) == b"not held up"
        release.set()
        assert holding.result(timeout=10) == b"released"
    finally:
        release.set()
        channel.close()
        server.stop(0)


def test_a_call_whose_deadline_passed_while_it_waited_for_a_worker_is_not_run(tmp_path: Path) -> None:
    """As grpcio: RunPodSandbox must not make a pod for a kubelet that gave up and asked again."""
    server, channel, ran, release = _ran_echo_handlers(tmp_path, workers=1)
    try:
        holding = channel.unary_unary("/t.Test/held").future(b"")
        time.sleep(0.2)  # the only worker is taken
        with pytest.raises(grpc.RpcError) as failure:
            call(channel, "noted", b"late", timeout=0.3)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        release.set()
        assert holding.result(timeout=10) == b"released"
        assert call(channel, "noted", b"in time", timeout=10) == b"in time"
        assert ran == [b"in time"]
    finally:
        release.set()
        channel.close()
        server.stop(0)


def test_a_client_that_stops_reading_is_cut_off_and_holds_up_no_other(tmp_path: Path, monkeypatch) -> None:
    """It floods PINGs and reads none of the answers: once the socket is full, its connection goes."""
    monkeypatch.setattr(grpc_transport, "SEND_STALL_SECONDS", 0.5)
    server, channel, _, release = _ran_echo_handlers(tmp_path, workers=2)
    stalled = socket.socket(socket.AF_UNIX)
    try:
        stalled.connect(str(tmp_path / "grpc.sock"))
        stalled.sendall(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0))
        stalled.settimeout(5)
        pings = http2.frame(http2.PING, 0, 0, b"12345678") * 1000
        try:
            for _ in range(200):  # 3.4 MB of PINGs, far more answers than a socket buffer holds
                stalled.sendall(pings)
        except OSError:
            pass  # cut off: what it sent next found the connection gone
        started = time.monotonic()
        assert call(channel, "noted", b"other client", timeout=10) == b"other client"
        assert time.monotonic() - started < 5
        server.stop(2)
    finally:
        release.set()
        stalled.close()
        channel.close()
        server.stop(0)


class ListenerThatFailsOnce:
    """A listening socket whose first accept fails as one does when the process is out of descriptors."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._failed = False

    def accept(self) -> tuple[socket.socket, object]:
        if not self._failed:
            self._failed = True
            raise OSError(24, "Too many open files")
        return self._listener.accept()

    def __getattr__(self, name: str) -> object:
        return getattr(self._listener, name)


def test_a_failed_accept_does_not_stop_the_server_accepting(tmp_path: Path) -> None:
    server = GrpcServer({"/t.Test/echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r, identity, identity)},
                        workers=2, max_message_bytes=LIMIT)
    path = str(tmp_path / "grpc.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    server.serve(ListenerThatFailsOnce(listener), "unix")
    channel = grpc.insecure_channel(f"unix://{path}")
    try:
        assert call(channel, "echo", b"accepted", timeout=10) == b"accepted"
    finally:
        channel.close()
        server.stop(0)


@pytest.fixture
def inline_served(tmp_path: Path) -> Iterator[tuple[grpc.Channel, list[tuple[str, str]]]]:
    """A server whose "/t.Test/quick" and "/t.Test/waits" try on the connection's thread first."""
    ran: list[tuple[str, str]] = []  # (method, thread name) of every attempt
    release = threading.Event()

    def quick(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append(("quick", threading.current_thread().name))
        return request

    def waits(request: bytes, context: grpc.ServicerContext) -> bytes:
        ran.append(("waits", threading.current_thread().name))
        inline.may_wait("the test's slow part")
        release.wait(float(request or b"0"))
        return b"after waiting"

    def crashes(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("boom")

    handlers = {f"/t.Test/{fn.__name__}": grpc.unary_unary_rpc_method_handler(fn, identity, identity)
                for fn in (quick, waits, crashes)}
    handlers["/t.Test/elsewhere"] = grpc.unary_unary_rpc_method_handler(quick, identity, identity)
    server = GrpcServer(handlers, workers=4, max_message_bytes=LIMIT,
                        inline_paths=frozenset({"/t.Test/quick", "/t.Test/waits", "/t.Test/crashes"}))
    _, channel = serve_on_socket(server, tmp_path)
    yield channel, ran
    release.set()
    channel.close()
    server.stop(0)


def test_an_inline_call_that_needs_no_wait_is_answered_on_the_connections_thread(inline_served) -> None:
    channel, ran = inline_served
    assert call(channel, "quick", b"hi") == b"hi"
    assert call(channel, "elsewhere", b"there") == b"there"
    assert [method for method, _ in ran] == ["quick", "quick"]
    assert ran[0][1].startswith("grpc-conn-") and ran[1][1].startswith("cri")


def test_an_inline_call_that_would_wait_gives_up_and_runs_again_on_a_worker(inline_served) -> None:
    channel, ran = inline_served
    assert call(channel, "waits") == b"after waiting"
    assert [method for method, _ in ran] == ["waits", "waits"]
    assert ran[0][1].startswith("grpc-conn-") and ran[1][1].startswith("cri")


def test_a_waiting_inline_call_holds_up_no_other_call_of_its_connection(inline_served) -> None:
    channel, ran = inline_served
    slow = channel.unary_unary("/t.Test/waits").future(b"5")
    deadline = time.monotonic() + 5
    while len(ran) < 2:  # tried, then running on a worker
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    assert call(channel, "quick", b"meanwhile") == b"meanwhile"
    assert time.monotonic() - started < 1 and not slow.done()
    slow.cancel()


def test_an_inline_call_that_fails_gets_a_status(inline_served) -> None:
    code, details = code_of(inline_served[0], "crashes")
    assert code == grpc.StatusCode.UNKNOWN and "boom" in details
    assert call(inline_served[0], "quick", b"still serving") == b"still serving"


def test_send_within_tells_a_stalled_peer_from_a_gone_one() -> None:
    """Only a stall is worth a warning: a client that closed its connection is not one."""
    ours, theirs = socket.socketpair()
    try:
        assert grpc_transport.send_within(ours, b"x" * 100, 0.1) == grpc_transport.SENT
        assert grpc_transport.send_within(ours, b"x" * (64 << 20), 0.1) == grpc_transport.STALLED  # never read
        theirs.close()
        assert grpc_transport.send_within(ours, b"x", 0.1) == grpc_transport.GONE
    finally:
        ours.close()
        theirs.close()

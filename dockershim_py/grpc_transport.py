"""gRPC calls over http2.ServerConnection: one reader thread per connection, handlers on a pool.

grpcio's server hands each call between its poll thread and a worker several times; here the reader
parses a whole request and hands it over once, and the worker writes the answer itself. Read-only
calls that the shim's index answers skip even that hand-off: the reader tries them itself and hands
over only those that would wait (see inline). The handlers are grpcio's own RpcMethodHandler
objects, so the CRI code cannot tell the two apart. Served: unary and server-streaming calls,
deadlines (grpc-timeout), cancellation, uncompressed messages (the kubelet sends none compressed;
a compressed one is refused with UNIMPLEMENTED).
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import Any
from urllib.parse import quote

import grpc
from prometheus_client import Histogram

from . import http2, inline, telemetry

log = logging.getLogger(__name__)

# A server stream waits for the client to read once this much of it is queued.
STREAM_BACKLOG_BYTES = 1 << 20
# A client that takes none of what the server sends for this long is cut off.
SEND_STALL_SECONDS = 10.0
# After a failed accept (out of file descriptors): the pause before the next try.
ACCEPT_RETRY_SECONDS = 0.1
# Threads for stops, per --grpc-workers worker (256 by default): a thread each while it waits.
STOP_WORKERS_PER_WORKER = 8
_PREFIX = struct.Struct(">BI")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]


def parse_timeout(value: bytes) -> float | None:
    """Seconds from a grpc-timeout header ("100m", "5S"); None when malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1:])
    return int(value[:-1]) * unit if unit is not None else None


def status_headers(code: grpc.StatusCode, message: str) -> list[tuple[bytes, bytes]]:
    """grpc-status and grpc-message, the message percent-encoded as the gRPC spec asks."""
    headers = [(b"grpc-status", str(code.value[0]).encode())]
    if message:
        headers.append((b"grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode()))
    return headers


def _serialized(handler: grpc.RpcMethodHandler, response: Any) -> bytes:
    """As grpcio: a handler without a serializer returns bytes."""
    return handler.response_serializer(response) if handler.response_serializer else response


SENT, STALLED, GONE = "sent", "stalled", "gone"


def send_within(sock: socket.socket, data: bytes, stall_seconds: float) -> str:
    """Send all of `data` (SENT) unless the peer takes none of it for `stall_seconds` (STALLED) or the
    connection is gone (GONE). Callers hold the connection's lock, which a client that stopped
    reading would otherwise hold for good, and with it every worker that answers on that connection."""
    view = memoryview(data)
    poller = select.poll()
    try:
        poller.register(sock, select.POLLOUT)
    except ValueError:  # closed by the other side of the race: the connection is gone
        return GONE
    while view:
        try:
            view = view[sock.send(view, socket.MSG_DONTWAIT):]
        except BlockingIOError:
            if not poller.poll(stall_seconds * 1000):
                return STALLED
        except OSError:
            return GONE
    return SENT


class _Abort(Exception):
    """Raised by CallContext.abort, as grpcio's abort raises, to unwind the handler."""


class CallContext(grpc.ServicerContext):
    """What a handler sees of its call; the subset of grpcio's context a server can honour here."""

    def __init__(self, metadata: Sequence[tuple[bytes, bytes]], deadline: float | None, peer: str) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._peer = peer
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] | None = []
        self._cancelled = False
        self._code: grpc.StatusCode | None = None
        self._details = ""

    # --- lifecycle, driven by the transport ---

    def finish(self, cancelled: bool = False) -> None:
        """The call ended (answered, or cancelled by the client or the server's stop): run callbacks once."""
        with self._lock:
            callbacks, self._callbacks = self._callbacks, None
            self._cancelled = self._cancelled or cancelled
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("a call's termination callback failed")

    # --- grpc.ServicerContext ---

    def cancelled(self) -> bool:
        return self._cancelled

    def is_active(self) -> bool:
        if self._cancelled or self._callbacks is None:
            return False
        return self._deadline is None or time.monotonic() < self._deadline

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancel(self) -> None:
        self.finish(cancelled=True)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self._metadata
            if not name.startswith(b":") and name not in (b"te", b"content-type", b"grpc-timeout")
        )

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def set_compression(self, compression: grpc.Compression) -> None:
        if compression != grpc.Compression.NoCompression:
            raise NotImplementedError("dockershim-py sends uncompressed messages only")

    def send_initial_metadata(self, initial_metadata: Any) -> None:
        raise NotImplementedError("dockershim-py's handlers send no custom metadata")

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        raise NotImplementedError("dockershim-py's handlers send no custom metadata")

    def trailing_metadata(self) -> None:
        return None

    def abort(self, code: grpc.StatusCode, details: str) -> None:  # type: ignore[override]
        if code == grpc.StatusCode.OK:
            code = grpc.StatusCode.UNKNOWN  # as grpcio: abort never ends a call well
        self._code, self._details = code, details
        raise _Abort(details)

    def abort_with_status(self, status: Any) -> None:  # type: ignore[override]
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def disable_next_message_compression(self) -> None:
        pass


class _Call:
    __slots__ = ("stream_id", "path", "handler", "context", "body", "headers_sent", "queued_at")

    def __init__(self, stream_id: int, path: str, handler: grpc.RpcMethodHandler, context: CallContext) -> None:
        self.stream_id = stream_id
        self.path = path
        self.handler = handler
        self.context = context
        self.body = bytearray()
        self.headers_sent = False
        self.queued_at = 0.0


class _Connection:
    """One client connection: its reader thread and the calls open on it."""

    def __init__(self, server: GrpcServer, sock: socket.socket, peer: str) -> None:
        self._server = server
        self._socket = sock
        self._peer = peer
        self._http = http2.ServerConnection()
        self._lock = threading.Condition()
        self._calls: dict[int, _Call] = {}
        self._send_locked()

    def serve(self) -> None:
        try:
            while True:
                try:
                    data = self._socket.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                with self._lock:
                    try:
                        events = self._http.receive(data)
                    except http2.ProtocolError as exc:
                        log.warning("closing a gRPC connection from %s: %s", self._peer, exc)
                        self._send_locked()
                        break
                    ready: list[_Call] = []
                    cancelled: list[_Call] = []
                    for event in events:
                        self._on_event(event, ready, cancelled)
                    self._send_locked()
                    self._lock.notify_all()
                for call in cancelled:  # callbacks run outside the lock: they may take their time
                    call.context.finish(cancelled=True)
                for call in ready:
                    self._server.dispatch(self, call)
        finally:
            self._close()

    def drain(self) -> None:
        """GOAWAY: open calls finish, new ones are refused."""
        with self._lock:
            self._http.go_away()
            self._send_locked()

    def abort(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- the reader's side ---

    def _on_event(self, event: http2.Event, ready: list[_Call], cancelled: list[_Call]) -> None:
        """Adds a call this event completed to `ready`, one it cancelled to `cancelled`."""
        call: _Call | None
        if isinstance(event, http2.RequestReceived):
            call = self._open(event.stream_id, event.headers)
            if call is not None and event.ended and self._complete(call):
                ready.append(call)
        elif isinstance(event, http2.DataReceived):
            call = self._calls.get(event.stream_id)
            if call is None:
                return
            call.body += event.data
            if len(call.body) > self._server.max_message_bytes + _PREFIX.size:
                self._fail_locked(call, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"request larger than the {self._server.max_message_bytes} bytes allowed")
            elif event.ended and self._complete(call):
                ready.append(call)
        elif isinstance(event, http2.StreamReset):
            call = self._calls.pop(event.stream_id, None)
            if call is not None:
                cancelled.append(call)

    def _open(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> _Call | None:
        fields = dict(headers)
        if fields.get(b":method") != b"POST" or not fields.get(b"content-type", b"").startswith(b"application/grpc"):
            self._http.send_headers(stream_id, [(b":status", b"415")], end_stream=True)
            return None
        path = fields.get(b":path", b"").decode("utf-8", "replace")
        handler = self._server.handlers.get(path)
        timeout = parse_timeout(fields[b"grpc-timeout"]) if b"grpc-timeout" in fields else None
        deadline = None if timeout is None else time.monotonic() + timeout
        call = _Call(stream_id, path, handler, CallContext(headers, deadline, self._peer))  # type: ignore[arg-type]
        if handler is None:
            self._answer_locked(call, None, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {path}")
            return None
        self._calls[stream_id] = call
        return call

    def _complete(self, call: _Call) -> bool:
        """Whether the whole request is one uncompressed message; if not, the call is answered."""
        body = call.body
        if len(body) < _PREFIX.size:
            self._fail_locked(call, grpc.StatusCode.INTERNAL, f"{call.path}: the request message is missing")
            return False
        compressed, size = _PREFIX.unpack_from(body)
        if compressed:
            self._fail_locked(call, grpc.StatusCode.UNIMPLEMENTED, "compressed requests are not supported")
            return False
        if size != len(body) - _PREFIX.size:
            self._fail_locked(call, grpc.StatusCode.INTERNAL, f"{call.path}: a unary request must be one message")
            return False
        return True

    def _fail_locked(self, call: _Call, code: grpc.StatusCode, message: str) -> None:
        self._calls.pop(call.stream_id, None)
        self._answer_locked(call, None, code, message)

    # --- the worker's side ---

    def answer(self, call: _Call, message: bytes | None, code: grpc.StatusCode, details: str) -> None:
        with self._lock:
            self._calls.pop(call.stream_id, None)
            self._answer_locked(call, message, code, details)
            self._send_locked()
        call.context.finish()

    def send_message(self, call: _Call, message: bytes) -> bool:
        """One message of a server stream; waits while the client lags. False once the call is gone,
        or ended here: a client whose flow control window stays shut for SEND_STALL_SECONDS (it
        reads nothing, yet keeps its connection) would hold the worker and the backlog for good."""
        with self._lock:
            if call.stream_id not in self._calls or not self._http.is_open(call.stream_id):
                return False
            if not call.headers_sent:
                self._http.send_headers(call.stream_id, _RESPONSE_HEADERS)
                call.headers_sent = True
            self._http.send_data(call.stream_id, _PREFIX.pack(0, len(message)) + message)
            self._send_locked()
            pending, progress_at = self._http.pending(call.stream_id), time.monotonic()
            while pending > STREAM_BACKLOG_BYTES:
                if call.stream_id not in self._calls:
                    return False
                self._lock.wait(1.0)
                now, before, pending = time.monotonic(), pending, self._http.pending(call.stream_id)
                if pending < before:
                    progress_at = now
                elif now - progress_at > SEND_STALL_SECONDS:
                    self._calls.pop(call.stream_id, None)
                    self._http.reset(call.stream_id, http2.CANCEL)
                    self._send_locked()
                    log.warning("%s from %s: the client read nothing for %.0fs; its stream is ended",
                                call.path, self._peer, SEND_STALL_SECONDS)
                    break
            else:
                return call.stream_id in self._calls
        call.context.finish(cancelled=True)
        return False

    def _answer_locked(self, call: _Call, message: bytes | None, code: grpc.StatusCode, details: str) -> None:
        http = self._http
        if message is not None or call.headers_sent:
            if not call.headers_sent:
                http.send_headers(call.stream_id, _RESPONSE_HEADERS)
            if message is not None:
                http.send_data(call.stream_id, _PREFIX.pack(0, len(message)) + message)
            http.send_headers(call.stream_id, status_headers(code, details), end_stream=True)
        else:  # trailers-only: nothing was sent on this stream yet
            http.send_headers(call.stream_id, _RESPONSE_HEADERS + status_headers(code, details), end_stream=True)

    def _send_locked(self) -> None:
        out = self._http.data_to_send()
        outcome = send_within(self._socket, out, SEND_STALL_SECONDS) if out else SENT
        if outcome == STALLED:
            log.warning("closing the gRPC connection from %s: it took nothing we sent for %gs",
                        self._peer, SEND_STALL_SECONDS)
        if outcome != SENT:  # a client that closed its connection needs no word in the log
            self.abort()

    def _close(self) -> None:
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            self._lock.notify_all()
        for call in calls:
            call.context.finish(cancelled=True)
        self._socket.close()
        self._server.forget(self)


class GrpcServer:
    """Serves `handlers` ("/package.Service/Method" -> RpcMethodHandler) on listening sockets."""

    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler], workers: int, max_message_bytes: int,
                 inline_paths: frozenset[str] = frozenset(), long_paths: frozenset[str] = frozenset(),
                 stop_paths: frozenset[str] = frozenset()) -> None:
        """`inline_paths`: read-only unary methods tried on the connection's thread first (see inline).
        `long_paths`: methods that may run as long as their callers let them, served by `workers`
        threads of their own: 32 ExecSync probes sleeping at once held up Version by 5 s.
        `stop_paths`: stops, which wait out a grace period whether the caller waits or not, served
        by STOP_WORKERS_PER_WORKER times as many threads of their own: a node drained of pods that
        ignore SIGTERM stops hundreds of containers at once, and 33 such stops held every worker."""
        self.handlers = handlers
        self._inline_paths = inline_paths
        self.max_message_bytes = max_message_bytes
        self._pools = {
            "calls": futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cri"),
            "long": futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cri-long"),
            "stops": futures.ThreadPoolExecutor(max_workers=workers * STOP_WORKERS_PER_WORKER,
                                                thread_name_prefix="cri-stop"),
        }
        self._queued = {name: telemetry.GRPC_QUEUED_SECONDS.labels(name) for name in self._pools}
        self._pool_of_path = {**{path: "long" for path in long_paths}, **{path: "stops" for path in stop_paths}}
        self._lock = threading.Condition()
        self._listeners: list[socket.socket] = []
        self._connections: set[_Connection] = set()
        self._running = 0
        self._numbers = itertools.count(1)
        self._stopping = threading.Event()

    def serve(self, listener: socket.socket, peer_prefix: str) -> None:
        self._listeners.append(listener)
        threading.Thread(target=self._accept, args=(listener, peer_prefix), name="grpc-accept", daemon=True).start()

    def stop(self, grace: float) -> None:
        """Refuse new calls, give the open ones `grace` seconds, then cancel what is left."""
        self._stopping.set()
        for listener in self._listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.drain()
        deadline = time.monotonic() + grace
        with self._lock:
            while self._running and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            connections = list(self._connections)
        for connection in connections:
            connection.abort()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def dispatch(self, connection: _Connection, call: _Call) -> None:
        with self._lock:
            self._running += 1
        if call.path in self._inline_paths and self._answered_inline(connection, call):
            return
        pool_name = self._pool_of_path.get(call.path, "calls")
        pool, queued = self._pools[pool_name], self._queued[pool_name]
        call.queued_at = time.monotonic()
        try:
            pool.submit(self._run, connection, call, queued)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._finished()
            connection.answer(call, None, grpc.StatusCode.UNAVAILABLE, "dockershim-py is shutting down")

    def forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _accept(self, listener: socket.socket, peer_prefix: str) -> None:
        while True:
            try:
                sock, address = listener.accept()
            except OSError as exc:
                if self._stopping.is_set() or listener.fileno() == -1:
                    return
                # Out of file descriptors, or a client gone before it was taken: the next may be fine.
                log.warning("accepting a gRPC connection failed (%s); trying again", exc)
                self._stopping.wait(ACCEPT_RETRY_SECONDS)
                continue
            peer = f"{peer_prefix}:{address[0]}:{address[1]}" if isinstance(address, tuple) else f"{peer_prefix}:"
            connection = _Connection(self, sock, peer)
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=connection.serve, name=f"grpc-conn-{next(self._numbers)}", daemon=True).start()

    def _answered_inline(self, connection: _Connection, call: _Call) -> bool:
        """Whether the call was answered here, on the connection's thread; False: it would wait."""
        try:
            with inline.attempt():
                self._handle(connection, call)
        except inline.WouldWait:
            return False
        except Exception:
            log.exception("%s failed in the transport", call.path)
            connection.answer(call, None, grpc.StatusCode.INTERNAL, f"{call.path}: internal error in dockershim-py")
        self._finished()
        return True

    def _run(self, connection: _Connection, call: _Call, queued: Histogram) -> None:
        queued.observe(time.monotonic() - call.queued_at)
        try:
            self._handle(connection, call)
        except Exception:  # never lose a call: the client must get a status
            log.exception("%s failed in the transport", call.path)
            connection.answer(call, None, grpc.StatusCode.INTERNAL, f"{call.path}: internal error in dockershim-py")
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._running -= 1
            if not self._running:
                self._lock.notify_all()

    def _handle(self, connection: _Connection, call: _Call) -> None:
        handler, context = call.handler, call.context
        if context.cancelled():  # the client reset the stream while the call waited: nobody hears it
            connection.answer(call, None, grpc.StatusCode.CANCELLED, f"{call.path}: cancelled by the client")
            return
        if context.time_remaining() == 0:  # as grpcio, a call past its deadline is not run
            connection.answer(call, None, grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"{call.path}: the deadline passed before dockershim-py could take the call")
            return
        try:
            message = bytes(call.body[_PREFIX.size:])
            request = handler.request_deserializer(message) if handler.request_deserializer else message
        except Exception as exc:
            connection.answer(call, None, grpc.StatusCode.INTERNAL, f"{call.path}: unparsable request: {exc}")
            return
        if handler.unary_unary is not None:
            self._unary(connection, call, handler, context, request)
        elif handler.unary_stream is not None:
            self._server_stream(connection, call, handler, context, request)
        else:
            connection.answer(call, None, grpc.StatusCode.UNIMPLEMENTED, f"{call.path}: client streaming is not served")

    def _unary(self, connection: _Connection, call: _Call, handler: grpc.RpcMethodHandler,
               context: CallContext, request: Any) -> None:
        try:
            response = handler.unary_unary(request, context)
        except Exception as exc:
            self._failed(connection, call, context, exc)
            return
        code = context.code()
        if code is not None and code != grpc.StatusCode.OK:  # set_code without abort
            connection.answer(call, None, code, context.details())
            return
        message = _serialized(handler, response)
        if len(message) > self.max_message_bytes:
            connection.answer(call, None, grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{call.path}: a response of {len(message)} bytes is over the {self.max_message_bytes} allowed")
            return
        connection.answer(call, message, grpc.StatusCode.OK, "")

    def _server_stream(self, connection: _Connection, call: _Call, handler: grpc.RpcMethodHandler,
                       context: CallContext, request: Any) -> None:
        responses: Iterator[Any] = iter(())
        try:
            responses = handler.unary_stream(request, context)
            for response in responses:
                message = _serialized(handler, response)
                if len(message) > self.max_message_bytes:  # the client would refuse it, and say less
                    connection.answer(call, None, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      f"{call.path}: a stream message of {len(message)} bytes is over the "
                                      f"{self.max_message_bytes} allowed")
                    return
                if not connection.send_message(call, message):
                    return  # the client went away; the context's callbacks have run
        except Exception as exc:
            self._failed(connection, call, context, exc)
            return
        finally:
            close = getattr(responses, "close", None)
            if close is not None:
                close()
        connection.answer(call, None, context.code() or grpc.StatusCode.OK, context.details())

    @staticmethod
    def _failed(connection: _Connection, call: _Call, context: CallContext, exc: Exception) -> None:
        """The status of a handler that aborted, or raised (UNKNOWN, as grpcio answers)."""
        if isinstance(exc, _Abort):
            connection.answer(call, None, context.code() or grpc.StatusCode.UNKNOWN, context.details())
            return
        log.error("%s raised", call.path, exc_info=exc)
        connection.answer(call, None, grpc.StatusCode.UNKNOWN, f"Exception calling application: {exc}")

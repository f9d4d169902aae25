"""Port forward sessions: connections to localhost:<port> inside a pod's network namespace.

Three client framings, one behaviour:

- SPDY (`portforward.k8s.io`): every forwarded connection is a pair of streams, data and
  error, that share a `requestid` header (or, from clients older than Kubernetes 1.4, stream ids
  two apart). A pair not complete within the stream-creation timeout gets an error and is dropped.
- SPDY tunnelled in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, crictl's and
  newer kubectl's WebSocket mode): the same, inside `websocket.WebSocketSession`.
- WebSocket channels (`v4.channel.k8s.io`, base64, or none): one connection per requested port,
  made at once, on channels 2i (data) and 2i+1 (error), each announced by the port in two bytes.

Connections are made without forking: a short-lived thread enters the sandbox's network
namespace with setns(2), creates and connects the socket there, and hands it back; a socket keeps
the namespace it was made in. 127.0.0.1 is tried, then ::1, so IPv6-only servers are reached
too (cri-dockerd ran `nsenter ... socat TCP4:localhost:PORT` per connection, IPv4 only).

Ending a connection follows socat's and containerd's rule: an end of data from either side is
passed on as a half-close; once the pod has finished sending, the client has `GRACE_SECONDS` to
finish too before both sides are closed (kubectl waits for the error stream to end before it
closes its end, so waiting longer would hang every request-response exchange). Errors reach the
client on the error stream as the kubelet words them; only a reset or a broken pipe keeps the
session open (`closeConnection` false).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from . import spdy
from .channels import (
    ChannelData,
    ChannelProtocolError,
    PortForwardStream,
    STREAM_TYPE_DATA,
    port_channels,
    port_forward_error,
    port_forward_stream,
    port_prefix,
)
from .loop import CLIENT_QUEUE_LIMIT, HIGH_WATER, Loop, Pipe, Timer
from .websocket import Closed, TunnelData, WebSocketSession

log = logging.getLogger(__name__)

GRACE_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 10.0
LINGER_SECONDS = 2.0
# Forwarded connections one session may hold at once (two SPDY streams each): a bound on what one
# client can make the shim hold, well above what a `kubectl port-forward` of a web page opens.
MAX_CONNECTIONS = 1024
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class PortForward:
    """A port forward request as its RPC checked it; the token in the URL stands for it."""

    sandbox_id: str
    ports: tuple[int, ...] = ()
    action: ClassVar[str] = "portforward"


# Connecting inside a network namespace ---------------------------------------------------------


def connect_in_namespace(netns_fd: int, port: int, timeout: float = CONNECT_TIMEOUT_SECONDS) -> socket.socket:
    """A TCP connection to localhost:`port` in the namespace of `netns_fd`, IPv4 first, then IPv6.

    Call it on a thread of its own that ends afterwards: setns(2) moves the calling thread.
    """
    if _libc.setns(netns_fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"cannot enter the pod's network namespace: {os.strerror(code)}")
    failures = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            failures.append(f"{'IPv4' if family == socket.AF_INET else 'IPv6'}: {exc.strerror or exc}")
            continue
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
        except OSError as exc:
            sock.close()
            failures.append(f"{'IPv4' if family == socket.AF_INET else 'IPv6'}: {exc.strerror or exc}")
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise ConnectionRefusedError(errno.ECONNREFUSED, f"failed to connect to localhost:{port} inside the pod's "
                                                     f"network namespace ({'; '.join(failures)})")


# Connections being made at once, over every session: a thread each, for up to the connect
# timeout (one session against a listener that never accepts made 300).
MAX_CONNECTING = 128
_connecting = threading.BoundedSemaphore(MAX_CONNECTING)


def connect_in_background(netns_fd: int, port: int, done: Callable[[socket.socket | OSError], None]) -> None:
    """Connect on a new thread (the setns stays there) and hand `done` the socket or the error.

    The thread works on its own duplicate of `netns_fd`, so the caller may close its own at any time.
    """
    if not _connecting.acquire(blocking=False):
        done(OSError(errno.EAGAIN, f"{MAX_CONNECTING} connections into pods are being made already"))
        return
    own_fd = os.dup(netns_fd)

    def run() -> None:
        try:
            result: socket.socket | OSError = connect_in_namespace(own_fd, port)
        except OSError as exc:
            result = exc
        finally:
            os.close(own_fd)
            _connecting.release()
        done(result)

    try:
        threading.Thread(target=run, name=f"portforward-connect-{port}", daemon=True).start()
    except RuntimeError as exc:  # no thread to be had: this connection fails, the session goes on
        os.close(own_fd)
        _connecting.release()
        done(OSError(errno.EAGAIN, f"cannot start a thread to connect: {exc}"))


# Events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """A forwarded connection to `port` is wanted; `key` names it from now on."""
    key: str
    port: int


@dataclass(frozen=True)
class Data:
    key: str
    data: bytes
    stream_id: int = 0  # the SPDY stream to acknowledge the data on


@dataclass(frozen=True)
class DataEnd:
    """The client has finished sending on this connection."""
    key: str


@dataclass(frozen=True)
class Abort:
    """The client reset this connection."""
    key: str


@dataclass(frozen=True)
class Gone:
    reason: str


Event = Connect | Data | DataEnd | Abort | Gone


# SPDY --------------------------------------------------------------------------------------------


@dataclass
class _Pair:
    request_id: str
    port: int = 0
    data_stream: int = 0
    error_stream: int = 0
    connected: bool = False
    timer: Timer | None = field(default=None, repr=False)


class SpdyForwards:
    """The server side of a SPDY port forward (sans-IO, but for the stream-creation timers)."""

    def __init__(self, loop: Loop, creation_timeout: float) -> None:
        self._conn = spdy.Connection(client_side=False)
        self._loop = loop
        self._creation_timeout = creation_timeout
        self._pairs: dict[str, _Pair] = {}
        self._stream_pair: dict[int, str] = {}
        # Called when a timer queued output (the session flushes it to the client).
        self.on_output: Callable[[], None] = lambda: None

    def initial_events(self) -> list[Event]:
        return []

    def receive_data(self, data: bytes | None) -> list[Event]:
        if data is None:
            return [Gone("the client closed the connection")]
        events: list[Event] = []
        for event in self._conn.receive_data(data):
            if isinstance(event, spdy.StreamOpened):
                self._on_stream(event, events)
            elif isinstance(event, spdy.DataReceived):
                self._on_data(event, events)
            elif isinstance(event, spdy.StreamReset):
                key = self._stream_pair.get(event.stream_id)
                if key is not None and self._pairs[key].connected:
                    events.append(Abort(key))
                elif key is not None:
                    self._drop(key)
            elif isinstance(event, spdy.ProtocolError):
                events.append(Gone(f"SPDY protocol error: {event.message}"))
        return events

    def _on_stream(self, event: spdy.StreamOpened, events: list[Event]) -> None:
        if event.unidirectional:  # a port's data flows both ways: a stream we cannot answer on is no use
            self._conn.reset_stream(event.stream_id, spdy.RstStatus.PROTOCOL_ERROR)
            return
        try:
            stream = port_forward_stream(event.headers, event.stream_id)
        except ChannelProtocolError as exc:
            log.info("refusing port forward stream %d: %s", event.stream_id, exc)
            self._conn.reset_stream(event.stream_id, spdy.RstStatus.PROTOCOL_ERROR)
            return
        # Counted by connection: a connection's second stream is never refused once its first has a slot.
        if stream.request_id not in self._pairs and len(self._pairs) >= MAX_CONNECTIONS:
            self._conn.reset_stream(event.stream_id, spdy.RstStatus.REFUSED_STREAM)
            return
        self._conn.reply(event.stream_id)
        pair = self._pairs.get(stream.request_id)
        if pair is None:
            pair = self._pairs[stream.request_id] = _Pair(stream.request_id)
            pair.timer = self._loop.call_later(self._creation_timeout, lambda: self._timed_out(stream.request_id))
        if not self._add(pair, stream, event.stream_id):
            return
        if pair.data_stream and pair.error_stream:
            if pair.timer is not None:
                pair.timer.cancel()
            pair.connected = True
            events.append(Connect(pair.request_id, pair.port))

    def _add(self, pair: _Pair, stream: PortForwardStream, stream_id: int) -> bool:
        is_data = stream.stream_type == STREAM_TYPE_DATA
        if pair.data_stream if is_data else pair.error_stream:
            message = (f"error processing stream for request {pair.request_id}: "
                       f"{stream.stream_type} stream already assigned")
            self._error_text(pair, message.encode())
            self._conn.reset_stream(stream_id, spdy.RstStatus.PROTOCOL_ERROR)
            return False
        if is_data:
            pair.data_stream, pair.port = stream_id, stream.port
        else:
            pair.error_stream = stream_id
        self._stream_pair[stream_id] = pair.request_id
        return True

    def _on_data(self, event: spdy.DataReceived, events: list[Event]) -> None:
        key = self._stream_pair.get(event.stream_id)
        pair = self._pairs.get(key) if key is not None else None
        if pair is None or event.stream_id != pair.data_stream or not pair.connected:
            self._conn.acknowledge_received_data(event.stream_id, len(event.data))
            return
        if event.data:
            events.append(Data(pair.request_id, event.data, event.stream_id))
        if event.fin:
            events.append(DataEnd(pair.request_id))

    def _timed_out(self, key: str) -> None:
        pair = self._pairs.get(key)
        if pair is not None and not pair.connected:
            log.info("port forward request %s: timed out waiting for its streams", key)
            self._error_text(pair, f"(request={key}) timed out waiting for streams".encode())
            self._drop(key)
            self.on_output()

    def acknowledge(self, stream_id: int, size: int) -> None:
        self._conn.acknowledge_received_data(stream_id, size)

    def send(self, key: str, data: bytes) -> None:
        pair = self._pairs.get(key)
        if pair is not None:
            self._send(pair.data_stream, data)

    def end_data(self, key: str) -> None:
        """The pod finished sending: finish the data stream."""
        pair = self._pairs.get(key)
        if pair is not None:
            self._send(pair.data_stream, b"", fin=True)

    def finish(self, key: str, error: str | None = None, close_connection: bool = False) -> None:
        """The forward is over: report `error`, if any, and finish both streams."""
        pair = self._pairs.get(key)
        if pair is None:
            return
        if error is not None:
            self._send(pair.error_stream, port_forward_error(error, close_connection=close_connection))
        self._drop(key)

    def close(self) -> None:
        self._conn.goaway()

    @property
    def done(self) -> bool:
        """A SPDY session lasts until the client leaves."""
        return False

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def _drop(self, key: str) -> None:
        pair = self._pairs.pop(key)
        if pair.timer is not None:
            pair.timer.cancel()
        for stream_id in (pair.data_stream, pair.error_stream):
            if stream_id:
                self._send(stream_id, b"", fin=True)
                self._stream_pair.pop(stream_id, None)

    def _error_text(self, pair: _Pair, message: bytes) -> None:
        if pair.error_stream:
            self._send(pair.error_stream, message)

    def _send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        try:
            self._conn.send_data(stream_id, data, fin=fin)
        except spdy.StreamClosedError:
            pass


class TunnelledSpdyForwards(SpdyForwards):
    """SPDY port forward carried in WebSocket binary messages, with no second handshake."""

    def __init__(self, session: WebSocketSession, loop: Loop, creation_timeout: float) -> None:
        super().__init__(loop, creation_timeout)
        self._session = session

    def receive_data(self, data: bytes | None) -> list[Event]:
        events: list[Event] = []
        for event in self._session.receive_data(data):
            if isinstance(event, TunnelData):
                events += super().receive_data(event.data)
            elif isinstance(event, Closed):
                events.append(Gone(f"WebSocket closed ({event.code})"))
        return events

    def close(self) -> None:
        super().close()
        self._session.send_tunnel(super().data_to_send())
        self._session.close()

    def data_to_send(self) -> bytes:
        self._session.send_tunnel(super().data_to_send())
        return self._session.data_to_send()


# WebSocket channels ------------------------------------------------------------------------------


class WebSocketForwards:
    """The server side of a WebSocket channel port forward (sans-IO): one connection per port."""

    def __init__(self, session: WebSocketSession, ports: tuple[int, ...]) -> None:
        self._session = session
        self._ports = ports
        self._open = set(range(len(ports)))
        for index, port in enumerate(ports):
            for channel in port_channels(index):
                session.send(channel, port_prefix(port))

    def initial_events(self) -> list[Event]:
        return [Connect(str(index), port) for index, port in enumerate(self._ports)]

    def receive_data(self, data: bytes | None) -> list[Event]:
        events: list[Event] = []
        for event in self._session.receive_data(data):
            if isinstance(event, Closed):
                events.append(Gone(f"WebSocket closed ({event.code})"))
            elif isinstance(event, ChannelData) and event.channel % 2 == 0 and event.data:
                index = event.channel // 2
                if index in self._open:
                    events.append(Data(str(index), event.data))
        return events

    def acknowledge(self, stream_id: int, size: int) -> None:
        """WebSocket has no flow control of its own; TCP's is enough."""

    def send(self, key: str, data: bytes) -> None:
        if int(key) in self._open:
            self._session.send(port_channels(int(key))[0], data)

    def end_data(self, key: str) -> None:
        """Channels have no half-close: the end shows when the forward finishes."""

    def finish(self, key: str, error: str | None = None, close_connection: bool = False) -> None:
        index = int(key)
        if index not in self._open:
            return
        self._open.discard(index)
        if error is not None:
            self._session.send(port_channels(index)[1], error.encode())

    def close(self) -> None:
        self._session.close()

    @property
    def done(self) -> bool:
        """Every port's forward is over: the session ends, as the kubelet's does."""
        return not self._open

    def data_to_send(self) -> bytes:
        return self._session.data_to_send()


Forwards = SpdyForwards | WebSocketForwards


# The session -------------------------------------------------------------------------------------


@dataclass
class _Forward:
    port: int
    pipe: Pipe | None = None
    pending: list[tuple[bytes, int]] = field(default_factory=list)
    pending_size: int = 0
    client_done: bool = False
    pod_done: bool = False
    grace: Timer | None = None


class PortForwardSession:
    """One port forward connection from a client: many forwarded connections into one pod."""

    def __init__(self, forwards: Forwards, sandbox_id: str, open_namespace: Callable[[], int]) -> None:
        self._forwards = forwards
        self._sandbox_id = sandbox_id
        self._open_namespace = open_namespace
        self._netns: int | None = None
        self._netns_error = ""
        self._loop: Loop | None = None
        self._client: Pipe | None = None
        self._active: dict[str, _Forward] = {}
        self._closing = False
        # Connections made on other threads, waiting for the loop; once the session has ended,
        # late ones are closed where they arrive.
        self._lock = threading.Lock()
        self._arrived: dict[str, socket.socket | OSError] = {}
        self._ended = False

    def run(self, loop: Loop, client: Pipe, initial: bytes = b"") -> None:
        self._loop, self._client = loop, client
        client.on_data = lambda data: self._handle(self._forwards.receive_data(data))
        client.on_eof = lambda: self._handle([Gone("the client closed the connection")])
        client.on_error = lambda exc: self._handle([Gone(f"connection error: {exc}")])
        client.gate = self._client_may_send
        loop.on_idle = lambda: self._handle([Gone("idle timeout")])
        if isinstance(self._forwards, SpdyForwards):
            self._forwards.on_output = self._flush
        loop.add(client)
        try:
            self._netns = self._open_namespace()
        except Exception as exc:  # noqa: BLE001 - every failure is reported per connection
            self._netns_error = str(exc)
        try:
            self._handle(self._forwards.initial_events())
            if initial:
                self._handle(self._forwards.receive_data(initial))
            loop.run()
        finally:
            with self._lock:
                self._ended = True
                late, self._arrived = list(self._arrived.values()), {}
            for result in late:
                if isinstance(result, socket.socket):
                    result.close()
            for forward in self._active.values():
                if forward.pipe is not None:
                    forward.pipe.close()
            if self._netns is not None:
                os.close(self._netns)
                self._netns = None

    def shutdown(self) -> None:
        self._close()

    def _client_may_send(self) -> bool:
        if self._client is not None and self._client.buffered >= CLIENT_QUEUE_LIMIT:
            return False  # what it sends asks for answers (pings) it does not read
        return all(max(f.pending_size, f.pipe.buffered if f.pipe else 0) < HIGH_WATER
                   for f in self._active.values())

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Gone):
                log.debug("port forward to %s ends: %s", self._sandbox_id[:12], event.reason)
                self._drain()
                return
            if isinstance(event, Connect):
                self._connect(event.key, event.port)
            elif isinstance(event, Data):
                self._data(event)
            elif isinstance(event, DataEnd):
                self._client_end(event.key)
            elif isinstance(event, Abort):
                self._end(event.key)
        self._flush()

    def _connect(self, key: str, port: int) -> None:
        assert self._loop is not None
        if self._netns is None:
            self._forwards.finish(key, self._message(port, self._netns_error), close_connection=True)
            self._maybe_done()
            return
        self._active[key] = _Forward(port)
        connect_in_background(self._netns, port, lambda result: self._arrive(key, result))

    def _arrive(self, key: str, result: socket.socket | OSError) -> None:
        """On the connecting thread: hand the result to the loop, or close it if the session is over."""
        with self._lock:
            if not self._ended:
                assert self._loop is not None
                self._arrived[key] = result
                self._loop.post(self._take_arrivals)
                return
        if isinstance(result, socket.socket):
            result.close()

    def _take_arrivals(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, {}
        for key, result in arrived.items():
            self._connected(key, result)

    def _connected(self, key: str, result: socket.socket | OSError) -> None:
        forward = self._active.get(key)
        if isinstance(result, OSError):
            if forward is not None:
                self._fail(key, result)
                self._flush()
            return
        if forward is None:  # the client gave up meanwhile
            result.close()
            return
        assert self._loop is not None and self._client is not None
        client = self._client
        pipe = Pipe(result, name=f"port {forward.port}",
                    on_data=lambda data: self._pod_data(key, data),
                    on_eof=lambda: self._pod_end(key),
                    on_error=lambda exc: self._fail(key, exc))
        pipe.gate = lambda: client.buffered < HIGH_WATER
        forward.pipe = self._loop.add(pipe)
        for data, stream_id in forward.pending:
            self._write(forward, data, stream_id)
        forward.pending.clear()
        forward.pending_size = 0
        if forward.client_done:
            pipe.shutdown_write()

    def _data(self, event: Data) -> None:
        forward = self._active.get(event.key)
        if forward is None or forward.client_done:
            self._forwards.acknowledge(event.stream_id, len(event.data))
            return
        if forward.pipe is None:
            forward.pending.append((event.data, event.stream_id))
            forward.pending_size += len(event.data)
            return
        self._write(forward, event.data, event.stream_id)

    def _write(self, forward: _Forward, data: bytes, stream_id: int) -> None:
        assert forward.pipe is not None

        def delivered() -> None:
            self._forwards.acknowledge(stream_id, len(data))
            self._flush()

        forward.pipe.write(data, delivered)

    def _client_end(self, key: str) -> None:
        forward = self._active.get(key)
        if forward is None:
            return
        forward.client_done = True
        if forward.pipe is not None:
            forward.pipe.shutdown_write()
        if forward.pod_done:
            self._end(key)

    def _pod_data(self, key: str, data: bytes) -> None:
        self._forwards.send(key, data)
        self._flush()

    def _pod_end(self, key: str) -> None:
        forward = self._active.get(key)
        if forward is None:
            return
        forward.pod_done = True
        self._forwards.end_data(key)
        if forward.client_done:
            self._end(key)
        else:
            assert self._loop is not None
            forward.grace = self._loop.call_later(GRACE_SECONDS, lambda: self._end(key))
        self._flush()

    def _fail(self, key: str, exc: OSError) -> None:
        forward = self._active.get(key)
        if forward is None:
            return
        # A reset or a broken pipe is the pod's doing: other connections carry on (the kubelet's rule).
        keep_session = isinstance(exc, (ConnectionResetError, BrokenPipeError))
        self._end(key, self._message(forward.port, exc.strerror or str(exc)), close_connection=not keep_session)

    def _end(self, key: str, error: str | None = None, close_connection: bool = False) -> None:
        forward = self._active.pop(key, None)
        if forward is None:
            return
        if forward.grace is not None:
            forward.grace.cancel()
        if forward.pipe is not None:
            forward.pipe.close()
        if error is not None:
            log.info("%s", error)
        self._forwards.finish(key, error, close_connection)
        self._maybe_done()
        self._flush()

    def _maybe_done(self) -> None:
        if self._forwards.done:
            self._close()

    def _message(self, port: int, error: str) -> str:
        return f"error forwarding port {port} to pod {self._sandbox_id}, uid : {error}"

    def _close(self) -> None:
        """End the session: GOAWAY or a WebSocket close, then wait briefly for the client to close."""
        if self._closing or self._loop is None or self._client is None:
            return
        self._closing = True
        loop, client = self._loop, self._client
        self._forwards.close()
        self._flush()
        client.shutdown_write()
        client.on_data = lambda data: None
        client.on_eof = loop.stop
        client.on_error = lambda exc: loop.stop()
        client.gate = lambda: True
        loop.call_later(LINGER_SECONDS, loop.stop)

    def _drain(self) -> None:
        """The client left: send it what is queued (the answer to its WebSocket Close), pass on what
        it sent to each pod connection, half-close them, and stop once the client's connection
        and the pods' are closed (at most `LINGER_SECONDS` later).

        The kubelet's copy to the pod also runs to the end of what it read, so an upload followed
        by a close arrives whole.
        """
        assert self._loop is not None and self._client is not None
        loop = self._loop
        pipes = [f.pipe for f in self._active.values() if f.pipe is not None and not f.pipe.closed]
        self._active.clear()
        remaining = [len(pipes) + 1]

        def closed() -> None:
            remaining[0] -= 1
            if not remaining[0]:
                loop.stop()

        self._flush()
        self._client.close_after_sending(closed)
        for pipe in pipes:
            pipe.gate = lambda: True
            pipe.on_data = lambda data: None
            pipe.on_error = lambda exc: closed()
            if pipe.eof:  # the pod has closed already: done once its data is out
                pipe.write(b"", closed)
            else:
                pipe.on_eof = closed
            pipe.shutdown_write()
        loop.call_later(LINGER_SECONDS, loop.stop)

    def _flush(self) -> None:
        if self._client is not None:
            data = self._forwards.data_to_send()
            if data:
                self._client.write(data)

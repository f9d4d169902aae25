"""A streaming client for the tests (unit and integration): SPDY/3.1 and WebSocket, written apart from the server.

The HTTP upgrade, the WebSocket channel framing and the port-forward conventions are coded
here again from the Kubernetes documentation and client-go's behaviour, not imported from
`dockershim_py.streaming`; WebSocket framing is wsproto's client. Only the SPDY frame codec is
shared (`spdy.Connection(client_side=True)`), and crictl tests check that path with client-go.

Every client runs a reader thread that feeds what arrives to the protocol object under a lock;
tests call `wait(predicate)` to block until the state they expect (or fail after a timeout).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from dockershim_py.streaming import spdy

TIMEOUT = 20.0


class Refused(Exception):
    """The server answered the upgrade with something else than 101."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.headers = headers
        self.body = body

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def _connect(url: str, tls: ssl.SSLContext | None = None) -> tuple[socket.socket, str, str]:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
    if parts.scheme == "https":
        assert tls is not None, "an https URL needs a TLS context"
        sock = tls.wrap_socket(sock, server_hostname=parts.hostname)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return sock, parts.netloc, target


def _read_head(sock: socket.socket) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and the bytes after the head of an HTTP response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed during the response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])]
    return int(lines[0].split()[1]), headers, rest


def _read_body(sock: socket.socket, headers: list[tuple[str, str]], rest: bytes) -> bytes:
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), None)
    while length is None or len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    return rest


def http_get(url: str, headers: dict[str, str] | None = None) -> Refused:
    """A plain request; the answer as a `Refused` (status, headers, body)."""
    sock, host, target = _connect(url)
    with sock:
        lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, response_headers, rest = _read_head(sock)
        return Refused(status, response_headers, _read_body(sock, response_headers, rest))


# Transports: raw TCP after a SPDY upgrade, or WebSocket messages -------------------------------


class _Reader:
    """A thread that reads from `recv` and hands data to `feed` under the client's lock."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.eof = False
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, recv: Callable[[], bytes], feed: Callable[[bytes], None]) -> None:
        def run() -> None:
            try:
                while True:
                    data = recv()
                    with self.lock:
                        if data:
                            feed(data)
                        else:
                            self.eof = True
                        self.lock.notify_all()
                    if not data:
                        return
            except (OSError, ValueError) as exc:
                with self.lock:
                    self.error, self.eof = exc, True
                    self.lock.notify_all()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self, sock: socket.socket) -> None:
        """Close `sock` once this thread has left it. A thread still in recv() when its descriptor
        is closed reads from whatever socket gets that number next: once it took the first bytes
        of the next session's TLS handshake, which then failed with WRONG_VERSION_NUMBER."""
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the thread on this connection, with an end
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(TIMEOUT)
        sock.close()

    def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with self.lock:
            if not self.lock.wait_for(predicate, timeout):
                raise TimeoutError(f"condition not met in {timeout}s (eof={self.eof}, error={self.error})")


class WebSocket:
    """wsproto's client over a socket: each message to `on_message`, the close code in `close_code`."""

    def __init__(self, url: str, subprotocols: list[str], tls: ssl.SSLContext | None = None,
                 on_message: Callable[[bytes | str], None] = lambda message: None) -> None:
        self.sock, host, target = _connect(url, tls)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.on_message = on_message
        self.sock.sendall(self.ws.send(Request(host=host, target=target, subprotocols=subprotocols)))
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.reader = _Reader()
        self._parts: list = []
        self._accepted = False
        self._status, self._headers, self._body = 0, [], b""
        with self.reader.lock:
            while not self._accepted:
                self._feed(self.sock.recv(65536))
        self.reader.start(lambda: self.sock.recv(65536), self._feed)

    def _feed(self, data: bytes) -> None:
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.subprotocol, self._accepted = event.subprotocol, True
            elif isinstance(event, RejectConnection):
                self._status, self._headers = event.status_code, [(k.decode(), v.decode()) for k, v in event.headers]
                if not event.has_body:
                    raise Refused(self._status, self._headers, b"")
            elif isinstance(event, RejectData):
                self._body += event.data
                if event.body_finished:
                    raise Refused(self._status, self._headers, self._body)
            elif isinstance(event, (BytesMessage, TextMessage)):
                self._parts.append(event.data)
                if event.message_finished:
                    message = b"".join(self._parts) if isinstance(self._parts[0], bytes) else "".join(self._parts)
                    self._parts = []
                    self.on_message(message)
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                try:
                    self.sock.sendall(self.ws.send(event.response()))
                except Exception:  # noqa: BLE001 - the server may have gone already
                    pass

    def send(self, message: bytes | str) -> None:
        with self.reader.lock:
            event = BytesMessage(data=message) if isinstance(message, bytes) else TextMessage(data=message)
            self.sock.sendall(self.ws.send(event))

    def close(self) -> None:
        with self.reader.lock:
            if self.close_code is None:
                try:
                    self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
                except Exception:  # noqa: BLE001
                    pass
        try:
            self.reader.wait(lambda: self.close_code is not None or self.reader.eof, 5)
        except TimeoutError:
            pass
        self.reader.close(self.sock)


# SPDY ----------------------------------------------------------------------------------------


@dataclass
class _Stream:
    headers: dict[str, str]
    data: bytearray = field(default_factory=bytearray)
    replied: bool = False
    fin: bool = False
    reset: bool = False


class SpdySession:
    """A SPDY client over a raw upgrade (`url` + `protocols`) or a WebSocket tunnel (`tunnel`)."""

    def __init__(self, url: str, protocols: list[str], *, tunnel: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.conn = spdy.Connection(client_side=True)
        self.streams: dict[int, _Stream] = {}
        self.goaway = False
        if tunnel is not None:
            self._ws: WebSocket | None = WebSocket(
                url, [tunnel], tls, on_message=lambda m: self._feed_spdy(m if isinstance(m, bytes) else m.encode()))
            self.reader = self._ws.reader
            self.protocol = self._ws.subprotocol
            return
        self._ws = None
        self.sock, host, target = _connect(url, tls)
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}", "Connection: Upgrade", "Upgrade: SPDY/3.1",
                 *(f"X-Stream-Protocol-Version: {p}" for p in protocols), "Content-Length: 0"]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status, headers, rest = _read_head(self.sock)
        if status != 101:
            raise Refused(status, headers, _read_body(self.sock, headers, rest))
        self.protocol = next((v for k, v in headers if k.lower() == "x-stream-protocol-version"), None)
        self.reader = _Reader()
        with self.reader.lock:
            if rest:
                self._feed_spdy(rest)
        self.reader.start(lambda: self.sock.recv(65536), self._feed_spdy)

    def _feed_spdy(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, spdy.StreamReply):
                self.streams[event.stream_id].replied = True
                self.streams[event.stream_id].fin |= event.fin
            elif isinstance(event, spdy.DataReceived):
                stream = self.streams[event.stream_id]
                stream.data += event.data
                stream.fin |= event.fin
                self.conn.acknowledge_received_data(event.stream_id, len(event.data))
            elif isinstance(event, spdy.StreamReset):
                if event.stream_id in self.streams:
                    self.streams[event.stream_id].reset = True
            elif isinstance(event, spdy.GoAway):
                self.goaway = True
        self._write()

    def _write(self) -> None:
        data = self.conn.data_to_send()
        if not data:
            return
        if self._ws is not None:  # a message per 64 KiB, about what a frame-by-frame writer sends
            for start in range(0, len(data), 64 * 1024):
                self._ws.sock.sendall(self._ws.ws.send(BytesMessage(data=data[start:start + 64 * 1024])))
        else:
            self.sock.sendall(data)

    def open(self, headers: dict[str, str], wait_reply: bool = True) -> int:
        with self.reader.lock:
            stream_id = self.conn.open_stream(headers)
            self.streams[stream_id] = _Stream(headers)
            self._write()
        if wait_reply:
            self.wait(lambda: self.streams[stream_id].replied or self.streams[stream_id].reset)
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        with self.reader.lock:
            self.conn.send_data(stream_id, data, fin=fin)
            self._write()

    def wait(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        self.reader.wait(predicate, timeout)

    @property
    def eof(self) -> bool:
        return self.reader.eof

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        else:
            self.reader.close(self.sock)


# Remote command ------------------------------------------------------------------------------


STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    error: bytes

    @property
    def status(self) -> dict:
        return json.loads(self.error)


def resize_message(width: int, height: int) -> bytes:
    return json.dumps({"Width": width, "Height": height}).encode()


class SpdyExec:
    """A remote command over SPDY, opening streams in client-go's order: error, stdin, stdout, stderr, resize."""

    def __init__(self, url: str, protocol: str, *, stdin: bool, stdout: bool = True, stderr: bool = True,
                 tty: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.session = SpdySession(url, [protocol], tls=tls)
        self.ids: dict[str, int] = {}
        wanted = ["error"] + [name for name, on in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr),
                                                    ("resize", tty and protocol not in ("channel.k8s.io",
                                                                                        "v2.channel.k8s.io")))
                              if on]
        for name in wanted:
            self.ids[name] = self.session.open({"streamtype": name})

    def write(self, data: bytes) -> None:
        self.session.send(self.ids["stdin"], data)

    def close_stdin(self) -> None:
        self.session.send(self.ids["stdin"], b"", fin=True)

    def resize(self, width: int, height: int) -> None:
        self.session.send(self.ids["resize"], resize_message(width, height))

    def output(self, name: str = "stdout") -> bytes:
        with self.session.reader.lock:
            return bytes(self.session.streams[self.ids[name]].data) if name in self.ids else b""

    def wait_output(self, needle: bytes, name: str = "stdout", timeout: float = TIMEOUT) -> None:
        self.session.wait(lambda: needle in self.session.streams[self.ids[name]].data, timeout)

    def finish(self, timeout: float = TIMEOUT) -> Outcome:
        """Wait for the error stream's end (the server's last word), then the rest."""
        streams = self.session.streams
        self.session.wait(lambda: streams[self.ids["error"]].fin or self.session.eof, timeout)
        self.session.wait(lambda: all(streams[self.ids[n]].fin for n in ("stdout", "stderr") if n in self.ids)
                          or self.session.eof, timeout)
        outcome = Outcome(self.output("stdout"), self.output("stderr"), self.output("error"))
        self.session.close()
        return outcome


class WsExec:
    """A remote command over WebSocket channels, framed here from the channel.k8s.io description."""

    def __init__(self, url: str, protocol: str, *, stdin: bool, stdout: bool = True, stderr: bool = True,
                 tty: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.base64 = "base64" in protocol
        self.protocol = protocol
        self.channels: dict[int, bytearray] = defaultdict(bytearray)
        self.first: list[int] = []
        self.ws = WebSocket(url, [protocol] if protocol else [], tls, on_message=self._on_message)

    def _on_message(self, message: bytes | str) -> None:
        raw = message.encode() if isinstance(message, str) else message
        channel, payload = (raw[0] - ord("0"), base64.b64decode(raw[1:])) if self.base64 else (raw[0], raw[1:])
        if not self.first:
            self.first.append(channel)
        self.channels[channel] += payload

    def _send(self, channel: int, data: bytes) -> None:
        if self.base64:
            self.ws.send(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            self.ws.send(bytes([channel]) + data)

    def write(self, data: bytes) -> None:
        for start in range(0, len(data), 32 * 1024):  # client-go copies stdin 32 KiB at a time
            self._send(STDIN, data[start:start + 32 * 1024])

    def close_stdin(self) -> None:
        assert self.protocol.startswith("v5"), "only v5 has a close signal"
        self.ws.send(bytes([255, STDIN]))

    def resize(self, width: int, height: int) -> None:
        self._send(RESIZE, resize_message(width, height))

    def output(self, name: str = "stdout") -> bytes:
        with self.ws.reader.lock:
            return bytes(self.channels[{"stdout": STDOUT, "stderr": STDERR, "error": ERROR}[name]])

    def wait_output(self, needle: bytes, name: str = "stdout", timeout: float = TIMEOUT) -> None:
        channel = {"stdout": STDOUT, "stderr": STDERR, "error": ERROR}[name]
        self.ws.reader.wait(lambda: needle in self.channels[channel], timeout)

    def finish(self, timeout: float = TIMEOUT) -> Outcome:
        self.ws.reader.wait(lambda: self.ws.close_code is not None or self.ws.reader.eof, timeout)
        outcome = Outcome(self.output("stdout"), self.output("stderr"), self.output("error"))
        self.ws.close()
        return outcome


# Port forward --------------------------------------------------------------------------------


class SpdyForward:
    """Port forward over SPDY (or SPDY in WebSocket): one stream pair per connection, as client-go opens them."""

    def __init__(self, url: str, *, tunnel: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.session = SpdySession(url, ["portforward.k8s.io"],
                                   tunnel="SPDY/3.1+portforward.k8s.io" if tunnel else None, tls=tls)
        self._next_request = 0

    def connect(self, port: int) -> tuple[int, int]:
        """(data stream, error stream) of a new forwarded connection."""
        request_id = str(self._next_request)
        self._next_request += 1
        headers = {"port": str(port), "requestid": request_id}
        error = self.session.open({**headers, "streamtype": "error"})
        self.session.send(error, b"", fin=True)  # client-go never writes on the error stream
        data = self.session.open({**headers, "streamtype": "data"})
        return data, error

    def send(self, data_stream: int, data: bytes, fin: bool = False) -> None:
        view = memoryview(data)
        for start in range(0, len(view), 1 << 20):
            self.session.send(data_stream, bytes(view[start:start + (1 << 20)]))
        if fin:
            self.session.send(data_stream, b"", fin=True)

    def received(self, stream_id: int) -> bytes:
        with self.session.reader.lock:
            return bytes(self.session.streams[stream_id].data)

    def wait_end(self, stream_id: int, timeout: float = TIMEOUT) -> bytes:
        stream = self.session.streams[stream_id]
        self.session.wait(lambda: stream.fin or stream.reset or self.session.eof, timeout)
        return self.received(stream_id)

    def close(self) -> None:
        self.session.close()


class WsForward:
    """Port forward over WebSocket channels: the ports come from the URL (or the RPC)."""

    def __init__(self, url: str, protocol: str, tls: ssl.SSLContext | None = None) -> None:
        self.base64 = "base64" in protocol
        self.channels: dict[int, bytearray] = defaultdict(bytearray)
        self.prefixes: dict[int, bytes] = {}
        self.ws = WebSocket(url, [protocol] if protocol else [], tls, on_message=self._on_message)

    def _on_message(self, message: bytes | str) -> None:
        raw = message.encode() if isinstance(message, str) else message
        channel, payload = (raw[0] - ord("0"), base64.b64decode(raw[1:])) if self.base64 else (raw[0], raw[1:])
        if channel not in self.prefixes:  # each channel starts with its port, little-endian
            self.prefixes[channel], payload = payload[:2], payload[2:]
        self.channels[channel] += payload

    def send(self, index: int, data: bytes) -> None:
        view = memoryview(data)
        for start in range(0, len(view), 256 * 1024):
            chunk = bytes(view[start:start + 256 * 1024])
            if self.base64:
                self.ws.send(chr(ord("0") + 2 * index) + base64.b64encode(chunk).decode())
            else:
                self.ws.send(bytes([2 * index]) + chunk)

    def received(self, index: int, kind: str = "data") -> bytes:
        with self.ws.reader.lock:
            return bytes(self.channels[2 * index + (kind == "error")])

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        self.ws.reader.wait(lambda: self.ws.close_code is not None or self.ws.reader.eof, timeout)

    def close(self) -> None:
        self.ws.close()

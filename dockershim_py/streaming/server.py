"""The streaming server: the URLs Exec, Attach and PortForward hand out, and the HTTP listener behind them.

The RPC side (`get_exec`, `get_attach`, `get_port_forward`) checks the request as the kubelet's
streaming library does (a running container or sandbox, tty without stderr, at least one
stream), stores it under a single-use token and returns an absolute URL: `http://host:port/...`,
or `https://` with TLS. (cri-dockerd's scheme-less `//host/...` URLs are read as https by
kubelets from 1.36 on, which breaks kubectl exec.)

The listener is its own: loopback on an ephemeral port unless `--streaming-bind-addr` says
otherwise, TLS when given a certificate. Each connection gets a thread of its own, up to
`MAX_CONNECTIONS` (more are answered 503): h11 reads the request within `REQUEST_TIMEOUT`, the
token is looked up (unknown, used or expired: 404), the upgrade is negotiated (`negotiation`:
400 or 403 with the headers kubectl expects), and the session runs on its own `loop.Loop`,
so a slow or dead client holds only its own thread, never the gRPC server or another session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import selectors
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import h11

from .. import telemetry
from ..api import api_pb2 as api
from ..config import Config, parse_bind_address
from ..container_convert import command_line
from ..errors import invalid_argument, unavailable
from .channels import BASE64_CHANNELS, ChannelCodec, ChannelProtocolError, parse_port, parse_port_query, port_channels
from .loop import Loop, Pipe, TlsLayer
from .negotiation import (
    PortForwardProtocol,
    Rejection,
    RemoteCommandProtocol,
    Transport,
    negotiate_port_forward,
    negotiate_remote_command,
    offered_protocols,
    spdy_upgrade_headers,
    upgrade_transport,
)
from .portforward import (
    Forwards,
    PortForward,
    PortForwardSession,
    SpdyForwards,
    TunnelledSpdyForwards,
    WebSocketForwards,
)
from .remotecommand import RemoteCommand, RemoteCommandSession, SpdyStreams, Streams, WebSocketStreams
from .runtime import Process, StreamingRuntime
from .tokens import TokenCache
from .websocket import HandshakeError, WebSocketSession

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
REQUEST_TIMEOUT = 10.0
EVICTION_WAIT_SECONDS = 1.0  # for an evicted connection's thread to give its slot back
# With every slot taken, a session idle this long gives its slot to a new connection: forgotten
# port-forwards must not lock everyone's exec out until the idle timeout (4 hours by default).
EVICTABLE_IDLE_SECONDS = 60.0
MAX_REQUEST_HEAD = 64 * 1024
_ROUTE = re.compile(r"/(exec|attach|portforward)/([A-Za-z0-9_-]{1,128})")


def url_host(bound: str) -> str:
    """The host to put in URLs: the kubelet runs on this node, so a wildcard bind means loopback."""
    address = ipaddress.ip_address(bound)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def _check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:
        raise invalid_argument("tty and stderr cannot both be true: a terminal has one output stream")
    if not (stdin or stdout or stderr):
        raise invalid_argument("one of stdin, stdout, or stderr must be set")


def tls_context(config: Config) -> ssl.SSLContext:
    """The streaming server's TLS; a file it cannot load is named (ssl's own errors name none)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    pair = f"--streaming-tls-cert {config.streaming_tls_cert} with --streaming-tls-key {config.streaming_tls_key}"
    with _naming(pair):
        context.load_cert_chain(config.streaming_tls_cert, config.streaming_tls_key)
    if config.streaming_tls_client_ca:
        with _naming(f"--streaming-tls-client-ca {config.streaming_tls_client_ca}"):
            context.load_verify_locations(cafile=config.streaming_tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.contextmanager
def _naming(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # ssl.SSLError included
        raise OSError(f"{what}: {exc.strerror or exc}") from exc


class StreamingServer:
    def __init__(self, config: Config, runtime: StreamingRuntime, tokens: TokenCache[RemoteCommand | PortForward]
                 | None = None) -> None:
        self._config = config
        self._runtime = runtime
        self._tokens: TokenCache[RemoteCommand | PortForward] = tokens if tokens is not None else TokenCache()
        self._host, self._port = parse_bind_address(config.streaming_bind_addr)
        self._tls: ssl.SSLContext | None = None
        self._listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._awaiting_request: dict[socket.socket, float] = {}  # connections that sent no request yet
        self._sessions: dict[Loop, Callable[[], None]] = {}  # each session's shutdown
        self._accepter: threading.Thread | None = None
        self._stopping = False
        self.base_url = ""

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._config.streaming_tls_cert:
            self._tls = tls_context(self._config)
        family = socket.AF_INET6 if ipaddress.ip_address(self._host).version == 6 else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        port = listener.getsockname()[1]
        self.base_url = f"{'https' if self._tls else 'http'}://{url_host(self._host)}:{port}"
        self._accepter = threading.Thread(target=self._accept_loop, name="streaming-accept", daemon=True)
        self._accepter.start()
        log.info("streaming server listening on %s", self.base_url)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every session (clients are told why), wait for their threads."""
        self._stopping = True
        try:
            self._wake_writer.send(b"\0")
        except OSError:
            pass
        if self._accepter is not None:
            self._accepter.join(timeout)
        with self._lock:
            for loop, shutdown in self._sessions.items():
                loop.post(shutdown)
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for loop in self._sessions:
                loop.post(loop.stop)
        self._wake_reader.close()
        self._wake_writer.close()
        log.info("streaming server stopped")

    # --- the RPCs -------------------------------------------------------------------------------

    def get_exec(self, request: api.ExecRequest) -> str:
        _check_streams(request.tty, request.stdin, request.stdout, request.stderr)
        if not request.cmd:
            raise invalid_argument("missing required cmd")
        command_line(request.cmd, "cmd")
        container = self._runtime.running_container(request.container_id)
        return self._url("exec", RemoteCommand("exec", container["Id"], request.stdin, request.stdout,
                                               request.stderr, request.tty, tuple(request.cmd)))

    def get_attach(self, request: api.AttachRequest) -> str:
        _check_streams(request.tty, request.stdin, request.stdout, request.stderr)
        container = self._runtime.running_container(request.container_id)
        return self._url("attach", RemoteCommand("attach", container["Id"], request.stdin, request.stdout,
                                                 request.stderr, request.tty))

    def get_port_forward(self, request: api.PortForwardRequest) -> str:
        try:
            ports = tuple(parse_port(str(port)) for port in request.port)
        except ChannelProtocolError as exc:
            raise invalid_argument(str(exc)) from None
        sandbox = self._runtime.running_sandbox(request.pod_sandbox_id)
        return self._url("portforward", PortForward(sandbox["Id"], ports))

    def _url(self, route: str, request: RemoteCommand | PortForward) -> str:
        if not self.base_url or self._stopping:
            raise unavailable("the streaming server is not running")
        return f"{self.base_url}/{route}/{self._tokens.insert(request)}"

    # --- connections ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stopping:
                selector.select()
                while not self._stopping:
                    try:
                        sock, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:  # e.g. out of descriptors: back off, keep serving
                        log.warning("streaming server cannot accept: %s", exc)
                        time.sleep(0.1)
                        break
                    try:
                        self._admit(sock)
                    except Exception:  # a bug must not end the accepting for every later client
                        log.exception("streaming server: admitting a connection failed")
                        sock.close()
        self._listener.close()

    def _admit(self, sock: socket.socket) -> None:
        if (not self._slots.acquire(blocking=False) and not self._evict_one_awaiting_request()
                and not self._evict_the_longest_idle_session()):
            log.warning("streaming server: %d connections already; refusing one", MAX_CONNECTIONS)
            try:  # best effort and without waiting: the accept thread serves everybody
                sock.setblocking(False)
                sock.send(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            sock.close()
            return
        sock.setblocking(True)
        thread = threading.Thread(target=self._serve, args=(sock,), name="streaming-conn", daemon=True)
        with self._lock:
            self._threads.add(thread)
            self._awaiting_request[sock] = time.monotonic()
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had: refuse this one, and keep accepting
            log.error("streaming server: cannot start a thread for a connection: %s", exc)
            with self._lock:
                self._threads.discard(thread)
                self._awaiting_request.pop(sock, None)
            self._slots.release()
            sock.close()

    def _evict_one_awaiting_request(self) -> bool:
        """All slots are taken: close the connection that has waited longest without sending its
        request, and take its slot. Connections that hold slots idle must not lock out clients
        with a URL: those send their request as soon as they connect."""
        with self._lock:
            if not self._awaiting_request:
                return False
            oldest = min(self._awaiting_request, key=self._awaiting_request.__getitem__)
            del self._awaiting_request[oldest]
        log.info("streaming server: %d connections already; closing the one longest without a request, %s",
                 MAX_CONNECTIONS, _peer(oldest))
        try:
            oldest.shutdown(socket.SHUT_RDWR)  # its thread's read ends, and it gives its slot back
        except OSError:
            pass
        return self._slots.acquire(timeout=EVICTION_WAIT_SECONDS)

    def _evict_the_longest_idle_session(self) -> bool:
        """All slots are taken by sessions: end the one idle longest, if idle for
        EVICTABLE_IDLE_SECONDS, and take its slot."""
        with self._lock:
            idle = [(loop.idle_seconds(), loop) for loop in self._sessions if not loop.stopped]  # not one ending
        if not idle:
            return False
        seconds, loop = max(idle, key=lambda pair: pair[0])
        if seconds < EVICTABLE_IDLE_SECONDS:
            return False
        log.info("streaming server: %d connections already; ending the session idle longest (%.0fs)",
                 MAX_CONNECTIONS, seconds)
        loop.post(loop.end_idle)
        return self._slots.acquire(timeout=EVICTION_WAIT_SECONDS)

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handle(_Client(sock, TlsLayer(self._tls) if self._tls else None))
        except ssl.SSLError as exc:  # a client certificate refused, or not TLS at all: the operator's to see
            log.info("streaming: TLS with %s failed: %s", _peer(sock), exc.reason or exc)
        except (OSError, h11.ProtocolError) as exc:
            log.debug("streaming connection ended: %s", exc)
        except Exception:  # a bug must not take the listener down
            log.exception("streaming connection failed")
        finally:
            sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())
                self._awaiting_request.pop(sock, None)
            self._slots.release()

    def _handle(self, client: _Client) -> None:
        request = client.read_request(time.monotonic() + REQUEST_TIMEOUT)
        with self._lock:
            self._awaiting_request.pop(client.sock, None)
        if request is None:
            return
        path, _, query = request.target.decode("ascii", "replace").partition("?")
        match = _ROUTE.fullmatch(path)
        if request.method not in (b"GET", b"POST"):
            client.respond(405, "405 method not allowed\n")
            return
        cached = self._tokens.consume(match.group(2)) if match else None
        if match is None or cached is None or cached.action != match.group(1):
            client.respond(404, "404 page not found\n")
            return
        if self._stopping:
            client.respond(503, "the streaming server is shutting down\n")
            return
        transport = upgrade_transport(request.headers)
        if transport is None:
            client.respond(400, "unable to upgrade: missing upgrade headers in request\n")
            return
        offered = offered_protocols(request.headers, transport)
        if isinstance(cached, PortForward):
            self._port_forward(client, transport, offered, cached, query)
        else:
            self._remote_command(client, transport, offered, cached)

    def _remote_command(self, client: _Client, transport: Transport, offered: list[str],
                        request: RemoteCommand) -> None:
        protocol = negotiate_remote_command(transport, offered)
        if isinstance(protocol, Rejection):
            client.reject(protocol)
            return
        streams = self._remote_command_streams(client, protocol, request)
        if streams is None:
            return
        runtime = self._runtime

        def start() -> Process:
            if request.action == "exec":
                return runtime.exec(request.container_id, list(request.cmd), stdin=request.stdin,
                                    stdout=request.stdout, stderr=request.stderr, tty=request.tty)
            return runtime.attach(request.container_id, stdin=request.stdin, stdout=request.stdout,
                                  stderr=request.stderr)

        session = RemoteCommandSession(streams, request, start,
                                       creation_timeout=self._config.streaming_creation_timeout)
        log.debug("%s in %s over %s %s", request.action, request.container_id[:12], transport.value,
                  protocol.name or "(no subprotocol)")
        self._run(client, session.run, session.shutdown, Loop(self._config.streaming_idle_timeout),
                  request.action, protocol.transport)

    @staticmethod
    def _remote_command_streams(client: _Client, protocol: RemoteCommandProtocol,
                                request: RemoteCommand) -> Streams | None:
        if protocol.transport is Transport.SPDY:
            client.switch_to_spdy(protocol.name)
            return SpdyStreams(protocol, request)
        session = client.websocket(protocol.name, protocol.codec())
        return None if session is None else WebSocketStreams(session, protocol, request)

    def _port_forward(self, client: _Client, transport: Transport, offered: list[str], request: PortForward,
                      query: str) -> None:
        protocol = negotiate_port_forward(transport, offered)
        if isinstance(protocol, Rejection):
            client.reject(protocol)
            return
        loop = Loop(self._config.streaming_idle_timeout)
        forwards = self._forwards(client, protocol, request, query, loop)
        if forwards is None:
            loop.close()
            return
        log.debug("port forward to %s over %s %s", request.sandbox_id[:12], transport.value, protocol.name or
                  "(no subprotocol)")
        runtime = self._runtime
        session = PortForwardSession(forwards, request.sandbox_id,
                                     lambda: runtime.sandbox_network_namespace(request.sandbox_id))
        self._run(client, session.run, session.shutdown, loop, "port-forward", protocol.transport)

    def _forwards(self, client: _Client, protocol: PortForwardProtocol, request: PortForward, query: str,
                  loop: Loop) -> Forwards | None:
        timeout = self._config.streaming_creation_timeout
        if protocol.transport is Transport.SPDY:
            client.switch_to_spdy(protocol.name)
            return SpdyForwards(loop, timeout)
        if protocol.spdy_tunnel:
            session = client.websocket(protocol.name, None)
            return None if session is None else TunnelledSpdyForwards(session, loop, timeout)
        ports = request.ports  # the kubelet's are in the RPC; a direct client's may be in the query
        try:
            if not ports:
                ports = tuple(parse_port_query(urllib.parse.parse_qs(query, keep_blank_values=True).get("port", [])))
            port_channels(len(ports) - 1)
            codec = protocol.codec()
            if codec.base64 and 2 * len(ports) > BASE64_CHANNELS:
                raise ValueError(f"{len(ports)} ports are more than the base64 channels carry "
                                 f"({BASE64_CHANNELS // 2}); ask for fewer, or for a binary subprotocol")
        except (ChannelProtocolError, ValueError) as exc:
            client.respond(400, f"{exc}\n")
            return None
        session = client.websocket(protocol.name, codec)
        return None if session is None else WebSocketForwards(session, ports)

    def _run(self, client: _Client, run: Callable[[Loop, Pipe, bytes], None], shutdown: Callable[[], None],
             loop: Loop, kind: str, transport: Transport) -> None:
        """One session (`kind`: exec, attach or port-forward) from its first byte to its end."""
        pipe = Pipe(client.sock, name="client", tls=client.tls, on_data=lambda data: None,
                    on_eof=lambda: None, on_error=lambda exc: None, peer_end_is_eof=True)
        if client.pending_output:
            pipe.write(client.pending_output)
        with self._lock:
            self._sessions[loop] = shutdown
        telemetry.STREAMING_SESSIONS_STARTED.labels(kind, transport.value).inc()
        open_sessions = telemetry.STREAMING_SESSIONS.labels(kind)
        open_sessions.inc()
        try:
            if self._stopping:
                loop.post(shutdown)
            run(loop, pipe, client.http.trailing_data[0])
        finally:
            open_sessions.dec()
            with self._lock:
                self._sessions.pop(loop, None)
            loop.close()


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "a client that has gone"
    return f"{url_host(host)}:{port}"


class _Client:
    """The client's connection before the upgrade: one blocking request and its answer, maybe over TLS."""

    def __init__(self, sock: socket.socket, tls: TlsLayer | None) -> None:
        self.sock = sock
        self.tls = tls
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        self.request: h11.Request | None = None
        self.pending_output = b""  # an upgrade answer, sent by the session's pipe

    def read_request(self, deadline: float) -> h11.Request | None:
        """The request head (its body read and dropped), or None if the client went away."""
        http = self.http
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                self._send(b"HTTP/1.1 %d Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                           % exc.error_status_hint)
                return None
            if event is h11.NEED_DATA:
                http.receive_data(self._recv(deadline))
            elif isinstance(event, h11.Request):
                self.request = event
            elif event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                return self.request
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def respond(self, status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        content = body.encode()
        http = self.http
        data = http.send(h11.Response(status_code=status, headers=[
            ("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
            ("Content-Length", str(len(content))), ("Connection", "close"), *headers]))
        if self.request is None or self.request.method != b"HEAD":  # a HEAD answer has no body
            data += http.send(h11.Data(data=content))
        data += http.send(h11.EndOfMessage())
        self._send(data)

    def reject(self, rejection: Rejection) -> None:
        self.respond(rejection.status, rejection.body + "\n", rejection.headers)

    def switch_to_spdy(self, protocol: str) -> None:
        self.pending_output = self.http.send(h11.InformationalResponse(
            status_code=101, headers=spdy_upgrade_headers(protocol), reason=b"Switching Protocols"))

    def websocket(self, subprotocol: str, codec: ChannelCodec | None) -> WebSocketSession | None:
        """The accepted WebSocket (its 101 queued in it), or None after answering a bad handshake."""
        assert self.request is not None
        try:
            return WebSocketSession(self.request.headers, self.request.target, subprotocol or None, codec)
        except HandshakeError as exc:
            self.reject(exc.rejection)
            return None

    def _recv(self, deadline: float) -> bytes:
        """Bytes of the request, within `deadline` however slowly they come: a TLS handshake
        trickled a byte at a time held its connection past the request timeout."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client did not send its request in time")
            self.sock.settimeout(remaining)
            raw = self.sock.recv(65536)
            if not raw or self.tls is None:
                return raw
            plain = self.tls.receive(raw)
            handshake = self.tls.data_to_send()
            if handshake:
                self.sock.sendall(handshake)
            if plain or self.tls.peer_closed:
                return plain

    def _send(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.send(data)
            data = self.tls.data_to_send()
        self.sock.settimeout(REQUEST_TIMEOUT)
        self.sock.sendall(data)

"""Exec and attach sessions: a client's SPDY streams or WebSocket channels joined to a Docker process.

Two layers, as in the rest of `streaming`:

- `SpdyStreams` and `WebSocketStreams` are sans-IO: bytes from the client in, events out
  (`Ready`, `Stdin`, `StdinClosed`, `Resize`, `Gone`), and `send_output` / `finish` to answer.
  They keep the kubelet's conventions: every SPDY stream gets a reply and the session starts
  once all the streams the request implies have arrived (within the stream-creation timeout);
  a WebSocket client is told the session is ready by an empty message on its first output
  channel; zero terminal sizes are dropped; at the end the error stream carries the Status
  (JSON from v4 on, text before), every stream is finished, then GOAWAY or a 1000 close.
  The v1 SPDY quirk is kept as well: the server half-closes stdin at once.
- `RemoteCommandSession` runs one on a `loop.Loop`: it starts the Docker process when the
  client is ready, copies stdin to it (acknowledging SPDY data only once Docker has it),
  half-closes Docker's side at stdin's end, forwards resizes, demultiplexes Docker's output
  onto stdout and stderr, and reports the process's outcome when the output ends. A client
  that leaves (or goes idle) before that takes an exec's process with it: Docker would leave it
  running, with nobody to read it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .. import exec as docker_exec
from ..errors import CRIError
from . import spdy
from .channels import (
    CHANNEL_BY_STREAM_TYPE,
    ERROR,
    HEADER_STREAM_TYPE,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    STREAM_TYPE_ERROR,
    STREAM_TYPE_RESIZE,
    STREAM_TYPE_STDERR,
    STREAM_TYPE_STDIN,
    STREAM_TYPE_STDOUT,
    ChannelClose,
    ChannelData,
    ChannelProtocolError,
    ResizeDecoder,
    Status,
    TerminalSize,
    expected_stream_types,
    first_websocket_channel,
)
from .loop import CLIENT_QUEUE_LIMIT, HIGH_WATER, Loop, Pipe
from .negotiation import RemoteCommandProtocol
from .runtime import Process
from .websocket import Closed, WebSocketSession

log = logging.getLogger(__name__)

# More streams than a remote command can use (five) are refused.
MAX_STREAMS = 8
# How long a finished session waits for the client to close before closing on it.
LINGER_SECONDS = 2.0
# How often an exec session asks Docker whether its process still runs (as ExecSync does).
PROCESS_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class RemoteCommand:
    """An exec or attach request as its RPC checked it; the token in the URL stands for it."""

    action: str  # "exec" or "attach"
    container_id: str
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool
    cmd: tuple[str, ...] = ()


# Events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """Every stream the request implies is there: start the process."""


@dataclass(frozen=True)
class Stdin:
    data: bytes
    stream_id: int = 0  # the SPDY stream to acknowledge the data on


@dataclass(frozen=True)
class StdinClosed:
    pass


@dataclass(frozen=True)
class Resize:
    size: TerminalSize


@dataclass(frozen=True)
class Gone:
    """The client closed, reset or broke the connection: stop, nobody is listening."""
    reason: str


Event = Ready | Stdin | StdinClosed | Resize | Gone


class _Resizes:
    """The resize stream's sizes; zero sizes are dropped, and after bad input the rest is ignored.

    Of the sizes one chunk brings only the last is passed on: each is a Docker request, and
    the terminal ends up the last size anyway.
    """

    def __init__(self) -> None:
        self._decoder = ResizeDecoder()
        self._broken = False

    def feed(self, data: bytes, events: list[Event]) -> None:
        if self._broken:
            return
        try:
            sizes = self._decoder.feed(data)
        except ChannelProtocolError as exc:
            log.info("ignoring the rest of a resize stream: %s", exc)
            self._broken = True
            return
        usable = [size for size in sizes if size.width and size.height]
        if usable:
            events.append(Resize(usable[-1]))


# SPDY ----------------------------------------------------------------------------------------


class SpdyStreams:
    """The server side of a remote command over SPDY/3.1 (sans-IO)."""

    def __init__(self, protocol: RemoteCommandProtocol, request: RemoteCommand) -> None:
        self.protocol = protocol
        self._request = request
        self._conn = spdy.Connection(client_side=False)
        self._expected = expected_stream_types(stdin=request.stdin, stdout=request.stdout, stderr=request.stderr,
                                               tty=request.tty, resize=protocol.resize)
        self._streams: dict[str, int] = {}
        self._resizes = _Resizes()
        self.ready = False
        self._finished = False

    def receive_data(self, data: bytes | None) -> list[Event]:
        """Feed bytes from the client; None at the end of the connection."""
        if data is None:
            return [Gone("the client closed the connection")]
        events: list[Event] = []
        for event in self._conn.receive_data(data):
            if isinstance(event, spdy.StreamOpened):
                self._on_stream(event, events)
            elif isinstance(event, spdy.DataReceived):
                self._on_data(event, events)
            elif isinstance(event, spdy.StreamReset) and event.stream_id == self._streams.get(STREAM_TYPE_STDIN):
                events.append(StdinClosed())
            elif isinstance(event, spdy.ProtocolError):
                events.append(Gone(f"SPDY protocol error: {event.message}"))
        return events

    def _on_stream(self, event: spdy.StreamOpened, events: list[Event]) -> None:
        kind = event.headers.get(HEADER_STREAM_TYPE, "")
        if (self.ready or kind not in CHANNEL_BY_STREAM_TYPE or kind in self._streams
                or self._conn.stream_count > MAX_STREAMS
                or event.unidirectional):  # client-go opens none: every stream is answered on
            log.debug("refusing SPDY stream %d of type %r", event.stream_id, kind)
            self._conn.reset_stream(event.stream_id, spdy.RstStatus.REFUSED_STREAM)
            return
        self._conn.reply(event.stream_id)
        self._streams[kind] = event.stream_id
        if event.fin and kind == STREAM_TYPE_STDIN:
            events.append(StdinClosed())
        if self._expected <= self._streams.keys():
            self.ready = True
            events.append(Ready())
            if self.protocol.version == 1 and STREAM_TYPE_STDIN in self._streams:
                self._fin(self._streams[STREAM_TYPE_STDIN])  # what v1 kubelets did

    def _on_data(self, event: spdy.DataReceived, events: list[Event]) -> None:
        if event.stream_id == self._streams.get(STREAM_TYPE_STDIN):
            if event.data:
                events.append(Stdin(event.data, event.stream_id))
            if event.fin:
                events.append(StdinClosed())
            return
        self._conn.acknowledge_received_data(event.stream_id, len(event.data))
        if event.stream_id == self._streams.get(STREAM_TYPE_RESIZE) and self._request.tty:
            self._resizes.feed(event.data, events)

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Stdin data reached Docker: let a flow-controlled client send more."""
        self._conn.acknowledge_received_data(stream_id, size)

    def send_output(self, channel: int, data: bytes) -> None:
        kind = STREAM_TYPE_STDOUT if channel == STDOUT else STREAM_TYPE_STDERR
        stream_id = self._streams.get(kind)
        if stream_id is None or self._finished:
            return
        try:
            self._conn.send_data(stream_id, data)
        except spdy.StreamClosedError:  # the client reset the stream: it wants no more
            pass

    def finish(self, status: Status) -> None:
        """Report the outcome on the error stream, finish every stream, then GOAWAY."""
        if self._finished:
            return
        self._finished = True
        payload = status.payload(status_json=self.protocol.status_json)
        error_stream = self._streams.get(STREAM_TYPE_ERROR)
        if payload and error_stream is not None:
            try:
                self._conn.send_data(error_stream, payload)
            except spdy.StreamClosedError:
                pass
        for stream_id in self._streams.values():
            self._fin(stream_id)
        self._conn.goaway()

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def _fin(self, stream_id: int) -> None:
        try:
            self._conn.send_data(stream_id, b"", fin=True)
        except spdy.StreamClosedError:
            pass


# WebSocket -----------------------------------------------------------------------------------


class WebSocketStreams:
    """The server side of a remote command over WebSocket channels (sans-IO)."""

    def __init__(self, session: WebSocketSession, protocol: RemoteCommandProtocol, request: RemoteCommand) -> None:
        self.protocol = protocol
        self._session = session
        self._request = request
        self._resizes = _Resizes()
        self.ready = True
        self._finished = False
        # The kubelet's "connection established" signal, which clients wait for.
        session.send(first_websocket_channel(stdout=request.stdout, stderr=request.stderr), b"")

    def initial_events(self) -> list[Event]:
        return [Ready()]

    def receive_data(self, data: bytes | None) -> list[Event]:
        events: list[Event] = []
        for event in self._session.receive_data(data):
            if isinstance(event, Closed):
                events.append(Gone(f"WebSocket closed ({' '.join(filter(None, (str(event.code), event.reason)))})"))
            elif isinstance(event, ChannelClose):
                if event.channel == STDIN and self._request.stdin:
                    events.append(StdinClosed())
            elif isinstance(event, ChannelData):
                if event.channel == STDIN and self._request.stdin:
                    if event.data:
                        events.append(Stdin(event.data))
                elif event.channel == RESIZE and self._request.tty:
                    self._resizes.feed(event.data, events)
        return events

    def acknowledge(self, stream_id: int, size: int) -> None:
        """WebSocket has no flow control of its own; TCP's is enough."""

    def send_output(self, channel: int, data: bytes) -> None:
        if self._finished:
            return
        if channel == STDOUT and self._request.stdout or channel == STDERR and self._request.stderr:
            self._session.send(channel, data)

    def finish(self, status: Status) -> None:
        if self._finished:
            return
        self._finished = True
        payload = status.payload(status_json=self.protocol.status_json)
        if payload:
            self._session.send(ERROR, payload)
        self._session.close()

    def data_to_send(self) -> bytes:
        return self._session.data_to_send()


Streams = SpdyStreams | WebSocketStreams


# The session ---------------------------------------------------------------------------------


class RemoteCommandSession:
    """One exec or attach: the client's streams on one side, the Docker process on the other."""

    def __init__(self, streams: Streams, request: RemoteCommand, start: Callable[[], Process], *,
                 creation_timeout: float) -> None:
        self._streams = streams
        self._request = request
        self._start = start
        self._creation_timeout = creation_timeout
        self._loop: Loop | None = None
        self._client: Pipe | None = None
        self._process: Process | None = None
        self._docker: Pipe | None = None
        self._demux = docker_exec.Demultiplexer()
        self._early_stdin: list[tuple[bytes, int]] = []
        self._early_size = 0
        self._stdin_closed = False
        self._pending_size: TerminalSize | None = None  # asked for by the client, not yet given to Docker
        self._finishing = False
        # The client left while the process ran, or its output ended (a TTY's does with stdin)
        # while it may run on: whatever still runs is terminated once the loop ends.
        self._abandoned = False
        self._seen_ended = False

    def run(self, loop: Loop, client: Pipe, initial: bytes = b"") -> None:
        """Serve the session until it ends; `initial` is what the client sent right after its request."""
        self._loop, self._client = loop, client
        client.on_data = self._on_client_data
        client.on_eof = lambda: self._handle([Gone("the client closed the connection")])
        client.on_error = lambda exc: self._handle([Gone(f"connection error: {exc}")])
        client.gate = self._client_may_send
        loop.on_idle = self._on_idle
        loop.add(client)
        if not self._streams.ready:
            loop.call_later(self._creation_timeout, self._creation_timed_out)
        self._flush()
        if isinstance(self._streams, WebSocketStreams):
            self._handle(self._streams.initial_events())
        if initial:
            self._on_client_data(initial)
        loop.run()  # the caller closes the loop, and with it Docker's connection
        if self._abandoned:
            self._terminate_process()

    def shutdown(self) -> None:
        """The shim is stopping: tell the client why the session ends."""
        self._finish(Status.internal_error("dockershim-py is shutting down"))

    # Client side ---------------------------------------------------------------------------

    def _client_may_send(self) -> bool:
        if self._finishing:
            return True  # only the closing handshake is left to read
        if self._client is not None and self._client.buffered >= CLIENT_QUEUE_LIMIT:
            return False  # what it sends asks for answers (pings) it does not read
        if self._docker is None:
            return self._early_size < HIGH_WATER
        return self._docker.buffered < HIGH_WATER

    def _on_client_data(self, data: bytes) -> None:
        self._handle(self._streams.receive_data(data))

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Gone):
                self._gone(event.reason)
                return
            if self._finishing:
                continue
            if isinstance(event, Ready):
                self._start_process()
            elif isinstance(event, Stdin):
                self._stdin(event)
            elif isinstance(event, StdinClosed):
                self._stdin_closed = True
                if self._docker is not None:
                    self._docker.shutdown_write()
            elif isinstance(event, Resize):
                self._pending_size = event.size
        if not self._finishing:
            self._apply_size()  # once per batch: the last size of a burst is the one that counts
        self._flush()

    def _stdin(self, event: Stdin) -> None:
        if self._stdin_closed:
            self._streams.acknowledge(event.stream_id, len(event.data))
            return
        if self._docker is None:
            self._early_stdin.append((event.data, event.stream_id))
            self._early_size += len(event.data)
            return
        self._write_stdin(event.data, event.stream_id)

    def _write_stdin(self, data: bytes, stream_id: int) -> None:
        assert self._docker is not None

        def delivered() -> None:
            self._streams.acknowledge(stream_id, len(data))
            self._flush()

        self._docker.write(data, delivered)

    def _apply_size(self) -> None:
        """Give Docker the latest size the client asked for, if it has not had it yet."""
        if self._process is None or self._pending_size is None:
            return  # applied right after the start: Docker cannot resize an exec before it runs
        size, self._pending_size = self._pending_size, None
        try:
            self._process.resize(size)
        except CRIError as exc:
            log.debug("resize to %dx%d failed: %s", size.width, size.height, exc.message)

    def _creation_timed_out(self) -> None:
        if not self._streams.ready and not self._finishing:
            log.info("%s in %s: the client did not open its streams in %gs; closing", self._request.action,
                     self._request.container_id[:12], self._creation_timeout)
            self._gone("timed out waiting for client to create streams")

    def _on_idle(self) -> None:
        self._gone("idle timeout")

    # Docker side ---------------------------------------------------------------------------

    def _start_process(self) -> None:
        assert self._loop is not None
        try:
            self._process = self._start()
        except CRIError as exc:
            verb = "executing command in" if self._request.action == "exec" else "attaching to"
            log.info("%s %s failed: %s", self._request.action, self._request.container_id[:12], exc.message)
            self._finish(Status.internal_error(f"error {verb} container: {exc.message}"))
            return
        stream = self._process.stream
        self._docker = self._loop.add(Pipe(stream.sock, name="docker", on_data=self._on_output,
                                           on_eof=self._on_output_end, on_error=self._on_docker_error,
                                           on_write_error=self._on_stdin_refused))
        self._docker.gate = lambda: self._client is not None and self._client.buffered < HIGH_WATER
        if self._request.action == "exec":
            self._loop.call_later(PROCESS_CHECK_SECONDS, self._check_process)
        buffered = stream.take_buffered()
        if buffered:
            self._on_output(buffered)
        self._apply_size()
        for data, stream_id in self._early_stdin:
            self._write_stdin(data, stream_id)
        self._early_stdin.clear()
        if self._stdin_closed or not self._request.stdin:
            self._docker.shutdown_write()

    def _on_output(self, data: bytes) -> None:
        if self._process is not None and self._process.multiplexed:
            for kind, payload in self._demux.feed(data):
                self._streams.send_output(
                    STDERR if kind in (docker_exec.STDERR, docker_exec.SYSTEM_ERROR) else STDOUT, payload)
        else:
            self._streams.send_output(STDOUT, data)
        self._flush()

    def _on_output_end(self) -> None:
        assert self._process is not None
        status = self._process.outcome()
        # With a TTY, Docker ends the output when stdin closes, and `cat` runs on.
        self._abandoned = not self._process.ended()
        self._finish(status)

    def _check_process(self) -> None:
        """Docker keeps an exec's stream open when its container is stopped or removed under it
        (kubectl exec hung for hours): asked every PROCESS_CHECK_SECONDS, as ExecSync asks, the
        session ends once Docker says twice in a row that the process is over (a normal end has
        closed the stream by then)."""
        if self._finishing or self._process is None or self._loop is None:
            return
        if self._process.ended():
            if self._seen_ended:
                self._finish(self._process.outcome())
                return
            self._seen_ended = True
        else:
            self._seen_ended = False
        self._loop.call_later(PROCESS_CHECK_SECONDS, self._check_process)

    def _on_stdin_refused(self, exc: OSError) -> None:
        """The process ended (or closed its stdin) before reading all of it: `head`, `grep -q`, `true`.
        The rest of stdin goes nowhere; the output and exit status still come."""
        log.debug("%s in %s: stdin no longer taken (%s)", self._request.action,
                  self._request.container_id[:12], exc)
        self._stdin_closed = True

    def _on_docker_error(self, exc: OSError) -> None:
        if (isinstance(exc, (ConnectionResetError, BrokenPipeError)) and self._process is not None
                and self._request.action == "exec"):
            # dockerd closed with our stdin unread: the exec is over, and Docker has its exit code (or,
            # were dockerd itself gone, no answer: an internal error all the same). An attach has no
            # exit code to ask for, so there a reset stays a lost connection.
            self._finish(self._process.outcome())
            return
        self._finish(Status.internal_error(f"connection to Docker lost: {exc}"))

    # Ending --------------------------------------------------------------------------------

    def _finish(self, status: Status) -> None:
        """Report the outcome, flush, half-close, and give the client a moment to close first."""
        if self._finishing or self._loop is None or self._client is None:
            return
        self._finishing = True
        if self._docker is not None:
            self._docker.close()
        self._streams.finish(status)
        self._flush()
        self._client.shutdown_write()
        self._client.on_data = lambda data: None
        self._client.on_eof = self._loop.stop
        self._client.on_error = lambda exc: self._loop.stop() if self._loop else None
        self._loop.call_later(LINGER_SECONDS, self._loop.stop)

    def _gone(self, reason: str) -> None:
        """The client left: stop once what is queued for it, such as the answer to its WebSocket
        Close, has been sent (at most `LINGER_SECONDS` later)."""
        assert self._loop is not None and self._client is not None
        log.debug("%s in %s ends: %s", self._request.action, self._request.container_id[:12], reason)
        self._abandoned = self._process is not None and not self._finishing
        self._finishing = True
        if self._docker is not None:
            self._docker.close()
        self._flush()
        self._client.close_after_sending(self._loop.stop)
        self._loop.call_later(LINGER_SECONDS, self._loop.stop)

    def _terminate_process(self) -> None:
        """Kill what the client left running (an exec; an attach leaves the container alone), after
        the loop, so that the Docker requests this takes hold up no client."""
        assert self._process is not None
        try:
            killed = self._process.terminate()
        except (CRIError, OSError) as exc:
            log.warning("%s in %s: the client left while the process ran, and it could not be killed: %s",
                        self._request.action, self._request.container_id[:12],
                        exc.message if isinstance(exc, CRIError) else exc)
            return
        if killed:
            log.info("%s in %s: the client left while the process ran: killed %d process(es)",
                     self._request.action, self._request.container_id[:12], killed)

    def _flush(self) -> None:
        if self._client is not None:
            data = self._streams.data_to_send()
            if data:
                self._client.write(data)

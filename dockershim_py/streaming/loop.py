"""The event loop of one streaming connection: the client's socket and the sockets it is joined to.

Every streaming session runs on one thread of its own (the server bounds how many): a selector
over the client's socket, Docker's hijacked exec or attach connection, or the pod connections of
a port forward. The protocol cores stay sans-IO; sessions feed them what a `Pipe` reads and give
a `Pipe` what they produce.

Backpressure. A pipe is read only while its `gate` allows it: sessions make the client's socket
wait while Docker's or a pod's buffer is full, and the other way round, so a slow reader slows
its writer and the memory a session holds stays bounded (about `HIGH_WATER` per pipe).

Idle timeout. When no pipe has read or written anything for `idle_timeout` seconds the loop
calls `on_idle` (the kubelet closes such connections after four hours).
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import select
import selectors
import socket
import ssl
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

HIGH_WATER = 256 * 1024
READ_SIZE = 64 * 1024
# Output queued for a client beyond what the data gates let through (HIGH_WATER and a read per
# pipe): answers to its own frames (pings) that it does not read; it is not read from then.
CLIENT_QUEUE_LIMIT = 2 * 1024 * 1024
# How often the sockets not read from now (their gate is shut) are looked at for a peer that
# left: a client gone while its stdin waited held its session and its process for hours.
GATED_CHECK_SECONDS = 1.0


class TlsLayer:
    """TLS over memory buffers, so a non-blocking pipe never meets SSLWantRead in the middle of a write."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshake_done = False
        self.peer_closed = False

    def receive(self, data: bytes) -> bytes:
        """Plaintext of the received bytes (some or none); raises ssl.SSLError on garbage."""
        self._incoming.write(data)
        if not self.handshake_done:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshake_done = True
        plain = bytearray()
        while True:
            try:
                chunk = self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                break
            if not chunk:
                self.peer_closed = True
                break
            plain += chunk
        return bytes(plain)

    def send(self, plain: bytes) -> None:
        view = memoryview(plain)
        while view:
            written = self._tls.write(view)
            view = view[written:]

    def data_to_send(self) -> bytes:
        return self._outgoing.read()


class Pipe:
    """A non-blocking socket with an outgoing buffer, read into `on_data` until `on_eof`.

    `on_error` gets a failed read or write (a reset, a broken pipe, a TLS error); the pipe is
    closed by then. `write(data, done)` calls `done` once the bytes have left for the kernel,
    which is where a SPDY stream's data is acknowledged. With `on_write_error`, a failed write
    ends the writing only: what is queued or written later is dropped (its `done` still called)
    and the pipe goes on reading, as for a process that exited without reading all its stdin.
    With `peer_end_is_eof`, the peer's FIN while the gate is shut is its end, unread bytes and
    all: for the client, whose stdin the process was not taking anyway.
    """

    def __init__(self, sock: socket.socket, *, name: str, on_data: Callable[[bytes], None],
                 on_eof: Callable[[], None], on_error: Callable[[OSError], None],
                 tls: TlsLayer | None = None,
                 on_write_error: Callable[[OSError], None] | None = None,
                 peer_end_is_eof: bool = False) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.on_data = on_data
        self.on_eof = on_eof
        self.on_error = on_error
        self.on_write_error = on_write_error
        self.gate: Callable[[], bool] = lambda: True
        self.peer_end_is_eof = peer_end_is_eof
        self.tls = tls
        self.eof = False
        self.closed = False
        self.buffered = 0
        self.last_activity = time.monotonic()
        self._out: collections.deque[tuple[memoryview, Callable[[], None] | None]] = collections.deque()
        self._shutdown_pending = False
        self._write_shut = False
        self._write_failed = False

    def write(self, data: bytes, done: Callable[[], None] | None = None) -> None:
        if self._write_failed and not self.closed:
            if done is not None:
                done()
            return
        if self.closed or self._shutdown_pending or self._write_shut:
            return
        if self.tls is not None:
            self.tls.send(data)
            data = self.tls.data_to_send()
        if data or done is not None:
            self._out.append((memoryview(data), done))
            self.buffered += len(data)

    def shutdown_write(self) -> None:
        """Half-close once everything buffered is sent (stdin's end, a forward's FIN)."""
        self._shutdown_pending = True

    def close_after_sending(self, done: Callable[[], None]) -> None:
        """Read no more, send what is queued, close, then call `done`, which is also called when
        the peer turns out to be gone first. For a session ending on a peer that is leaving: the
        answer to its WebSocket Close must reach it, or it sees an abnormal closure (1006).
        """
        def finished() -> None:
            self.close()
            done()

        self.gate = lambda: False
        self.on_data, self.on_eof = lambda data: None, lambda: None
        self.on_write_error = None
        self.on_error = lambda exc: done()  # the pipe is closed by then
        if self.closed or not self._out or self._shutdown_pending or self._write_shut:
            finished()
            return
        self.write(b"", finished)

    @property
    def wants_write(self) -> bool:
        return bool(self._out) or (self._shutdown_pending and not self._write_shut)

    @property
    def wants_read(self) -> bool:
        return not self.eof and self.gate()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._out.clear()
            self.buffered = 0
            self.sock.close()

    def handle_read(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        self.last_activity = time.monotonic()
        if self.tls is not None and data:
            try:
                plain = self._decrypt(data)
            except ssl.SSLError as exc:
                self._fail(exc)
                return
            if plain is None:
                return
            data = plain
        if not data:
            self.eof = True
            self.on_eof()
            return
        self.on_data(data)

    def _decrypt(self, raw: bytes) -> bytes | None:
        """Plaintext, b"" at the peer's close_notify, None when nothing is readable yet."""
        assert self.tls is not None
        plain = self.tls.receive(raw)
        handshake = self.tls.data_to_send()
        if handshake:
            self._out.append((memoryview(handshake), None))
            self.buffered += len(handshake)
        if plain:
            return plain
        return b"" if self.tls.peer_closed else None

    def handle_write(self) -> None:
        while self._out:
            view, done = self._out[0]
            if view:
                try:
                    sent = self.sock.send(view)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    if self.on_write_error is None:
                        self._fail(exc)
                    else:
                        self._drop_writes(exc)
                    return
                self.last_activity = time.monotonic()
                self.buffered -= sent
                if sent < len(view):
                    self._out[0] = (view[sent:], done)
                    return
            self._out.popleft()
            if done is not None:
                done()
            if self.closed:
                return
        if self._shutdown_pending and not self._write_shut:
            self._write_shut = True
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._fail(exc)

    def handle_hangup(self, events: int) -> None:
        """What poll(2) said of a socket not read from now: an error (a reset), or the peer's end.
        A hang-up alone is no error: a pod's echo server that closed after our FIN still has its
        last bytes in the buffer, for when the gate opens."""
        if events & select.POLLERR:
            self._fail(ConnectionResetError(errno.ECONNRESET, f"the {self.name}'s connection is gone"))
        elif events & (select.POLLRDHUP | select.POLLHUP) and self.peer_end_is_eof:
            self.eof = True
            self.last_activity = time.monotonic()
            self.on_eof()

    def _fail(self, exc: OSError) -> None:
        self.close()
        self.on_error(exc)

    def _drop_writes(self, exc: OSError) -> None:
        assert self.on_write_error is not None
        self._write_failed = self._write_shut = True
        pending, self._out = self._out, collections.deque()
        self.buffered = 0
        for _, done in pending:
            if done is not None:
                done()
        self.on_write_error(exc)


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """A selector loop for one connection's pipes, its timers, and callbacks posted from other threads."""

    def __init__(self, idle_timeout: float, on_idle: Callable[[], None] | None = None) -> None:
        self.idle_timeout = idle_timeout
        self.on_idle = on_idle
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._pipes: dict[socket.socket, Pipe] = {}
        self._interest: dict[socket.socket, int] = {}
        self._posted: collections.deque[Callable[[], None]] = collections.deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._stopped = False
        self._last_activity = time.monotonic()
        self._gated_checked_at = float("-inf")

    def add(self, pipe: Pipe) -> Pipe:
        self._pipes[pipe.sock] = pipe
        return pipe

    def post(self, callback: Callable[[], None]) -> None:
        """Run `callback` on the loop's thread soon; safe from any thread."""
        self._posted.append(callback)
        try:
            self._wake_writer.send(b"\0")
        except OSError:  # the wake-up socket is full (a wake-up is pending anyway) or closed
            pass

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def stop(self) -> None:
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped

    def run(self) -> None:
        while not self._stopped:
            self._sync_interest()
            if self._stopped:
                break
            for key, mask in self._selector.select(self._wait_time()):
                if key.data is None:
                    self._drain_wake()
                    continue
                pipe: Pipe = key.data
                if mask & selectors.EVENT_WRITE and not pipe.closed:
                    pipe.handle_write()
                if mask & selectors.EVENT_READ and not pipe.closed and not self._stopped:
                    pipe.handle_read()
            while self._posted and not self._stopped:
                self._posted.popleft()()
            self._check_gated()
            self._run_timers()
            self._check_idle()

    def close(self) -> None:
        """Close every pipe and the loop's own sockets."""
        self._stopped = True
        for pipe in list(self._pipes.values()):
            pipe.close()
        self._pipes.clear()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def _sync_interest(self) -> None:
        # Flush first: a session may have queued output since the last round, and what drains
        # opens the gates of the pipes that feed it.
        for pipe in list(self._pipes.values()):
            if pipe.wants_write and not pipe.closed:
                pipe.handle_write()
        for sock, pipe in list(self._pipes.items()):
            if pipe.closed:
                del self._pipes[sock]
                if self._interest.pop(sock, 0):
                    self._selector.unregister(sock)
                continue
            mask = (selectors.EVENT_READ if pipe.wants_read else 0) | (selectors.EVENT_WRITE if pipe.wants_write else 0)
            old = self._interest.get(sock, 0)
            if mask == old:
                continue
            if not old:
                self._selector.register(sock, mask, pipe)
            elif not mask:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, mask, pipe)
            self._interest[sock] = mask

    def _gated(self) -> list[Pipe]:
        return [pipe for pipe in self._pipes.values() if not pipe.closed and not pipe.eof and not pipe.wants_read]

    def _check_gated(self) -> None:
        """Look at the sockets the selector does not watch now (their gate is shut) for a peer gone,
        once a GATED_CHECK_SECONDS: a busy session goes round its loop far more often."""
        now = time.monotonic()
        if now < self._gated_checked_at + GATED_CHECK_SECONDS or self._stopped:
            return
        gated = self._gated()
        if not gated:
            return
        self._gated_checked_at = now
        poller = select.poll()
        by_fd = {}
        for pipe in gated:
            by_fd[pipe.sock.fileno()] = pipe
            poller.register(pipe.sock, select.POLLRDHUP)  # POLLHUP and POLLERR come unasked
        for fd, events in poller.poll(0):
            pipe = by_fd[fd]
            if not pipe.closed and not self._stopped:
                pipe.handle_hangup(events)

    def _wait_time(self) -> float | None:
        if self._posted:
            return 0
        deadlines = [self._last_activity + self.idle_timeout]
        if self._gated():
            deadlines.append(max(self._gated_checked_at + GATED_CHECK_SECONDS, time.monotonic()))
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if self._timers:
            deadlines.append(self._timers[0][0])
        return max(0.0, min(deadlines) - time.monotonic())

    def _drain_wake(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now and not self._stopped:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def idle_seconds(self) -> float:
        """Since any pipe last read or wrote; safe from any thread (a snapshot of the pipes)."""
        pipes = list(self._pipes.values())
        return time.monotonic() - max([self._last_activity, *(pipe.last_activity for pipe in pipes)])

    def end_idle(self) -> None:
        """End the session as its idle timeout would (the client is told); on the loop's thread."""
        if not self._stopped:
            if self.on_idle is not None:
                self.on_idle()
            self._stopped = True

    def _check_idle(self) -> None:
        if self._pipes:
            self._last_activity = max(self._last_activity, *(pipe.last_activity for pipe in self._pipes.values()))
        if not self._stopped and time.monotonic() - self._last_activity >= self.idle_timeout:
            log.info("streaming connection idle for %.0fs: closing it", self.idle_timeout)
            self.end_idle()

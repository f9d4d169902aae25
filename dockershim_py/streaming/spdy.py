"""SPDY/3.1 framing and session state, sans-IO: bytes in, events out.

kubectl, crictl and the API server reach the streaming server over SPDY/3.1 through
moby/spdystream. This module is the protocol side of that conversation and nothing else: no
sockets, no threads, no clocks. The caller feeds received bytes to `Connection.receive_data`,
acts on the events it returns, calls the send methods, and writes `Connection.data_to_send()`
to the socket::

    conn = Connection(client_side=False)
    for event in conn.receive_data(chunk):
        if isinstance(event, StreamOpened):
            conn.reply(event.stream_id)     # kubectl waits for a SYN_REPLY on every stream
        elif isinstance(event, DataReceived):
            forward(event.data)
            conn.acknowledge_received_data(event.stream_id, len(event.data))
        elif isinstance(event, ProtocolError):
            ...                             # GOAWAY is queued: flush, then close the socket
    sock.sendall(conn.data_to_send())

API. `Connection(client_side, honor_peer_window=False)` with `receive_data(bytes) -> list[Event]`,
`data_to_send()`, `open_stream(headers, fin=) -> stream id`, `reply(id, headers=, fin=)`,
`send_headers`, `send_data(id, data, fin=)`, `reset_stream(id, status)`, `ping() -> ping id`,
`goaway(status)`, `acknowledge_received_data(id, size)`, `send_window(id)`, `stream_count`
and `closed`. Events: StreamOpened, StreamReply, HeadersReceived, DataReceived, StreamReset,
PingReceived, PingAck, GoAway, SettingsReceived, WindowUpdated, ProtocolError. The frame layer
underneath (`FrameEncoder`, `FrameDecoder`, the `*Frame` classes) is public for tests and tools.

Errors. Nothing the peer sends makes `receive_data` raise. A session error (bad framing, a
broken header compression context, a stream id out of order) yields a `ProtocolError` event,
queues GOAWAY(PROTOCOL_ERROR) and closes the connection: later input is ignored. A stream error
(bad header block, data after FIN, data for a stream never opened) queues RST_STREAM and, if the
stream was open, yields `StreamReset(remote=False)`. Misuse by the local side (upper-case
header names, replying twice) raises `LocalProtocolError`; sending on a stream that has ended,
was reset or whose connection closed raises its subclass `StreamClosedError`, which the caller
should expect (the peer may reset a stream while the caller still has output for it).
`acknowledge_received_data`, `reset_stream` and `goaway` never complain about ended streams.

Header blocks. Each direction has one zlib stream primed with the SPDY/3 dictionary for the
whole connection, as the spec requires; every header block ends with a sync flush. Header names
are lower-case ASCII; values are `str` decoded as ISO-8859-1 so every byte survives (as WSGI
does), and several values of one name are joined by NUL bytes, as on the wire.

Flow control. SPDY/3.1 has stream and session windows (64 KiB initial). This side announces
consumption: after `acknowledge_received_data` it sends WINDOW_UPDATE frames once half a window
is consumed, so a flow-controlled peer never stalls. It does not police the peer: moby/spdystream
(every kubectl and crictl) neither sends WINDOW_UPDATE nor looks at ours, and overruns our
window, so overruns are tolerated. For the same reason `send_data` ignores the peer's window by
default (blocking on a window spdystream never reopens would stall every session after 64 KiB);
`Connection(honor_peer_window=True)` makes it refuse to exceed `send_window()` instead, for
peers known to update windows.

Limits. A frame is buffered whole: at most 16 MiB (the 24-bit length). A header block may be
about 1 MiB compressed and 1 MiB decompressed; more is a session error, which also stops zlib
bombs. The peer may open any number of streams: cap `stream_count` and refuse the excess with
`reset_stream(id, RstStatus.REFUSED_STREAM)`.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

VERSION = 3
DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MAX_FRAME_LENGTH = 2**24 - 1
MAX_HEADER_BLOCK = 1 << 20

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01

_DATA_CHUNK = 64 * 1024
# A DATA frame whose body is not all here is handed on in pieces of at least this once that much
# of it is: a peer's 16 MiB frames (the 24-bit limit) cost a session no more in buffers.
DATA_PIECE_BYTES = 64 * 1024
_OUTSTANDING_PINGS = 64
_HEADER = struct.Struct(">II")
_U32 = struct.Struct(">I")
_STREAM_MASK = 0x7FFFFFFF
_MAX_CONTROL_LENGTH = MAX_HEADER_BLOCK + 1024    # room for deflate overhead and a frame prefix


def _dictionary() -> bytes:
    """The SPDY/3 header dictionary (draft 3, section 2.6.10.1), rebuilt from its definition.

    It is a list of length-prefixed header names and common values, then a run of status codes,
    dates and media types. tests/unit/test_spdy.py pins its length and Adler-32 (the dictionary
    id a peer's zlib stream announces).
    """
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base "
        "content-encoding content-language content-length content-location content-md5 "
        "content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return b"".join(_U32.pack(len(w)) + w.encode() for w in words) + tail.encode()


DICTIONARY = _dictionary()


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class LocalProtocolError(Exception):
    """The local side asked for something SPDY or the connection state does not allow."""


class StreamClosedError(LocalProtocolError):
    """The stream ended, was reset, or the connection closed; expected in races, so catchable."""


class FlowControlError(LocalProtocolError):
    """`send_data` would exceed the peer's window (only with `honor_peer_window=True`)."""


class FrameError(Exception):
    """Malformed input found by `FrameDecoder`.

    `stream_id` 0 means a session error: the decoder (its zlib context or its framing) is
    unusable from here on. Otherwise only that stream is affected; `frame_type` says which frame
    carried it, `status` which RST_STREAM code answers it.
    """

    def __init__(self, message: str, stream_id: int = 0, frame_type: int = 0,
                 status: RstStatus = RstStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.frame_type = frame_type
        self.status = status


# Frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynStreamFrame:
    stream_id: int
    headers: dict[str, str] = field(default_factory=dict)
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReplyFrame:
    stream_id: int
    headers: dict[str, str] = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsFrame:
    # (flags, id, value) in wire order; ids are 24-bit, flags 8-bit.
    entries: tuple[tuple[int, int, int], ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: dict[str, str] = field(default_factory=dict)
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes = b""
    fin: bool = False
    continued: bool = field(default=False, compare=False)  # a later piece of one frame (decoder only)


Frame = (SynStreamFrame | SynReplyFrame | RstStreamFrame | SettingsFrame | PingFrame | GoAwayFrame
         | HeadersFrame | WindowUpdateFrame | DataFrame)


def _header_problem(name: str, value: str) -> str | None:
    """Why a name/value pair is not valid SPDY/3, or None. Shared by both directions."""
    if not name:
        return "empty header name"
    if not name.isascii() or name != name.lower() or "\0" in name:
        return f"header name {name!r} is not lower-case ASCII"
    if value and (value[0] == "\0" or value[-1] == "\0" or "\0\0" in value):
        return f"header {name!r} has an empty value between NUL separators"
    return None


class FrameEncoder:
    """Serialises frames; owns the compressing half of the connection's header zlib context."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(zdict=DICTIONARY)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, DataFrame):
            _check_id(frame.stream_id)
            if len(frame.data) > MAX_FRAME_LENGTH:
                raise LocalProtocolError("DATA payload over 16 MiB")
            flags = FLAG_FIN if frame.fin else 0
            return _HEADER.pack(frame.stream_id, flags << 24 | len(frame.data)) + frame.data
        if isinstance(frame, SynStreamFrame):
            _check_id(frame.stream_id)
            _check_id(frame.associated_stream_id, zero_ok=True)
            if not 0 <= frame.priority <= 7 or not 0 <= frame.slot <= 255:
                raise LocalProtocolError("priority is 3 bits and slot 8 bits")
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            body = struct.pack(">IIBB", frame.stream_id, frame.associated_stream_id,
                               frame.priority << 5, frame.slot) + self._headers(frame.headers)
            return self._control(FrameType.SYN_STREAM, flags, body)
        if isinstance(frame, (SynReplyFrame, HeadersFrame)):
            _check_id(frame.stream_id)
            kind = FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
            body = _U32.pack(frame.stream_id) + self._headers(frame.headers)
            return self._control(kind, FLAG_FIN if frame.fin else 0, body)
        if isinstance(frame, RstStreamFrame):
            _check_id(frame.stream_id)
            if not 0 < frame.status <= 0xFFFFFFFF:
                raise LocalProtocolError("RST_STREAM status must be a non-zero 32-bit code")
            return self._control(FrameType.RST_STREAM, 0, struct.pack(">II", frame.stream_id, frame.status))
        if isinstance(frame, SettingsFrame):
            entries = bytearray(_U32.pack(len(frame.entries)))
            for flags, setting, value in frame.entries:
                if not (0 <= flags <= 0xFF and 0 <= setting <= 0xFFFFFF and 0 <= value <= 0xFFFFFFFF):
                    raise LocalProtocolError(f"bad SETTINGS entry {(flags, setting, value)}")
                entries += struct.pack(">II", flags << 24 | setting, value)
            return self._control(FrameType.SETTINGS, FLAG_SETTINGS_CLEAR_SETTINGS if frame.clear else 0, entries)
        if isinstance(frame, PingFrame):
            if not 0 <= frame.ping_id <= 0xFFFFFFFF:
                raise LocalProtocolError("PING id is 32 bits")
            return self._control(FrameType.PING, 0, _U32.pack(frame.ping_id))
        if isinstance(frame, GoAwayFrame):
            _check_id(frame.last_good_stream_id, zero_ok=True)
            if not 0 <= frame.status <= 0xFFFFFFFF:
                raise LocalProtocolError("GOAWAY status is 32 bits")
            return self._control(FrameType.GOAWAY, 0, struct.pack(">II", frame.last_good_stream_id, frame.status))
        if isinstance(frame, WindowUpdateFrame):
            _check_id(frame.stream_id, zero_ok=True)
            if not 0 < frame.delta <= MAX_WINDOW:
                raise LocalProtocolError("WINDOW_UPDATE delta must be 1..2**31-1")
            return self._control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", frame.stream_id, frame.delta))
        raise LocalProtocolError(f"not a SPDY frame: {frame!r}")

    def _control(self, kind: FrameType, flags: int, body: bytes | bytearray) -> bytes:
        if len(body) > MAX_FRAME_LENGTH:
            raise LocalProtocolError("control frame over 16 MiB")
        return _HEADER.pack(0x80000000 | VERSION << 16 | kind, flags << 24 | len(body)) + body

    def _headers(self, headers: Mapping[str, str]) -> bytes:
        parts = [_U32.pack(len(headers))]
        for name, value in headers.items():
            problem = _header_problem(name, value)
            if problem:
                raise LocalProtocolError(problem)
            try:
                raw_value = value.encode("latin-1")
            except UnicodeEncodeError:
                raise LocalProtocolError(f"header {name!r} value is not ISO-8859-1") from None
            raw_name = name.encode("ascii")
            parts += [_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value]
        block = b"".join(parts)
        if len(block) > MAX_HEADER_BLOCK:
            raise LocalProtocolError("header block over 1 MiB")
        # The compressor is only touched once the block is known good, so a refused block
        # cannot leave the peer's decompressor out of step with ours.
        return self._zlib.compress(block) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


def _check_id(stream_id: int, zero_ok: bool = False) -> None:
    if not (0 if zero_ok else 1) <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"stream id {stream_id} out of range")


# Per frame type: exact body length (None: variable) and the flag bits it may carry.
_CONTROL_RULES: dict[int, tuple[int | None, int]] = {
    FrameType.SYN_STREAM: (None, FLAG_FIN | FLAG_UNIDIRECTIONAL),
    FrameType.SYN_REPLY: (None, FLAG_FIN),
    FrameType.RST_STREAM: (8, 0),
    FrameType.SETTINGS: (None, FLAG_SETTINGS_CLEAR_SETTINGS),
    FrameType.PING: (4, 0),
    FrameType.GOAWAY: (8, 0),
    FrameType.HEADERS: (None, FLAG_FIN),
    FrameType.WINDOW_UPDATE: (8, 0),
}


class FrameDecoder:
    """Splits a byte stream into frames; owns the decompressing half of the header context.

    `receive_data` buffers, `next_frame` returns the next complete frame or None, except that a
    DATA frame is returned in pieces (DataFrame each, FIN on the last) once DATA_PIECE_BYTES of
    its body are here and not all. It raises only `FrameError`, after consuming the offending
    frame. Control frames of unknown types (CREDENTIAL included) are skipped as their bytes
    arrive, as SPDY/2 required and SPDY/3 implementations do.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._zlib = zlib.decompressobj(zdict=DICTIONARY)
        self._broken: FrameError | None = None
        self._skip_left = 0       # of an unknown control frame
        self._data_left = 0       # of a DATA frame handed on in pieces
        self._data_stream = 0
        self._data_fin = False

    def receive_data(self, data: bytes) -> None:
        if self._broken is None:
            self._buffer += data

    def next_frame(self) -> Frame | None:
        while True:
            if self._broken is not None:
                raise self._broken
            if self._skip_left:
                skipped = min(self._skip_left, len(self._buffer))
                del self._buffer[:skipped]
                self._skip_left -= skipped
                if self._skip_left:
                    return None
                continue
            if self._data_left:
                return self._data_piece()
            if len(self._buffer) < 8:
                return None
            first, flags_length = _HEADER.unpack_from(self._buffer)
            flags, length = flags_length >> 24, flags_length & 0xFFFFFF
            # Everything the 8-byte header can reveal is checked before the body arrives, so
            # an error surfaces at the same point however the stream is split.
            kind = self._check_header(first, flags, length)
            if kind is not None and kind not in _CONTROL_RULES:
                del self._buffer[:8]
                self._skip_left = length
                continue
            if len(self._buffer) < 8 + length:
                if kind is None and len(self._buffer) - 8 >= DATA_PIECE_BYTES:
                    del self._buffer[:8]
                    self._data_left, self._data_stream, self._data_fin = length, first, bool(flags & FLAG_FIN)
                    return self._data_piece(first_piece=True)
                return None
            body = self._take(8, length)
            if kind is None:
                return DataFrame(first, body, bool(flags & FLAG_FIN))
            return self._control(FrameType(kind), flags, body)

    def _data_piece(self, first_piece: bool = False) -> DataFrame | None:
        available = len(self._buffer)
        if available < self._data_left and available < DATA_PIECE_BYTES:
            return None
        piece = self._take(0, min(available, self._data_left))
        self._data_left -= len(piece)
        return DataFrame(self._data_stream, piece, self._data_fin and not self._data_left,
                         continued=not first_piece)

    def _take(self, start: int, length: int) -> bytes:
        """The buffer's bytes [start, start + length), copied once, and everything before them dropped."""
        with memoryview(self._buffer) as view:
            taken = bytes(view[start:start + length])
        del self._buffer[:start + length]
        return taken

    def _check_header(self, first: int, flags: int, length: int) -> int | None:
        """Validate a frame header; returns the control frame type, or None for DATA."""
        if not first & 0x80000000:
            if first == 0:
                self._fail("DATA frame on stream 0")
            if flags & ~FLAG_FIN:
                self._fail(f"DATA frame with undefined flags {flags:#x}")
            return None
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            self._fail(f"SPDY version {version} frame")
        if kind in _CONTROL_RULES:
            name = FrameType(kind).name
            exact, allowed = _CONTROL_RULES[kind]
            if exact is not None and length != exact:
                self._fail(f"{name} length {length}")
            if length > _MAX_CONTROL_LENGTH:
                self._fail(f"{name} of {length} bytes is too large")
            if flags & ~allowed:
                self._fail(f"{name} with undefined flags {flags:#x}")
        return kind

    def _fail(self, message: str) -> NoReturn:
        self._broken = FrameError(message)
        self._buffer.clear()
        raise self._broken

    def _control(self, kind: FrameType, flags: int, body: bytes) -> Frame:
        fin = bool(flags & FLAG_FIN)
        if kind is FrameType.SYN_STREAM:
            if len(body) < 10:
                self._fail("SYN_STREAM shorter than 10 bytes")
            stream_id, associated, priority, slot = struct.unpack_from(">IIBB", body)
            stream_id &= _STREAM_MASK
            self._require_stream(kind, stream_id)
            headers = self._headers(kind, stream_id, body[10:])
            return SynStreamFrame(stream_id, headers, associated & _STREAM_MASK, priority >> 5, slot, fin,
                                  bool(flags & FLAG_UNIDIRECTIONAL))
        if kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
            if len(body) < 4:
                self._fail(f"{kind.name} shorter than 4 bytes")
            stream_id = _U32.unpack_from(body)[0] & _STREAM_MASK
            self._require_stream(kind, stream_id)
            headers = self._headers(kind, stream_id, body[4:])
            cls = SynReplyFrame if kind is FrameType.SYN_REPLY else HeadersFrame
            return cls(stream_id, headers, fin)
        if kind is FrameType.SETTINGS:
            if len(body) < 4:
                self._fail("SETTINGS shorter than 4 bytes")
            count = _U32.unpack_from(body)[0]
            if len(body) != 4 + 8 * count:
                self._fail(f"SETTINGS with {count} entries in {len(body)} bytes")
            entries = tuple((word >> 24, word & 0xFFFFFF, value)
                            for word, value in struct.iter_unpack(">II", body[4:]))
            return SettingsFrame(entries, bool(flags & FLAG_SETTINGS_CLEAR_SETTINGS))
        if kind is FrameType.PING:
            return PingFrame(_U32.unpack(body)[0])
        first, second = struct.unpack(">II", body)
        stream_id = first & _STREAM_MASK
        if kind is FrameType.RST_STREAM:
            self._require_stream(kind, stream_id)
            if second == 0:
                self._fail("RST_STREAM with status 0")
            return RstStreamFrame(stream_id, second)
        if kind is FrameType.GOAWAY:
            return GoAwayFrame(stream_id, second)
        delta = second & _STREAM_MASK
        if delta == 0:
            if stream_id == 0:
                self._fail("session WINDOW_UPDATE with delta 0")
            raise FrameError("WINDOW_UPDATE with delta 0", stream_id, kind)
        return WindowUpdateFrame(stream_id, delta)

    def _require_stream(self, kind: FrameType, stream_id: int) -> None:
        if stream_id == 0:
            self._fail(f"{kind.name} on stream 0")

    def _headers(self, kind: FrameType, stream_id: int, compressed: bytes) -> dict[str, str]:
        # Decompression errors break the shared context for every later block: session error.
        # A block that decompresses but is malformed only concerns its own stream.
        try:
            block = self._zlib.decompress(compressed, MAX_HEADER_BLOCK)
        except zlib.error as exc:
            self._fail(f"header block does not decompress: {exc}")
        if self._zlib.unconsumed_tail:
            self._fail("header block decompresses to more than 1 MiB")
        if self._zlib.eof:
            self._fail("peer ended its header compression stream")
        try:
            return _parse_headers(block)
        except ValueError as exc:
            raise FrameError(str(exc), stream_id, kind) from None


def _parse_headers(block: bytes) -> dict[str, str]:
    if len(block) < 4:
        raise ValueError("truncated header block")
    count, offset = _U32.unpack_from(block)[0], 4
    headers: dict[str, str] = {}
    for _ in range(count):
        pair = []
        for _part in (0, 1):
            if offset + 4 > len(block):
                raise ValueError("truncated header block")
            size = _U32.unpack_from(block, offset)[0]
            offset += 4
            if offset + size > len(block):
                raise ValueError("truncated header block")
            pair.append(block[offset:offset + size].decode("latin-1"))
            offset += size
        name, value = pair
        problem = _header_problem(name, value)
        if problem:
            raise ValueError(problem)
        if name in headers:
            raise ValueError(f"duplicate header {name!r}")
        headers[name] = value
    if offset != len(block):
        raise ValueError("trailing bytes after the header block")
    return headers


# Events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOpened:
    """The peer opened a stream (SYN_STREAM). Answer with `reply` or `reset_stream`."""
    stream_id: int
    headers: dict[str, str]
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class StreamReply:
    """The peer accepted a stream this side opened (SYN_REPLY)."""
    stream_id: int
    headers: dict[str, str]
    fin: bool = False


@dataclass(frozen=True)
class HeadersReceived:
    stream_id: int
    headers: dict[str, str]
    fin: bool = False


@dataclass(frozen=True)
class DataReceived:
    """Stream data; `fin` is the peer's half-close. Acknowledge `len(data)` once consumed."""
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class StreamReset:
    """The stream is gone: reset by the peer (`remote`) or by this side over a stream error."""
    stream_id: int
    status: int
    remote: bool


@dataclass(frozen=True)
class PingReceived:
    """The peer pinged; the echo is already queued."""
    ping_id: int


@dataclass(frozen=True)
class PingAck:
    """The peer answered one of our `ping`s."""
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    """The peer will accept no new streams; streams above `last_good_stream_id` were dropped."""
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsReceived:
    settings: dict[int, int]
    clear: bool = False


@dataclass(frozen=True)
class WindowUpdated:
    """The peer opened a send window (stream 0: the session window)."""
    stream_id: int
    delta: int


@dataclass(frozen=True)
class ProtocolError:
    """A session error: GOAWAY is queued and the connection is closed."""
    message: str


Event = (StreamOpened | StreamReply | HeadersReceived | DataReceived | StreamReset | PingReceived
         | PingAck | GoAway | SettingsReceived | WindowUpdated | ProtocolError)


# Connection --------------------------------------------------------------------------------


@dataclass
class _Stream:
    local_open: bool          # this side may still send
    remote_open: bool         # the peer may still send
    replied: bool             # SYN_REPLY sent (peer's stream) or received (ours)
    send_window: int
    unacked: int = 0          # bytes consumed since our last stream WINDOW_UPDATE


class _SessionError(Exception):
    pass


class Connection:
    """One SPDY/3.1 session. `client_side` picks odd stream and ping ids (even for a server)."""

    def __init__(self, client_side: bool, *, honor_peer_window: bool = False) -> None:
        self.client_side = client_side
        self.honor_peer_window = honor_peer_window
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_stream_id = 1 if client_side else 2
        self._next_ping_id = 1 if client_side else 2
        self._pings: dict[int, None] = {}
        self._last_remote_stream_id = 0
        self._peer_initial_window = DEFAULT_WINDOW
        self._session_send_window = DEFAULT_WINDOW
        self._session_unacked = 0
        self._goaway_sent = False
        self._goaway_received = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after a session error: input is ignored and only the queued GOAWAY remains."""
        return self._closed

    @property
    def goaway_received(self) -> bool:
        return self._goaway_received

    @property
    def stream_count(self) -> int:
        """Streams not yet ended or reset: the number to cap (refuse more with REFUSED_STREAM)."""
        return len(self._streams)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def send_window(self, stream_id: int) -> int:
        """How many bytes the peer's windows admit on the stream now (may be negative)."""
        return min(self._session_send_window, self._stream(stream_id).send_window)

    # Receiving -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self._closed:
            return events
        self._decoder.receive_data(data)
        try:
            while True:
                try:
                    frame = self._decoder.next_frame()
                except FrameError as exc:
                    if exc.stream_id == 0:
                        raise _SessionError(str(exc)) from None
                    self._on_stream_frame_error(exc, events)
                    continue
                if frame is None:
                    return events
                self._handle(frame, events)
        except _SessionError as exc:
            self._queue(GoAwayFrame(self._last_remote_stream_id, GoAwayStatus.PROTOCOL_ERROR))
            self._closed = True
            self._streams.clear()
            # What came before it in the same read is about streams that are gone now: a stream
            # opened there could no longer be answered.
            return [ProtocolError(str(exc))]

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, DataFrame):
            self._on_data(frame, events)
        elif isinstance(frame, SynStreamFrame):
            self._on_syn_stream(frame, events)
        elif isinstance(frame, SynReplyFrame):
            stream = self._peer_may_send(frame.stream_id, events, our_stream=True)
            if stream is None:
                return
            if stream.replied:
                self._stream_error(frame.stream_id, RstStatus.STREAM_IN_USE, events)
                return
            stream.replied = True
            events.append(StreamReply(frame.stream_id, frame.headers, frame.fin))
            self._end_remote(frame.stream_id, stream, frame.fin)
        elif isinstance(frame, HeadersFrame):
            stream = self._peer_may_send(frame.stream_id, events)
            if stream is not None:
                events.append(HeadersReceived(frame.stream_id, frame.headers, frame.fin))
                self._end_remote(frame.stream_id, stream, frame.fin)
        elif isinstance(frame, RstStreamFrame):
            if self._streams.pop(frame.stream_id, None) is not None:
                events.append(StreamReset(frame.stream_id, frame.status, remote=True))
        elif isinstance(frame, SettingsFrame):
            self._on_settings(frame, events)
        elif isinstance(frame, PingFrame):
            if not self._is_ours(frame.ping_id):
                self._queue(frame)
                events.append(PingReceived(frame.ping_id))
            elif frame.ping_id in self._pings:      # an unsolicited echo is ignored
                del self._pings[frame.ping_id]
                events.append(PingAck(frame.ping_id))
        elif isinstance(frame, GoAwayFrame):
            self._goaway_received = True
            events.append(GoAway(frame.last_good_stream_id, frame.status))
        elif isinstance(frame, WindowUpdateFrame):
            self._on_window_update(frame, events)

    def _on_syn_stream(self, frame: SynStreamFrame, events: list[Event]) -> None:
        if not self._accept_new_stream_id(frame.stream_id):
            return
        stream = _Stream(local_open=not frame.unidirectional, remote_open=not frame.fin,
                         replied=frame.unidirectional, send_window=self._peer_initial_window)
        if stream.local_open or stream.remote_open:
            self._streams[frame.stream_id] = stream
        events.append(StreamOpened(frame.stream_id, frame.headers, frame.fin, frame.unidirectional))

    def _accept_new_stream_id(self, stream_id: int) -> bool:
        """Session rules for a new peer stream id; False if the stream is to be ignored."""
        if self._is_ours(stream_id):
            raise _SessionError(f"peer opened stream {stream_id} with this side's parity")
        if stream_id <= self._last_remote_stream_id:
            raise _SessionError(f"stream id {stream_id} not above {self._last_remote_stream_id}")
        self._last_remote_stream_id = stream_id
        return not self._goaway_sent

    def _on_stream_frame_error(self, exc: FrameError, events: list[Event]) -> None:
        if exc.frame_type == FrameType.SYN_STREAM:
            if self._accept_new_stream_id(exc.stream_id):
                self._queue(RstStreamFrame(exc.stream_id, exc.status))
        else:
            self._stream_error(exc.stream_id, exc.status, events)

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        if frame.continued and frame.stream_id not in self._streams:
            self._credit_session(len(frame.data))   # its first piece was answered already
            return
        stream = self._peer_may_send(frame.stream_id, events)
        if stream is None:
            self._credit_session(len(frame.data))   # nobody will consume it
            return
        events.append(DataReceived(frame.stream_id, frame.data, frame.fin))
        self._end_remote(frame.stream_id, stream, frame.fin)

    def _peer_may_send(self, stream_id: int, events: list[Event], our_stream: bool = False) -> _Stream | None:
        """The stream a SYN_REPLY, HEADERS or DATA frame may arrive on, or None after handling."""
        stream = self._streams.get(stream_id)
        if stream is None:
            if not (self._goaway_sent or self._was_used(stream_id)):
                self._queue(RstStreamFrame(stream_id, RstStatus.INVALID_STREAM))
            return None
        if our_stream and not self._is_ours(stream_id):
            self._stream_error(stream_id, RstStatus.PROTOCOL_ERROR, events)
            return None
        if not stream.remote_open:
            self._stream_error(stream_id, RstStatus.STREAM_ALREADY_CLOSED, events)
            return None
        if not our_stream and self._is_ours(stream_id) and not stream.replied:
            self._stream_error(stream_id, RstStatus.PROTOCOL_ERROR, events)
            return None
        return stream

    def _on_settings(self, frame: SettingsFrame, events: list[Event]) -> None:
        settings: dict[int, int] = {}
        for _flags, setting, value in frame.entries:
            settings.setdefault(setting, value)     # the first value of an id counts
        window = settings.get(SettingId.INITIAL_WINDOW_SIZE)
        if window is not None:
            if window > MAX_WINDOW:
                raise _SessionError(f"INITIAL_WINDOW_SIZE {window} over 2**31-1")
            delta, self._peer_initial_window = window - self._peer_initial_window, window
            for stream in self._streams.values():
                stream.send_window += delta
        events.append(SettingsReceived(settings, frame.clear))

    def _on_window_update(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        if frame.stream_id == 0:
            self._session_send_window += frame.delta
            if self._session_send_window > MAX_WINDOW:
                raise _SessionError("session window over 2**31-1")
        else:
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                return
            stream.send_window += frame.delta
            if stream.send_window > MAX_WINDOW:
                self._stream_error(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR, events)
                return
        events.append(WindowUpdated(frame.stream_id, frame.delta))

    def _stream_error(self, stream_id: int, status: RstStatus, events: list[Event]) -> None:
        self._queue(RstStreamFrame(stream_id, status))
        if self._streams.pop(stream_id, None) is not None:
            events.append(StreamReset(stream_id, status, remote=False))

    def _end_remote(self, stream_id: int, stream: _Stream, fin: bool) -> None:
        if fin:
            stream.remote_open = False
            self._forget_if_done(stream_id, stream)

    def _forget_if_done(self, stream_id: int, stream: _Stream) -> None:
        if not (stream.local_open or stream.remote_open):
            del self._streams[stream_id]

    # Sending -------------------------------------------------------------------------------

    def open_stream(self, headers: Mapping[str, str], *, fin: bool = False) -> int:
        """Send SYN_STREAM; returns the new stream id."""
        self._check_usable()
        if self._goaway_sent or self._goaway_received:
            raise LocalProtocolError("no new streams after GOAWAY")
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted")
        self._queue(SynStreamFrame(stream_id, dict(headers), fin=fin))
        self._next_stream_id += 2
        self._streams[stream_id] = _Stream(local_open=not fin, remote_open=True, replied=False,
                                           send_window=self._peer_initial_window)
        return stream_id

    def reply(self, stream_id: int, headers: Mapping[str, str] | None = None, *, fin: bool = False) -> None:
        """Accept a peer's stream with SYN_REPLY."""
        stream = self._sendable(stream_id, need_reply=False)
        if self._is_ours(stream_id) or stream.replied:
            raise LocalProtocolError(f"stream {stream_id} cannot be replied to")
        self._queue(SynReplyFrame(stream_id, dict(headers or {}), fin))
        stream.replied = True
        self._end_local(stream_id, stream, fin)

    def send_headers(self, stream_id: int, headers: Mapping[str, str], *, fin: bool = False) -> None:
        stream = self._sendable(stream_id)
        self._queue(HeadersFrame(stream_id, dict(headers), fin))
        self._end_local(stream_id, stream, fin)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """Queue stream data, split into frames of at most 64 KiB; `fin` half-closes."""
        stream = self._sendable(stream_id)
        if self.honor_peer_window and len(data) > self.send_window(stream_id):
            raise FlowControlError(f"{len(data)} bytes exceed the peer's window on stream {stream_id}")
        view = memoryview(data)
        for start in range(0, len(view), _DATA_CHUNK):
            chunk = bytes(view[start:start + _DATA_CHUNK])
            last = start + _DATA_CHUNK >= len(view)
            self._queue(DataFrame(stream_id, chunk, fin and last))
        if fin and not data:
            self._queue(DataFrame(stream_id, b"", True))
        stream.send_window -= len(data)
        self._session_send_window -= len(data)
        self._end_local(stream_id, stream, fin)

    def reset_stream(self, stream_id: int, status: RstStatus = RstStatus.CANCEL) -> None:
        """Abort a stream. A stream that already ended is left alone."""
        if stream_id not in self._streams:
            if not self._was_used(stream_id):
                raise LocalProtocolError(f"stream {stream_id} was never opened")
            return
        self._queue(RstStreamFrame(stream_id, status))
        del self._streams[stream_id]

    def acknowledge_received_data(self, stream_id: int, size: int) -> None:
        """Report `size` bytes of the stream's data consumed; WINDOW_UPDATEs follow as due."""
        if size < 0:
            raise LocalProtocolError("negative acknowledgement")
        if self._closed:
            return
        self._credit_session(size)
        stream = self._streams.get(stream_id)
        if stream is not None and stream.remote_open:
            stream.unacked += size
            if stream.unacked >= DEFAULT_WINDOW // 2:
                self._queue(WindowUpdateFrame(stream_id, stream.unacked))
                stream.unacked = 0

    def ping(self) -> int:
        """Send a PING; a `PingAck` with the returned id follows when the peer answers."""
        self._check_usable()
        ping_id = self._next_ping_id
        self._next_ping_id = ping_id + 2 if ping_id + 2 <= 0xFFFFFFFF else 2 - self.client_side
        if len(self._pings) >= _OUTSTANDING_PINGS:
            del self._pings[next(iter(self._pings))]
        self._pings[ping_id] = None
        self._queue(PingFrame(ping_id))
        return ping_id

    def goaway(self, status: GoAwayStatus = GoAwayStatus.OK) -> None:
        """Refuse new streams from now on; open streams carry on. No-op once closed."""
        if self._closed:
            return
        self._goaway_sent = True
        self._queue(GoAwayFrame(self._last_remote_stream_id, status))

    # Helpers -------------------------------------------------------------------------------

    def _queue(self, frame: Frame) -> None:
        self._out += self._encoder.encode(frame)

    def _check_usable(self) -> None:
        if self._closed:
            raise LocalProtocolError("the connection is closed")

    def _stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._was_used(stream_id):
                raise StreamClosedError(f"stream {stream_id} is closed")
            raise LocalProtocolError(f"stream {stream_id} was never opened")
        return stream

    def _sendable(self, stream_id: int, need_reply: bool = True) -> _Stream:
        stream = self._stream(stream_id)
        if not stream.local_open:
            raise StreamClosedError(f"stream {stream_id} is closed for sending")
        if need_reply and not self._is_ours(stream_id) and not stream.replied:
            raise LocalProtocolError(f"stream {stream_id} needs a reply first")
        return stream

    def _end_local(self, stream_id: int, stream: _Stream, fin: bool) -> None:
        if fin:
            stream.local_open = False
            self._forget_if_done(stream_id, stream)

    def _credit_session(self, size: int) -> None:
        self._session_unacked += size
        if self._session_unacked >= DEFAULT_WINDOW // 2:
            while self._session_unacked:
                delta = min(self._session_unacked, MAX_WINDOW)
                self._queue(WindowUpdateFrame(0, delta))
                self._session_unacked -= delta

    def _is_ours(self, number: int) -> bool:
        """Whether a stream or ping id has this side's parity (odd for clients)."""
        return (number % 2 == 1) == self.client_side

    def _was_used(self, stream_id: int) -> bool:
        if self._is_ours(stream_id):
            return stream_id < self._next_stream_id
        return stream_id <= self._last_remote_stream_id

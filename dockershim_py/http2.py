"""The server side of HTTP/2 (RFC 9113) as a sans-IO state machine: bytes in, events out.

It carries the CRI's gRPC calls. grpcio's server spends about four times the CPU of this framer
on a unary call (a thread hand-off per step of the call); the kubelet makes some 2 000 calls a
minute. Only what a gRPC server needs is here: no server push, priorities are read and ignored,
and outgoing header blocks use literals without indexing, so the peer's table size never matters.
Incoming header blocks are decoded here too (HeaderDecoder), with python-hyper's hpack for the
static table and Huffman codes.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20

SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9

DEFAULT_WINDOW = 65535
DEFAULT_MAX_FRAME = 16384
MAX_WINDOW = 2**31 - 1
# What we let a peer send before it must wait for our WINDOW_UPDATE: a whole CRI request of the
# usual size arrives without a round trip; the window is topped up once half of it is used.
RECEIVE_WINDOW = 1 << 20

_FRAME_HEAD = struct.Struct(">BHBBI")  # length as 1 + 2 bytes, type, flags, stream id


class ProtocolError(Exception):
    """The peer broke HTTP/2; the connection must end with GOAWAY carrying `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RequestReceived:
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    ended: bool


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes
    ended: bool


@dataclass(frozen=True)
class StreamReset:
    """The peer reset the stream, or broke its rules and was reset for it: its call is over either way."""

    stream_id: int
    code: int


@dataclass(frozen=True)
class ConnectionTerminated:
    """The peer sent GOAWAY: it starts no new stream; the open ones may finish."""

    code: int
    last_stream_id: int


Event = RequestReceived | DataReceived | StreamReset | ConnectionTerminated


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME_HEAD.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id) + payload


def _encode_integer(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """An HPACK block of literals without indexing and without Huffman: no table state to share."""
    out = bytearray()
    for name, value in headers:
        if name == b":status" and value == b"200":
            out.append(0x88)  # static table entry 8
            continue
        out.append(0x00)
        out += _encode_integer(len(name), 7)
        out += name
        out += _encode_integer(len(value), 7)
        out += value
    return bytes(out)


_STATIC_TABLE = HeaderTable.STATIC_TABLE
_ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1
_HUFFMAN_MEMORY = 1024
_BLOCK_MEMORY = 256


def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """An RFC 7541 integer and the position after it."""
    mask = (1 << prefix_bits) - 1
    value = block[position] & mask
    position += 1
    if value < mask:
        return value, position
    shift = 0
    while True:
        if position >= len(block):
            raise ProtocolError(COMPRESSION_ERROR, "a header block ends inside an integer")
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 28:
            raise ProtocolError(COMPRESSION_ERROR, "an integer in a header block is too large")


class HeaderDecoder:
    """HPACK (RFC 7541) decoding for one connection's requests.

    hpack's own Decoder took about half of the reader thread's CPU a call: a debug log call and a
    namedtuple per header. Here an indexed header is one table lookup, a Huffman-coded string (a
    client codes most) is decoded once and remembered, since the same paths and values recur, and
    so is a whole block that left the table unchanged.
    """

    def __init__(self, max_header_list_size: int, max_table_size: int = 4096) -> None:
        self._max_header_list_size = max_header_list_size
        self._allowed_table_size = max_table_size  # what our SETTINGS allow (the default: not sent)
        self._table_size_limit = max_table_size
        self._table: deque[tuple[bytes, bytes]] = deque()  # newest first, as indexed
        self._table_size = 0
        self._huffman: dict[bytes, bytes] = {}
        self._blocks: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._generation = 0  # moves whenever the table changes

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The block's headers. A block that leaves the table as it was (a client repeating a call:
        every field indexed) is remembered, until a block changes the table."""
        remembered = self._blocks.get(block)
        if remembered is not None:
            return list(remembered)
        generation = self._generation
        headers = self._decode(block)
        if generation == self._generation:
            if len(self._blocks) >= _BLOCK_MEMORY:
                self._blocks.clear()
            self._blocks[block] = tuple(headers)
        return headers

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        listed = 0
        position = 0
        end = len(block)
        while position < end:
            first = block[position]
            if first & 0x80:  # indexed header field
                if 0x80 < first < 0x80 + len(_STATIC_TABLE) + 1:  # the static table, one byte
                    header = _STATIC_TABLE[first - 0x81]
                    position += 1
                else:
                    index, position = _integer(block, position, 7)
                    header = self._entry(index)
            elif first & 0x40:  # literal with incremental indexing
                header, position = self._literal(block, position, 6)
                self._add(header)
            elif first & 0x20:  # dynamic table size update: only at the start of a block
                if headers:
                    raise ProtocolError(COMPRESSION_ERROR, "a table size update after a header field")
                size, position = _integer(block, position, 5)
                if size > self._allowed_table_size:
                    raise ProtocolError(COMPRESSION_ERROR, f"table size {size} over the {self._allowed_table_size} allowed")
                self._table_size_limit = size
                self._generation += 1
                self._blocks.clear()
                self._evict()
                continue
            else:  # literal without indexing, or never indexed
                header, position = self._literal(block, position, 4)
            listed += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
            if listed > self._max_header_list_size:
                raise ProtocolError(PROTOCOL_ERROR, "header list over the advertised maximum")
            headers.append(header)
        return headers

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= len(_STATIC_TABLE):
            return _STATIC_TABLE[index - 1]
        dynamic = index - len(_STATIC_TABLE) - 1
        if index == 0 or dynamic >= len(self._table):
            raise ProtocolError(COMPRESSION_ERROR, f"header table index {index} out of range")
        return self._table[dynamic]

    def _literal(self, block: bytes, position: int, prefix_bits: int) -> tuple[tuple[bytes, bytes], int]:
        index, position = _integer(block, position, prefix_bits)
        if index:
            name = self._entry(index)[0]
        else:
            name, position = self._string(block, position)
        value, position = self._string(block, position)
        return (name, value), position

    def _string(self, block: bytes, position: int) -> tuple[bytes, int]:
        if position >= len(block):
            raise ProtocolError(COMPRESSION_ERROR, "a header block ends before a string")
        huffman = block[position] & 0x80
        length, position = _integer(block, position, 7)
        end = position + length
        if end > len(block):
            raise ProtocolError(COMPRESSION_ERROR, "a header block ends inside a string")
        raw = block[position:end]
        if not huffman:
            return raw, end
        text = self._huffman.get(raw)
        if text is None:
            try:
                text = decode_huffman(raw)
            except HPACKDecodingError as exc:
                raise ProtocolError(COMPRESSION_ERROR, f"bad Huffman code: {exc}") from None
            if len(self._huffman) >= _HUFFMAN_MEMORY:
                self._huffman.clear()
            self._huffman[raw] = text
        return text, end

    def _add(self, header: tuple[bytes, bytes]) -> None:
        self._generation += 1
        self._blocks.clear()
        self._table.appendleft(header)
        self._table_size += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        self._evict()

    def _evict(self) -> None:
        while self._table_size > self._table_size_limit:
            name, value = self._table.pop()
            self._table_size -= len(name) + len(value) + _ENTRY_OVERHEAD


class _Stream:
    __slots__ = ("send_window", "pending", "sent", "trailers", "remote_ended", "local_ended", "unacknowledged")

    def __init__(self, send_window: int) -> None:
        self.send_window = send_window
        self.pending = bytearray()
        self.sent = 0  # bytes of `pending` already framed; dropped in bulk, not frame by frame
        self.trailers: bytes | None = None
        self.remote_ended = False
        self.local_ended = False
        self.unacknowledged = 0


class ServerConnection:
    """One HTTP/2 connection, seen from the server.

    `receive` takes the peer's bytes and returns events; the send methods queue frames;
    `data_to_send` hands out what is ready. DATA waits for flow-control credit and goes out by
    itself when a WINDOW_UPDATE arrives; trailers go out after the data they follow.
    """

    def __init__(self, max_concurrent_streams: int = 1000, max_header_list_size: int = 1 << 20) -> None:
        self._inbound = bytearray()
        self._outbound = bytearray()
        self._decoder = HeaderDecoder(max_header_list_size)
        self._max_header_list_size = max_header_list_size
        self._max_concurrent_streams = max_concurrent_streams
        self._preface_seen = False
        self._settings_seen = False
        self._streams: dict[int, _Stream] = {}
        self._highest_stream_id = 0
        self._continued: tuple[int, int, bytearray] | None = None  # stream, flags, block so far
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._send_window = DEFAULT_WINDOW
        self._unacknowledged = 0
        self._going_away = False
        self.closed = False
        settings = struct.pack(
            ">HIHIHIHI",
            SETTINGS_MAX_CONCURRENT_STREAMS, max_concurrent_streams,
            SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW,
            SETTINGS_MAX_HEADER_LIST_SIZE, max_header_list_size,
            SETTINGS_ENABLE_PUSH, 0,
        )
        self._outbound += frame(SETTINGS, 0, 0, settings)
        self._outbound += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW))

    # --- bytes in -------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Events for the bytes read so far. Raises ProtocolError after queueing GOAWAY."""
        if self.closed:
            return []
        self._inbound += data
        events: list[Event] = []
        try:
            self._parse(events)
        except ProtocolError as exc:
            self.close(exc.code, str(exc))
            raise
        return events

    def _parse(self, events: list[Event]) -> None:
        inbound = self._inbound
        if not self._preface_seen:
            if len(inbound) < len(PREFACE):
                if not PREFACE.startswith(bytes(inbound)):
                    raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client: the connection preface is missing")
                return
            if inbound[:len(PREFACE)] != PREFACE:
                raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client: the connection preface is missing")
            del inbound[:len(PREFACE)]
            self._preface_seen = True
        position = 0
        available = len(inbound)
        while available - position >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEAD.unpack_from(inbound, position)
            size = (high << 16) | low
            if size > DEFAULT_MAX_FRAME:
                raise ProtocolError(FRAME_SIZE_ERROR, f"a frame of {size} bytes is over the advertised 16384")
            if available - position - 9 < size:
                break
            payload = bytes(inbound[position + 9:position + 9 + size])
            position += 9 + size
            self._frame(kind, flags, stream_id & 0x7FFFFFFF, payload, events)
        del inbound[:position]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not self._settings_seen and kind != SETTINGS:
            raise ProtocolError(PROTOCOL_ERROR, "the first frame must be SETTINGS")
        if self._continued is not None and kind != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "a header block was interrupted by another frame")
        if kind == DATA:
            self._data(flags, stream_id, payload, events)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload, events)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload, events)
        elif kind == RST_STREAM:
            if stream_id == 0 or len(payload) != 4:
                raise ProtocolError(PROTOCOL_ERROR, "malformed RST_STREAM")
            if self._streams.pop(stream_id, None) is not None:
                events.append(StreamReset(stream_id, struct.unpack(">I", payload)[0]))
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if stream_id != 0 or len(payload) != 8:
                raise ProtocolError(PROTOCOL_ERROR, "malformed PING")
            if not flags & FLAG_ACK:
                self._outbound += frame(PING, FLAG_ACK, 0, payload)
        elif kind == GOAWAY:
            if stream_id != 0 or len(payload) < 8:
                raise ProtocolError(PROTOCOL_ERROR, "malformed GOAWAY")
            last_stream_id, code = struct.unpack_from(">II", payload)
            events.append(ConnectionTerminated(code, last_stream_id & 0x7FFFFFFF))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload, events)
        elif kind == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "a client must not send PUSH_PROMISE")
        elif kind == PRIORITY:
            if stream_id == 0:
                raise ProtocolError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._reset(stream_id, FRAME_SIZE_ERROR, events)
        # Frames of unknown types are ignored, as RFC 9113 section 4.1 asks.

    def _data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        self._unacknowledged += len(payload)
        if self._unacknowledged >= RECEIVE_WINDOW // 2:
            self._outbound += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacknowledged))
            self._unacknowledged = 0
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_ended:
            if stream_id > self._highest_stream_id:
                raise ProtocolError(PROTOCOL_ERROR, f"DATA on stream {stream_id}, which was never opened")
            # A stream we reset or finished: the peer may not know yet.
            self._reset(stream_id, STREAM_CLOSED, events)
            return
        stream.unacknowledged += len(payload)
        data = self._unpad(flags, payload)
        ended = bool(flags & FLAG_END_STREAM)
        if ended:
            stream.remote_ended = True
            self._forget_if_done(stream_id, stream)
        elif stream.unacknowledged >= RECEIVE_WINDOW // 2:
            self._outbound += frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.unacknowledged))
            stream.unacknowledged = 0
        events.append(DataReceived(stream_id, data, ended))

    def _headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & FLAG_PRIORITY:
            block = block[5:]
        if flags & FLAG_END_HEADERS:
            self._header_block(stream_id, flags, block, events)
        else:
            self._continued = (stream_id, flags, bytearray(block))

    def _continuation(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if self._continued is None or self._continued[0] != stream_id:
            raise ProtocolError(PROTOCOL_ERROR, "CONTINUATION without the HEADERS it continues")
        block = self._continued[2]
        block += payload
        if len(block) > self._max_header_list_size:
            raise ProtocolError(PROTOCOL_ERROR, "a header block over the advertised maximum")
        if flags & FLAG_END_HEADERS:
            first_flags = self._continued[1]
            self._continued = None
            self._header_block(stream_id, first_flags, bytes(block), events)

    def _header_block(self, stream_id: int, flags: int, block: bytes, events: list[Event]) -> None:
        headers = self._decoder.decode(block)  # even for a stream we refuse: the table must stay in step
        ended = bool(flags & FLAG_END_STREAM)
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers of a request: gRPC requests carry none worth reading
            if stream.remote_ended:
                self._reset(stream_id, STREAM_CLOSED, events)
                return
            if not ended:
                raise ProtocolError(PROTOCOL_ERROR, f"trailers without END_STREAM on stream {stream_id}")
            stream.remote_ended = True
            self._forget_if_done(stream_id, stream)
            events.append(DataReceived(stream_id, b"", True))
            return
        if stream_id % 2 == 0 or stream_id <= self._highest_stream_id:
            raise ProtocolError(PROTOCOL_ERROR, f"stream {stream_id} cannot be opened by a client now")
        self._highest_stream_id = stream_id
        if self._going_away or len(self._streams) >= self._max_concurrent_streams:
            self._outbound += frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM))
            return
        stream = _Stream(self._peer_initial_window)
        stream.remote_ended = ended
        self._streams[stream_id] = stream
        events.append(RequestReceived(stream_id, headers, ended))

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        self._settings_seen = True
        for offset in range(0, len(payload), 6):
            identifier, value = struct.unpack_from(">HI", payload, offset)
            if identifier == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window over 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif identifier == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise ProtocolError(PROTOCOL_ERROR, f"max frame size {value} out of range")
                self._peer_max_frame = value
            elif identifier == SETTINGS_ENABLE_PUSH and value > 1:
                raise ProtocolError(PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1")
        self._outbound += frame(SETTINGS, FLAG_ACK, 0)
        self._flush_all()

    def _window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "malformed WINDOW_UPDATE")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 for the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self._flush_all()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if increment == 0:
            self._reset(stream_id, PROTOCOL_ERROR, events)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._reset(stream_id, FLOW_CONTROL_ERROR, events)
            return
        self._flush(stream_id, stream)

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & FLAG_PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1:len(payload) - payload[0]]

    # --- bytes out ------------------------------------------------------------------------------

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        """Response headers now, or, with `end_stream`, trailers once the queued data is out."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_ended or self.closed:
            return
        block = encode_headers(headers)
        if end_stream:
            stream.trailers = block
            stream.local_ended = True
            self._flush(stream_id, stream)
        else:
            self._header_frames(stream_id, block, 0)

    def send_data(self, stream_id: int, data: bytes) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_ended or self.closed:
            return
        stream.pending += data
        self._flush(stream_id, stream)

    def pending(self, stream_id: int) -> int:
        """Bytes of `stream_id` waiting for flow-control credit (0 once the stream is gone)."""
        stream = self._streams.get(stream_id)
        return len(stream.pending) - stream.sent if stream is not None else 0

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams and not self.closed

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._outbound += frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))

    def go_away(self) -> None:
        """A graceful GOAWAY: the open streams finish; any new one is refused."""
        if not self._going_away and not self.closed:
            self._going_away = True
            self._outbound += frame(GOAWAY, 0, 0, struct.pack(">II", self._highest_stream_id, NO_ERROR))

    def close(self, code: int, message: str) -> None:
        """GOAWAY for an error: nothing more is read or sent after it."""
        if self.closed:
            return
        self.closed = True
        debug = message.encode("utf-8", "replace")[:256]
        self._outbound += frame(GOAWAY, 0, 0, struct.pack(">II", self._highest_stream_id, code) + debug)

    def data_to_send(self) -> bytes:
        out = bytes(self._outbound)
        self._outbound.clear()
        return out

    def _reset(self, stream_id: int, code: int, events: list[Event]) -> None:
        """A stream error: RST_STREAM to the peer, and StreamReset for whoever serves the stream."""
        if self._streams.pop(stream_id, None) is not None:
            events.append(StreamReset(stream_id, code))
        self._outbound += frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))

    def _header_frames(self, stream_id: int, block: bytes, flags: int) -> None:
        size = self._peer_max_frame
        if len(block) <= size:
            self._outbound += frame(HEADERS, flags | FLAG_END_HEADERS, stream_id, block)
            return
        self._outbound += frame(HEADERS, flags, stream_id, block[:size])
        rest = block[size:]
        while rest:
            piece, rest = rest[:size], rest[size:]
            self._outbound += frame(CONTINUATION, 0 if rest else FLAG_END_HEADERS, stream_id, piece)

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        pending = stream.pending
        while stream.sent < len(pending):
            allowed = min(len(pending) - stream.sent, stream.send_window, self._send_window, self._peer_max_frame)
            if allowed <= 0:
                if stream.sent > len(pending) // 2:
                    del pending[:stream.sent]
                    stream.sent = 0
                return
            self._outbound += frame(DATA, 0, stream_id, bytes(pending[stream.sent:stream.sent + allowed]))
            stream.sent += allowed
            stream.send_window -= allowed
            self._send_window -= allowed
        pending.clear()
        stream.sent = 0
        if stream.trailers is not None:
            self._header_frames(stream_id, stream.trailers, FLAG_END_STREAM)
            stream.trailers = None
            if not stream.remote_ended:  # the answer is complete: the peer need send no more
                self._outbound += frame(RST_STREAM, 0, stream_id, struct.pack(">I", NO_ERROR))
                stream.remote_ended = True
            self._forget_if_done(stream_id, stream)

    def _flush_all(self) -> None:
        for stream_id, stream in list(self._streams.items()):
            if len(stream.pending) > stream.sent or stream.trailers is not None:
                self._flush(stream_id, stream)

    def _forget_if_done(self, stream_id: int, stream: _Stream) -> None:
        if stream.remote_ended and stream.local_ended and stream.trailers is None and not stream.pending:
            del self._streams[stream_id]

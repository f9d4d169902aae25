"""The channel.k8s.io conventions, as pure functions: framing, stream types, status, resize.

Remote command (exec, attach) and port forward reuse one vocabulary over both transports:

- Over SPDY every stream carries a `streamtype` header: error, stdin, stdout, stderr, resize
  for remote command; data or error, with `port` and `requestid`, for port forward.
- Over WebSocket each message starts with a channel number: 0 stdin, 1 stdout, 2 stderr,
  3 error, 4 resize; port forward uses channel 2i for the data and 2i+1 for the error of the
  i-th requested port, and the server's first message on each of them is the port as two
  little-endian bytes. The base64 subprotocols send text messages: an ASCII digit, then the
  payload in standard base64. v5.channel.k8s.io adds a close signal, channel 255 followed by
  the number of the channel the sender has finished writing (client-go sends it for stdin).
- The error stream carries, from v4 on, one metav1.Status JSON document: Success, or Failure
  with reason NonZeroExitCode and the exit code as the message of a cause of type ExitCode,
  which is how kubectl learns the exit status. Earlier versions carry the error text only.
- The resize stream carries JSON objects {"Width": w, "Height": h}, one after another.

API. Framing: `ChannelCodec(base64=, close_signal=)` with `encode`, `encode_close`, `decode`
-> `ChannelData` / `ChannelClose` / None (get one from the negotiated protocol's `codec()`).
Remote command: the channel numbers and `streamtype` names, `expected_stream_types`,
`first_websocket_channel`, `Status.ok()` / `.exit_code(n)` / `.internal_error(msg)` with
`payload(status_json=)`, `ResizeDecoder.feed(bytes) -> [TerminalSize]`. Port forward:
`parse_port_query`, `port_channels`, `port_prefix`, `port_forward_stream(headers, stream_id)`,
`port_forward_error`.

Everything here is data in, data out; `ChannelProtocolError` is the only exception raised for
bad peer input.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255
# A base64 channel is the character '0' + channel, as the kubelet frames it; kept ASCII (a text
# message is UTF-8): 80 channels, room for 40 forwarded ports.
BASE64_CHANNELS = 0x80 - ord("0")

HEADER_STREAM_TYPE = "streamtype"
HEADER_PORT = "port"
HEADER_REQUEST_ID = "requestid"

STREAM_TYPE_STDIN = "stdin"
STREAM_TYPE_STDOUT = "stdout"
STREAM_TYPE_STDERR = "stderr"
STREAM_TYPE_ERROR = "error"
STREAM_TYPE_RESIZE = "resize"
STREAM_TYPE_DATA = "data"

CHANNEL_BY_STREAM_TYPE = {
    STREAM_TYPE_STDIN: STDIN,
    STREAM_TYPE_STDOUT: STDOUT,
    STREAM_TYPE_STDERR: STDERR,
    STREAM_TYPE_ERROR: ERROR,
    STREAM_TYPE_RESIZE: RESIZE,
}

_MAX_RESIZE_MESSAGE = 4096


class ChannelProtocolError(ValueError):
    """The peer sent something the channel protocols do not allow."""


# WebSocket framing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelData:
    channel: int
    data: bytes


@dataclass(frozen=True)
class ChannelClose:
    """v5 close signal: the peer has finished writing to `channel` (stdin EOF)."""
    channel: int


ChannelMessage = ChannelData | ChannelClose


@dataclass(frozen=True)
class ChannelCodec:
    """Message framing of one negotiated channel subprotocol.

    Binary protocols send bytes messages (`encode` returns bytes); base64 protocols send text
    messages (`encode` returns str). `decode` accepts either message type, as the kubelet does.
    """

    base64: bool = False
    close_signal: bool = False

    def encode(self, channel: int, data: bytes) -> bytes | str:
        if not 0 <= channel < (BASE64_CHANNELS if self.base64 else CLOSE):
            raise ValueError(f"channel {channel} cannot be framed")
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
        return bytes((channel,)) + data

    def encode_close(self, channel: int) -> bytes:
        if not self.close_signal:
            raise ValueError("this subprotocol has no close signal")
        if not 0 <= channel < CLOSE:
            raise ValueError(f"channel {channel} cannot be closed")
        return bytes((CLOSE, channel))

    def decode(self, message: bytes | str) -> ChannelMessage | None:
        """One received message; None for an empty message, which carries nothing."""
        raw = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        if not raw:
            return None
        if self.close_signal and raw[0] == CLOSE:
            if len(raw) != 2:
                raise ChannelProtocolError(f"close signal of {len(raw)} bytes")
            return ChannelClose(raw[1])
        if not self.base64:
            return ChannelData(raw[0], raw[1:])
        if not ord("0") <= raw[0] < ord("0") + BASE64_CHANNELS:
            raise ChannelProtocolError(f"base64 message on channel byte {raw[0]:#x}")
        try:
            data = base64.b64decode(raw[1:], validate=True)
        except binascii.Error as exc:
            raise ChannelProtocolError(f"invalid base64 payload: {exc}") from None
        return ChannelData(raw[0] - 0x30, data)


# Remote command ---------------------------------------------------------------------------


def expected_stream_types(*, stdin: bool, stdout: bool, stderr: bool, tty: bool,
                          resize: bool) -> frozenset[str]:
    """The SPDY streams a client opens for a session: the kubelet waits for all of them.

    `resize` is whether the negotiated version has the resize stream (v3 and later).
    """
    wanted = {STREAM_TYPE_ERROR}
    for flag, name in ((stdin, STREAM_TYPE_STDIN), (stdout, STREAM_TYPE_STDOUT),
                       (stderr, STREAM_TYPE_STDERR), (tty and resize, STREAM_TYPE_RESIZE)):
        if flag:
            wanted.add(name)
    return frozenset(wanted)


def first_websocket_channel(*, stdout: bool, stderr: bool) -> int:
    """The channel of the empty message that tells a WebSocket client the session is ready.

    The kubelet writes it to the lowest writable channel right after the upgrade.
    """
    if stdout:
        return STDOUT
    if stderr:
        return STDERR
    return ERROR


@dataclass(frozen=True)
class Status:
    """The outcome of a remote command, as the error stream reports it (a metav1.Status)."""

    success: bool
    message: str = ""
    reason: str = ""
    causes: tuple[dict[str, str], ...] = ()
    code: int = 0

    @classmethod
    def ok(cls) -> Status:
        return cls(success=True)

    @classmethod
    def exit_code(cls, code: int) -> Status:
        """A non-zero exit, in the form kubectl turns back into its own exit status."""
        if not 1 <= code <= 255:
            raise ValueError(f"exit code {code} is not 1..255")
        return cls(
            success=False,
            message=f"command terminated with non-zero exit code: Error executing in Docker Container: {code}",
            reason="NonZeroExitCode",
            causes=({"reason": "ExitCode", "message": str(code)},),
        )

    @classmethod
    def internal_error(cls, message: str) -> Status:
        """The command could not be run at all (HTTP 500, reason InternalError)."""
        return cls(success=False, message=f"Internal error occurred: {message}", reason="InternalError",
                   causes=({"message": message},), code=500)

    def payload(self, *, status_json: bool) -> bytes:
        """What to write on the error stream before closing it.

        v4 and later (`status_json`) carry the JSON document, with Go's field order and
        omissions; earlier versions carry only the error text, and nothing on success.
        """
        if not status_json:
            return b"" if self.success else self.message.encode()
        document: dict[str, object] = {"metadata": {}, "status": "Success" if self.success else "Failure"}
        if self.message:
            document["message"] = self.message
        if self.reason:
            document["reason"] = self.reason
        if self.causes:
            document["details"] = {"causes": list(self.causes)}
        if self.code:
            document["code"] = self.code
        return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


# What the resize scanner looks for: the start of the next object, the end of a string or an escape in
# it, and the brackets and quotes that nest outside strings.
_NOT_BLANK = re.compile(rb"[^ \t\r\n]")
_STRING_SPECIAL = re.compile(rb'["\\]')
_STRUCTURE = re.compile(rb'[{}\[\]"]')


class ResizeDecoder:
    """Incremental parser of the resize stream: concatenated JSON objects, split anywhere.

    Field names match case-insensitively and unknown fields are ignored, as Go's decoder does;
    values must fit uint16. A zero size is passed on as is: the caller skips it, since Docker
    cannot resize to zero. After an error the decoder stays broken, like the kubelet's, which
    stops reading the stream.

    Every byte is scanned once: the scan's state (nesting, inside a string, after a backslash)
    is kept between feeds, and consumed bytes are dropped once per feed, so a megabyte of
    objects in one frame costs a megabyte of scanning, not its square.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # offset in the buffer the scan resumes at
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._error: ChannelProtocolError | None = None

    def feed(self, data: bytes) -> list[TerminalSize]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        sizes: list[TerminalSize] = []
        try:
            consumed = self._scan(sizes)
            del self._buffer[:consumed]
            self._scanned -= consumed
            if len(self._buffer) > _MAX_RESIZE_MESSAGE:
                raise ChannelProtocolError("resize message over 4 KiB")
        except ChannelProtocolError as exc:
            self._error = exc
            raise
        return sizes

    def _scan(self, sizes: list[TerminalSize]) -> int:
        """Decode every object completed in the buffer; the offset of the first byte still needed."""
        buffer, end = self._buffer, len(self._buffer)
        position = self._scanned
        start = 0 if self._depth else position  # where the object being scanned began
        while position < end:
            if self._depth == 0:
                found = _NOT_BLANK.search(buffer, position)
                start = position = end if found is None else found.start()
                if found is None:
                    break
                if buffer[position] != ord("{"):
                    raise ChannelProtocolError("resize message is not a JSON object")
                self._depth = 1
                position += 1
            elif self._in_string:
                if self._escaped:
                    self._escaped = False
                    position += 1
                    continue
                found = _STRING_SPECIAL.search(buffer, position)
                if found is None:
                    position = end
                    break
                position = found.end()
                if found.group() == b"\\":
                    self._escaped = True
                else:
                    self._in_string = False
            else:
                found = _STRUCTURE.search(buffer, position)
                if found is None:
                    position = end
                    break
                position = found.end()
                token = found.group()
                if token == b'"':
                    self._in_string = True
                elif token in (b"{", b"["):
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth == 0:
                        sizes.append(_terminal_size(bytes(buffer[start:position])))
                        start = position
        self._scanned = position
        return start if self._depth else position


def _terminal_size(text: bytes) -> TerminalSize:
    try:
        document = json.loads(text.decode("utf-8"))  # UTF-8 only, as Go reads JSON
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ChannelProtocolError(f"resize message is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ChannelProtocolError("resize message is not a JSON object")
    size = {"width": 0, "height": 0}
    for key, value in document.items():
        field = key.lower()
        if field not in size or value is None:
            continue
        if type(value) is not int or not 0 <= value <= 0xFFFF:
            raise ChannelProtocolError(f"resize {key} {value!r} is not a uint16")
        size[field] = value
    return TerminalSize(size["width"], size["height"])


def resize_message(size: TerminalSize) -> bytes:
    """A resize stream message as client-go writes it (for clients and tests)."""
    return json.dumps({"Width": size.width, "Height": size.height}, separators=(",", ":")).encode() + b"\n"


# Port forward ------------------------------------------------------------------------------


def parse_port(text: str) -> int:
    """A port as the kubelet accepts it: decimal, 1..65535."""
    digits = text.lstrip("0")  # leading zeros are fine (Go's ParseUint); thousands of digits are not int()'s
    if not text.isascii() or not text.isdigit() or len(digits) > 5 or not 1 <= int(digits or "0") <= 0xFFFF:
        raise ChannelProtocolError(f"unable to parse {text[:20]!r} as a port")
    return int(digits)


def parse_port_query(values: Sequence[str]) -> list[int]:
    """The ports of a WebSocket port forward: every `port` query value, each comma-separated."""
    if not values:
        raise ChannelProtocolError('query parameter "port" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise ChannelProtocolError('query parameter "port" cannot be empty')
        ports.extend(parse_port(part) for part in value.split(","))
    return ports


def port_channels(index: int) -> tuple[int, int]:
    """The (data, error) WebSocket channels of the index-th requested port."""
    if not 0 <= index < 127:
        raise ValueError(f"port index {index} has no channel pair")
    return 2 * index, 2 * index + 1


def port_prefix(port: int) -> bytes:
    """The first message the server sends on both channels of a port: the port, little-endian."""
    return port.to_bytes(2, "little")


@dataclass(frozen=True)
class PortForwardStream:
    stream_type: str
    port: int
    request_id: str


def port_forward_stream(headers: Mapping[str, str], stream_id: int) -> PortForwardStream:
    """Validate a port-forward SPDY stream's headers (reject it with RST on error).

    Clients without `requestid` (before Kubernetes 1.4) get the kubelet's best-effort pairing:
    a connection's error stream and its data stream opened right after share stream_id - 2.
    """
    port_text = headers.get(HEADER_PORT, "")
    if not port_text:
        raise ChannelProtocolError('"port" header is required')
    port = parse_port(port_text)
    stream_type = headers.get(HEADER_STREAM_TYPE, "")
    if stream_type not in (STREAM_TYPE_DATA, STREAM_TYPE_ERROR):
        raise ChannelProtocolError(f"invalid stream type {stream_type!r}")
    request_id = headers.get(HEADER_REQUEST_ID, "")
    if not request_id:
        request_id = str(stream_id if stream_type == STREAM_TYPE_ERROR else stream_id - 2)
    return PortForwardStream(stream_type, port, request_id)


def port_forward_error(message: str, *, close_connection: bool) -> bytes:
    """The error-stream document of a failed forward; client-go closes the session if asked."""
    document: dict[str, object] = {"message": message}
    if close_connection:
        document = {"closeConnection": True, **document}
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"

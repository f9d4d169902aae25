"""The server side of a streaming WebSocket, on wsproto: channel messages in and out, or a SPDY tunnel.

The HTTP layer parses the upgrade request (h11) and negotiates the subprotocol
(`negotiation`); this module then takes over the connection::

    session = WebSocketSession(request.headers, request.target, protocol.name or None, codec)
    sock.sendall(session.data_to_send())                    # the 101 answer
    for event in session.receive_data(chunk):               # chunk=None at EOF
        ChannelData / ChannelClose -> stdin, resize, a port's data...
        TunnelData                 -> spdy.Connection.receive_data(event.data)
        Closed                     -> flush data_to_send(), close the socket
    session.send(channels.STDOUT, output); session.close()

`codec=None` makes a SPDY tunnel (SPDY/3.1+portforward.k8s.io): every binary message carries
raw SPDY bytes, with no channel byte and no second handshake.

Pings are answered and a peer's close is acknowledged without the caller's help. Nothing the
peer sends raises: a malformed message (bad base64, a text message in a tunnel, a message over
`max_message` bytes) closes the connection with the matching close code and yields `Closed`.
A handshake that is not a valid WebSocket request raises `HandshakeError` with the HTTP
answer to give instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Request, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

from .channels import ChannelClose, ChannelCodec, ChannelData, ChannelProtocolError
from .negotiation import Rejection

DEFAULT_MAX_MESSAGE = 1 << 20


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket handshake; answer with `rejection`."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.body)
        self.rejection = rejection


@dataclass(frozen=True)
class TunnelData:
    """Bytes of the SPDY stream tunnelled in binary messages."""
    data: bytes


@dataclass(frozen=True)
class Closed:
    """The WebSocket is finished (peer close, EOF, or a protocol error): close the socket."""
    code: int
    reason: str = ""


Event = ChannelData | ChannelClose | TunnelData | Closed


class WebSocketSession:
    def __init__(self, headers: Sequence[tuple[bytes, bytes]], target: bytes | str,
                 subprotocol: str | None, codec: ChannelCodec | None, *,
                 max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._codec = codec
        self._max_message = max_message
        self._ws = WSConnection(ConnectionType.SERVER)
        self._closed = False
        self._parts: list[bytes] = []
        self._size = 0
        self._text = False
        try:
            self._ws.initiate_upgrade_connection(list(headers), target)
            request = next(self._ws.events())
        except (RemoteProtocolError, h11.ProtocolError, UnicodeDecodeError) as exc:  # wsproto reads some headers as ASCII
            hint = getattr(exc, "event_hint", None)
            status = getattr(hint, "status_code", 400)
            extra = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in getattr(hint, "headers", []))
            raise HandshakeError(Rejection(status, str(exc), extra)) from None
        assert isinstance(request, Request)
        self._out = bytearray(self._ws.send(AcceptConnection(subprotocol=subprotocol)))

    @property
    def closed(self) -> bool:
        return self._closed

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes | None) -> list[Event]:
        """Feed received bytes (None at EOF) and get what they meant."""
        events: list[Event] = []
        if self._closed:
            return events
        self._ws.receive_data(data)
        for event in self._ws.events():
            if isinstance(event, Ping):
                self._out += self._ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._out += self._ws.send(event.response())
                elif self._ws.state is ConnectionState.OPEN:        # wsproto's own parse error
                    self._out += self._ws.send(CloseConnection(event.code, event.reason))
                self._finish(events, event.code, event.reason or "")
            elif isinstance(event, Message):
                self._on_message(event, events)
            if self._closed:
                break
        return events

    def send(self, channel: int, data: bytes) -> None:
        """Queue one channel message."""
        if self._codec is None:
            raise ValueError("a SPDY tunnel has no channels")
        self._send(self._codec.encode(channel, data))

    def send_tunnel(self, data: bytes) -> None:
        """Queue SPDY bytes as one binary message."""
        if self._codec is not None:
            raise ValueError("not a SPDY tunnel")
        if data:
            self._send(data)

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; `Closed` follows when the peer answers."""
        if self._ws.state is ConnectionState.OPEN:
            self._out += self._ws.send(CloseConnection(code, reason))

    def _send(self, message: bytes | str) -> None:
        if self._ws.state is ConnectionState.OPEN:
            event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
            self._out += self._ws.send(event)

    def _on_message(self, event: Message[Any], events: list[Event]) -> None:
        # Fragments are joined as bytes; whether the message was text is fixed by its first.
        if not self._parts:
            self._text = isinstance(event, TextMessage)
        part = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
        self._parts.append(part)
        self._size += len(part)
        if self._size > self._max_message:
            self._fail(events, CloseReason.MESSAGE_TOO_BIG, f"message over {self._max_message} bytes")
            return
        if not event.message_finished:
            return
        message = b"".join(self._parts)
        self._parts, self._size = [], 0
        if self._codec is None:
            if self._text:
                self._fail(events, CloseReason.UNSUPPORTED_DATA, "text message in a SPDY tunnel")
            elif message:
                events.append(TunnelData(message))
            return
        try:
            decoded = self._codec.decode(message)
        except ChannelProtocolError as exc:
            self._fail(events, CloseReason.INVALID_FRAME_PAYLOAD_DATA, str(exc))
            return
        if decoded is not None:
            events.append(decoded)

    def _fail(self, events: list[Event], code: int, reason: str) -> None:
        self.close(code, reason)
        self._finish(events, code, reason)

    def _finish(self, events: list[Event], code: int, reason: str) -> None:
        self._closed = True
        events.append(Closed(int(code), reason))

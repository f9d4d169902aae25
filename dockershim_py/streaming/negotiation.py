"""Which transport and subprotocol an upgrade request gets, or how to refuse it, as kubectl expects.

The streaming server answers one HTTP request per session and upgrades it either to SPDY/3.1
(`Upgrade: SPDY/3.1`, subprotocol offered in `X-Stream-Protocol-Version`) or to WebSocket
(subprotocol offered in `Sec-WebSocket-Protocol`). The wiring calls::

    transport = upgrade_transport(headers)                  # None: answer 400
    offered = offered_protocols(headers, transport)
    result = negotiate_remote_command(transport, offered)   # or negotiate_port_forward
    if isinstance(result, Rejection): answer result.status, result.headers, result.body
    elif SPDY: answer 101 with spdy_upgrade_headers(result.name)
    else: accept the WebSocket with subprotocol result.name or None when it is ""

The choices follow the kubelet's streaming library, which kubectl, crictl and the API server
were written against:

- The first offered protocol the server supports wins (the client's order, not ours).
- SPDY remote command: v5 (same as v4 on SPDY: the close signal is WebSocket-only), v4, v3,
  v2, channel.k8s.io. Port forward: portforward.k8s.io. A missing header is answered 400; no
  match is answered 403 with one `X-Accepted-Stream-Protocol-Versions` header per supported
  protocol, and kubectl reports the body ("unable to upgrade connection: ...").
- WebSocket remote command: v5, v4 and their base64 form, channel.k8s.io, base64.channel.k8s.io;
  no subprotocol at all means binary channel.k8s.io semantics (v1) with no subprotocol echoed.
  Port forward: v4.channel.k8s.io, v4.base64.channel.k8s.io or none (channel pairs), and
  SPDY/3.1+portforward.k8s.io (SPDY frames inside binary messages, no second handshake). No
  match is answered 403, which makes newer kubectl fall back to SPDY.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .channels import ChannelCodec

HEADER_PROTOCOL_VERSION = "X-Stream-Protocol-Version"
HEADER_ACCEPTED_PROTOCOL_VERSIONS = "X-Accepted-Stream-Protocol-Versions"
SPDY_31 = "SPDY/3.1"
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"
PORT_FORWARD_V1 = "portforward.k8s.io"

_VERSIONS = {
    "v5.channel.k8s.io": 5,
    "v4.channel.k8s.io": 4,
    "v3.channel.k8s.io": 3,
    "v2.channel.k8s.io": 2,
    "channel.k8s.io": 1,
}
SPDY_REMOTE_COMMAND = tuple(_VERSIONS)
SPDY_PORT_FORWARD = (PORT_FORWARD_V1,)
WEBSOCKET_REMOTE_COMMAND = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io",
                            "channel.k8s.io", "base64.channel.k8s.io")
WEBSOCKET_PORT_FORWARD = (SPDY_TUNNEL_PREFIX + PORT_FORWARD_V1, "v4.channel.k8s.io",
                          "v4.base64.channel.k8s.io")

_CONNECTION_UPGRADE = re.compile(r"(^|,)\s*upgrade\s*($|,)", re.IGNORECASE)


class Transport(enum.Enum):
    SPDY = "spdy"
    WEBSOCKET = "websocket"


@dataclass(frozen=True)
class RemoteCommandProtocol:
    """A negotiated exec/attach protocol; `name` is echoed to the client ("" = nothing)."""

    name: str
    transport: Transport
    version: int
    base64: bool = False

    @property
    def resize(self) -> bool:
        """Whether the client opens a resize stream (channel 4) for a TTY."""
        return self.version >= 3

    @property
    def status_json(self) -> bool:
        """Whether the error stream carries a Status document (with the exit code)."""
        return self.version >= 4

    @property
    def close_signal(self) -> bool:
        """Whether half-close arrives as a channel 255 message (WebSocket v5)."""
        return self.transport is Transport.WEBSOCKET and self.version >= 5

    def codec(self) -> ChannelCodec:
        """The WebSocket message framing of this protocol."""
        if self.transport is not Transport.WEBSOCKET:
            raise ValueError("SPDY sessions have streams, not channels")
        return ChannelCodec(base64=self.base64, close_signal=self.close_signal)


@dataclass(frozen=True)
class PortForwardProtocol:
    """A negotiated port-forward protocol: SPDY streams, WebSocket channel pairs, or SPDY tunnelled."""

    name: str
    transport: Transport
    base64: bool = False
    spdy_tunnel: bool = False

    @property
    def spdy(self) -> bool:
        """Whether the session speaks SPDY (directly or inside WebSocket binary messages)."""
        return self.transport is Transport.SPDY or self.spdy_tunnel

    def codec(self) -> ChannelCodec:
        if self.spdy:
            raise ValueError("SPDY sessions have streams, not channels")
        return ChannelCodec(base64=self.base64)


@dataclass(frozen=True)
class Rejection:
    """An HTTP answer that refuses the upgrade."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


def upgrade_transport(headers: Iterable[tuple[bytes, bytes]]) -> Transport | None:
    """The transport an HTTP request (h11-style header pairs) asks to upgrade to, if any."""
    connection = ",".join(_values(headers, "connection"))
    upgrade = ",".join(_values(headers, "upgrade")).strip().lower()
    if not _CONNECTION_UPGRADE.search(connection):
        return None
    if upgrade == "websocket":
        return Transport.WEBSOCKET
    if SPDY_31.lower() in upgrade:
        return Transport.SPDY
    return None


def offered_protocols(headers: Iterable[tuple[bytes, bytes]], transport: Transport) -> list[str]:
    """The subprotocols the client offers, in its order (comma lists and repeats flattened)."""
    name = HEADER_PROTOCOL_VERSION if transport is Transport.SPDY else "Sec-WebSocket-Protocol"
    return [item.strip() for value in _values(headers, name) for item in value.split(",") if item.strip()]


def spdy_upgrade_headers(protocol: str) -> list[tuple[str, str]]:
    """The headers of the 101 answer to a SPDY upgrade."""
    return [("Connection", "Upgrade"), ("Upgrade", SPDY_31), (HEADER_PROTOCOL_VERSION, protocol)]


def negotiate_remote_command(transport: Transport,
                             offered: Sequence[str]) -> RemoteCommandProtocol | Rejection:
    if transport is Transport.SPDY:
        chosen = _negotiate_spdy(offered, SPDY_REMOTE_COMMAND)
        if isinstance(chosen, Rejection):
            return chosen
        return RemoteCommandProtocol(chosen, transport, _VERSIONS[chosen])
    if not offered:
        return RemoteCommandProtocol("", transport, 1)
    chosen = _negotiate_websocket(offered, WEBSOCKET_REMOTE_COMMAND)
    if isinstance(chosen, Rejection):
        return chosen
    return RemoteCommandProtocol(chosen, transport, _VERSIONS[chosen.replace("base64.", "")],
                                 base64="base64" in chosen)


def negotiate_port_forward(transport: Transport,
                           offered: Sequence[str]) -> PortForwardProtocol | Rejection:
    if transport is Transport.SPDY:
        chosen = _negotiate_spdy(offered, SPDY_PORT_FORWARD)
        if isinstance(chosen, Rejection):
            return chosen
        return PortForwardProtocol(chosen, transport)
    if not offered:
        return PortForwardProtocol("", transport)
    chosen = _negotiate_websocket(offered, WEBSOCKET_PORT_FORWARD)
    if isinstance(chosen, Rejection):
        return chosen
    return PortForwardProtocol(chosen, transport, base64="base64" in chosen,
                               spdy_tunnel=chosen.startswith(SPDY_TUNNEL_PREFIX))


def _negotiate_spdy(offered: Sequence[str], supported: Sequence[str]) -> str | Rejection:
    if not offered:
        return Rejection(400, f"unable to upgrade: {HEADER_PROTOCOL_VERSION} is required")
    chosen = _first_common(offered, supported)
    if chosen is None:
        return Rejection(
            403,
            "unable to upgrade: unable to negotiate protocol: "
            f"client supports {_go_list(offered)}, server accepts {_go_list(supported)}",
            tuple((HEADER_ACCEPTED_PROTOCOL_VERSIONS, name) for name in supported),
        )
    return chosen


def _negotiate_websocket(offered: Sequence[str], supported: Sequence[str]) -> str | Rejection:
    chosen = _first_common(offered, supported)
    if chosen is None:
        return Rejection(403, f"requested protocol(s) are not supported: {_go_list(offered)}; "
                              f"supports {_go_list(supported)}")
    return chosen


def _first_common(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    return next((name for name in offered if name in supported), None)


def _go_list(items: Sequence[str]) -> str:
    """A string slice as Go's %v prints it, since kubectl shows our text verbatim."""
    return "[" + " ".join(items) + "]"


def _values(headers: Iterable[tuple[bytes, bytes]], name: str) -> list[str]:
    wanted = name.lower().encode()
    return [value.decode("latin-1") for key, value in headers if key.lower() == wanted]

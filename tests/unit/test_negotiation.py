"""Upgrade detection and subprotocol negotiation, with the kubelet's choices and refusals."""

from __future__ import annotations

import pytest

from dockershim_py.streaming import negotiation
from dockershim_py.streaming.channels import ChannelCodec
from dockershim_py.streaming.negotiation import (
    PortForwardProtocol,
    Rejection,
    RemoteCommandProtocol,
    Transport,
    negotiate_port_forward,
    negotiate_remote_command,
)

SPDY, WS = Transport.SPDY, Transport.WEBSOCKET


@pytest.mark.parametrize(("headers", "expected"), [
    ([(b"connection", b"Upgrade"), (b"upgrade", b"SPDY/3.1")], SPDY),
    ([(b"Connection", b"keep-alive, upgrade"), (b"Upgrade", b"spdy/3.1")], SPDY),
    ([(b"connection", b"Upgrade"), (b"upgrade", b"websocket")], WS),
    ([(b"connection", b"keep-alive"), (b"connection", b"Upgrade"), (b"upgrade", b"WebSocket")], WS),
    ([(b"upgrade", b"websocket")], None),
    ([(b"connection", b"upgraded"), (b"upgrade", b"websocket")], None),
    ([(b"connection", b"Upgrade"), (b"upgrade", b"h2c")], None),
    ([], None),
])
def test_upgrade_transport(headers: list[tuple[bytes, bytes]], expected: Transport | None) -> None:
    assert negotiation.upgrade_transport(headers) is expected


def test_offered_protocols_flatten_lists_in_client_order() -> None:
    headers = [(b"x-stream-protocol-version", b"v4.channel.k8s.io, v3.channel.k8s.io"),
               (b"X-Stream-Protocol-Version", b"v2.channel.k8s.io"),
               (b"sec-websocket-protocol", b"v5.channel.k8s.io,,v4.channel.k8s.io")]
    assert negotiation.offered_protocols(headers, SPDY) == ["v4.channel.k8s.io", "v3.channel.k8s.io",
                                                            "v2.channel.k8s.io"]
    assert negotiation.offered_protocols(headers, WS) == ["v5.channel.k8s.io", "v4.channel.k8s.io"]


# SPDY -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "name", "version"), [
    # kubectl and crictl offer newest first; the client's order wins.
    (["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"], "v5.channel.k8s.io", 5),
    (["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"], "v4.channel.k8s.io", 4),
    (["channel.k8s.io", "v4.channel.k8s.io"], "channel.k8s.io", 1),
    (["v9.channel.k8s.io", "v3.channel.k8s.io"], "v3.channel.k8s.io", 3),
    (["v2.channel.k8s.io"], "v2.channel.k8s.io", 2),
])
def test_spdy_remote_command(offered: list[str], name: str, version: int) -> None:
    protocol = negotiate_remote_command(SPDY, offered)
    assert protocol == RemoteCommandProtocol(name, SPDY, version)


def test_spdy_version_semantics() -> None:
    v5, v4, v3, v2 = (negotiate_remote_command(SPDY, [f"v{n}.channel.k8s.io"]) for n in (5, 4, 3, 2))
    assert isinstance(v5, RemoteCommandProtocol) and isinstance(v2, RemoteCommandProtocol)
    assert isinstance(v4, RemoteCommandProtocol) and isinstance(v3, RemoteCommandProtocol)
    assert v5.status_json and not v5.close_signal          # v5 is v4 on SPDY
    assert v4.status_json and v4.resize
    assert v3.resize and not v3.status_json
    assert not v2.resize
    with pytest.raises(ValueError):
        v4.codec()


def test_spdy_headers_of_the_101() -> None:
    assert negotiation.spdy_upgrade_headers("v4.channel.k8s.io") == [
        ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")]


def test_spdy_without_a_protocol_header_is_a_bad_request() -> None:
    rejection = negotiate_remote_command(SPDY, [])
    assert rejection == Rejection(400, "unable to upgrade: X-Stream-Protocol-Version is required")


def test_spdy_without_a_common_protocol_is_forbidden_as_kubectl_expects() -> None:
    rejection = negotiate_remote_command(SPDY, ["v9.channel.k8s.io"])
    assert isinstance(rejection, Rejection) and rejection.status == 403
    assert rejection.body == (
        "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io], server accepts "
        "[v5.channel.k8s.io v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]")
    assert [value for name, value in rejection.headers if name == "X-Accepted-Stream-Protocol-Versions"] == \
        list(negotiation.SPDY_REMOTE_COMMAND)


def test_spdy_port_forward() -> None:
    assert negotiate_port_forward(SPDY, ["portforward.k8s.io"]) == PortForwardProtocol("portforward.k8s.io", SPDY)
    rejection = negotiate_port_forward(SPDY, ["v4.channel.k8s.io"])
    assert isinstance(rejection, Rejection) and rejection.status == 403
    assert rejection.headers == (("X-Accepted-Stream-Protocol-Versions", "portforward.k8s.io"),)
    assert negotiate_port_forward(SPDY, []) == Rejection(
        400, "unable to upgrade: X-Stream-Protocol-Version is required")


# WebSocket --------------------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "expected"), [
    (["v5.channel.k8s.io"], RemoteCommandProtocol("v5.channel.k8s.io", WS, 5)),
    (["v4.base64.channel.k8s.io", "v4.channel.k8s.io"], RemoteCommandProtocol("v4.base64.channel.k8s.io", WS, 4, True)),
    (["v4.channel.k8s.io"], RemoteCommandProtocol("v4.channel.k8s.io", WS, 4)),
    (["base64.channel.k8s.io"], RemoteCommandProtocol("base64.channel.k8s.io", WS, 1, True)),
    (["channel.k8s.io"], RemoteCommandProtocol("channel.k8s.io", WS, 1)),
    (["x", "channel.k8s.io"], RemoteCommandProtocol("channel.k8s.io", WS, 1)),
    ([], RemoteCommandProtocol("", WS, 1)),               # no subprotocol: binary, nothing echoed
])
def test_websocket_remote_command(offered: list[str], expected: RemoteCommandProtocol) -> None:
    assert negotiate_remote_command(WS, offered) == expected


def test_websocket_codecs() -> None:
    def codec(name: str) -> ChannelCodec:
        protocol = negotiate_remote_command(WS, [name])
        assert isinstance(protocol, RemoteCommandProtocol)
        return protocol.codec()

    assert codec("v5.channel.k8s.io") == ChannelCodec(close_signal=True)
    assert codec("v4.base64.channel.k8s.io") == ChannelCodec(base64=True)
    assert codec("channel.k8s.io") == ChannelCodec()


def test_websocket_v2_and_v3_are_not_websocket_protocols() -> None:
    # The kubelet never served them over WebSocket; client-go's WebSocket executor offers only v5.
    rejection = negotiate_remote_command(WS, ["v3.channel.k8s.io", "v2.channel.k8s.io"])
    assert isinstance(rejection, Rejection) and rejection.status == 403


def test_websocket_without_a_common_protocol_is_forbidden() -> None:
    # kubectl takes any non-101 answer as an upgrade failure and falls back to SPDY.
    rejection = negotiate_remote_command(WS, ["v6.channel.k8s.io"])
    assert isinstance(rejection, Rejection) and rejection.status == 403
    assert "v6.channel.k8s.io" in rejection.body


@pytest.mark.parametrize(("offered", "expected"), [
    (["SPDY/3.1+portforward.k8s.io"], PortForwardProtocol("SPDY/3.1+portforward.k8s.io", WS, spdy_tunnel=True)),
    (["v4.channel.k8s.io"], PortForwardProtocol("v4.channel.k8s.io", WS)),
    (["v4.base64.channel.k8s.io"], PortForwardProtocol("v4.base64.channel.k8s.io", WS, base64=True)),
    ([], PortForwardProtocol("", WS)),
])
def test_websocket_port_forward(offered: list[str], expected: PortForwardProtocol) -> None:
    assert negotiate_port_forward(WS, offered) == expected


def test_port_forward_transport_semantics() -> None:
    tunnel = negotiate_port_forward(WS, ["SPDY/3.1+portforward.k8s.io"])
    channels = negotiate_port_forward(WS, ["v4.base64.channel.k8s.io"])
    assert isinstance(tunnel, PortForwardProtocol) and isinstance(channels, PortForwardProtocol)
    assert tunnel.spdy and not channels.spdy
    assert channels.codec() == ChannelCodec(base64=True)
    with pytest.raises(ValueError):
        tunnel.codec()
    rejection = negotiate_port_forward(WS, ["SPDY/3.1+v4.channel.k8s.io"])
    assert isinstance(rejection, Rejection) and rejection.status == 403

"""channel.k8s.io conventions: framing (binary, base64, v5 close), error-stream Status documents,
resize parsing, port-forward channels and headers; and the WebSocket session that carries them."""

from __future__ import annotations

import base64
import contextlib
import json
import time

import h11
import pytest
import wsproto
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request, TextMessage

from dockershim_py.streaming import channels, spdy
from dockershim_py.streaming.channels import (
    ChannelClose,
    ChannelCodec,
    ChannelData,
    ChannelProtocolError,
    ResizeDecoder,
    Status,
    TerminalSize,
)
from dockershim_py.streaming.websocket import Closed, HandshakeError, TunnelData, WebSocketSession

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BINARY, BASE64, V5 = ChannelCodec(), ChannelCodec(base64=True), ChannelCodec(close_signal=True)


# Framing ----------------------------------------------------------------------------------


def test_binary_framing_is_a_channel_byte() -> None:
    assert BINARY.encode(channels.STDOUT, b"hi\n") == b"\x01hi\n"
    assert BINARY.decode(b"\x00foo\n") == ChannelData(channels.STDIN, b"foo\n")
    assert BINARY.decode(b"\x04") == ChannelData(channels.RESIZE, b"")
    assert BINARY.decode(b"") is None


def test_base64_framing_uses_an_ascii_digit_and_text() -> None:
    # The kubelet's own example: "foo\n" on stdin, "\n" on stdout.
    assert BASE64.decode("0Zm9vCg==") == ChannelData(channels.STDIN, b"foo\n")
    assert BASE64.encode(channels.STDOUT, b"\n") == "1Cg=="
    assert BASE64.decode(b"3") == ChannelData(channels.ERROR, b"")
    with pytest.raises(ChannelProtocolError):
        BASE64.decode("0not base64!")
    with pytest.raises(ChannelProtocolError):
        BASE64.decode("!Zm9v")  # below '0'
    with pytest.raises(ChannelProtocolError):
        BASE64.decode("\u00e9Zm9v")  # not ASCII


def test_base64_channels_go_past_nine_as_the_kubelets_do() -> None:
    """A base64 port forward of six ports uses channels 0 to 11: the kubelet frames channel 10 as ':'."""
    assert BASE64.encode(10, b"\n") == ":Cg=="
    assert BASE64.decode(";Cg==") == ChannelData(11, b"\n")
    assert BASE64.decode(BASE64.encode(channels.BASE64_CHANNELS - 1, b"x")) == ChannelData(79, b"x")
    with pytest.raises(ValueError):
        BASE64.encode(channels.BASE64_CHANNELS, b"")


def test_v5_close_signal() -> None:
    assert V5.encode_close(channels.STDOUT) == b"\xff\x01"
    assert V5.decode(b"\xff\x00") == ChannelClose(channels.STDIN)
    with pytest.raises(ChannelProtocolError):
        V5.decode(b"\xff\x00\x00")
    # Before v5, 255 is just a channel nobody uses.
    assert BINARY.decode(b"\xff\x00") == ChannelData(255, b"\x00")
    with pytest.raises(ValueError):
        BINARY.encode_close(0)
    with pytest.raises(ValueError):
        V5.encode(channels.CLOSE, b"")


@PROPERTY
@given(st.integers(0, 254), st.binary(max_size=200), st.booleans())
def test_framing_round_trips(channel: int, data: bytes, use_base64: bool) -> None:
    codec = ChannelCodec(base64=use_base64, close_signal=not use_base64)
    if use_base64:
        channel %= channels.BASE64_CHANNELS
    assert codec.decode(codec.encode(channel, data)) == ChannelData(channel, data)


@PROPERTY
@given(st.one_of(st.binary(max_size=50), st.text(max_size=50)), st.booleans(), st.booleans())
def test_decoding_garbage_raises_only_channel_protocol_error(message: bytes | str, b64: bool, close: bool) -> None:
    with contextlib.suppress(ChannelProtocolError):
        ChannelCodec(base64=b64, close_signal=close).decode(message)


# Remote command semantics -----------------------------------------------------------------


def test_stream_ids_are_the_file_descriptors() -> None:
    assert channels.CHANNEL_BY_STREAM_TYPE == {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}


@pytest.mark.parametrize(("flags", "resize", "expected"), [
    ({"stdin": True, "stdout": True, "stderr": False, "tty": True}, True, {"error", "stdin", "stdout", "resize"}),
    ({"stdin": True, "stdout": True, "stderr": False, "tty": True}, False, {"error", "stdin", "stdout"}),
    ({"stdin": False, "stdout": True, "stderr": True, "tty": False}, True, {"error", "stdout", "stderr"}),
])
def test_expected_spdy_streams(flags: dict[str, bool], resize: bool, expected: set[str]) -> None:
    assert channels.expected_stream_types(**flags, resize=resize) == expected


def test_first_websocket_channel_is_the_lowest_writable_one() -> None:
    assert channels.first_websocket_channel(stdout=True, stderr=True) == channels.STDOUT
    assert channels.first_websocket_channel(stdout=False, stderr=True) == channels.STDERR
    assert channels.first_websocket_channel(stdout=False, stderr=False) == channels.ERROR


def test_success_status() -> None:
    assert Status.ok().payload(status_json=True) == b'{"metadata":{},"status":"Success"}'
    assert Status.ok().payload(status_json=False) == b""


def test_exit_code_status_is_what_kubectl_parses() -> None:
    document = json.loads(Status.exit_code(42).payload(status_json=True))
    assert document["status"] == "Failure"
    assert document["reason"] == "NonZeroExitCode"
    assert document["details"] == {"causes": [{"reason": "ExitCode", "message": "42"}]}
    assert document["metadata"] == {}
    assert "code" not in document
    # Before v4 only the text travels.
    assert Status.exit_code(42).payload(status_json=False).startswith(b"command terminated with non-zero exit code")


@pytest.mark.parametrize("code", [0, -1, 256])
def test_exit_code_status_needs_a_real_failure_code(code: int) -> None:
    with pytest.raises(ValueError):
        Status.exit_code(code)


def test_internal_error_status() -> None:
    document = json.loads(Status.internal_error("no such container").payload(status_json=True))
    assert document == {"metadata": {}, "status": "Failure", "message": "Internal error occurred: no such container",
                        "reason": "InternalError", "details": {"causes": [{"message": "no such container"}]},
                        "code": 500}


def test_resize_messages_split_anywhere() -> None:
    stream = b'{"Width":80,"Height":24}\n{"Width":120,"Height":40}\n'
    for cut in range(len(stream) + 1):
        decoder = ResizeDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == [TerminalSize(80, 24), TerminalSize(120, 40)]


def test_resize_strings_and_escapes_split_anywhere() -> None:
    """The scan's state inside a string (a quote or brace that is text, a backslash) survives a split."""
    stream = b' {"note":"a \\" } {","Width":7,"Height":8}\t{"Width":9,"x":["]"],"Height":10}'
    for cut in range(len(stream) + 1):
        decoder = ResizeDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == [TerminalSize(7, 8), TerminalSize(9, 10)]


def test_a_big_chunk_of_resize_messages_decodes_in_linear_time() -> None:
    """8 MiB of messages in one frame: 9 s of CPU when each message rescanned the rest of the
    chunk, well under one now (the bound is generous for slow machines)."""
    message = channels.resize_message(TerminalSize(80, 24))
    message = message[:-1].ljust(63) + b"\n"
    chunk = message * (8 * 1024 * 1024 // len(message))
    started = time.process_time()
    sizes = ResizeDecoder().feed(chunk)
    assert time.process_time() - started < 4.0
    assert len(sizes) == len(chunk) // 64 and sizes[-1] == TerminalSize(80, 24)


def test_resize_fields_as_go_reads_them() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"width":1,"HEIGHT":2,"extra":{"a":"}"}}') == [TerminalSize(1, 2)]
    assert decoder.feed(b'{"Height":7}{"Width":null,"Height":0}') == [TerminalSize(0, 7), TerminalSize(0, 0)]
    assert decoder.feed(channels.resize_message(TerminalSize(3, 4))) == [TerminalSize(3, 4)]


@pytest.mark.parametrize("bad", [b'{"Width":-1}', b'{"Width":65536}', b'{"Width":8.0}', b'{"Width":true}',
                                 b'{"Width":"80"}', b"[1]", b"80", b'{"Width":1,}', b"{" + b" " * 5000])
def test_bad_resize_messages_break_the_decoder(bad: bytes) -> None:
    decoder = ResizeDecoder()
    with pytest.raises(ChannelProtocolError):
        decoder.feed(bad)
    with pytest.raises(ChannelProtocolError):
        decoder.feed(b'{"Width":1,"Height":1}')


@PROPERTY
@given(st.binary(max_size=300), st.integers(0, 300))
def test_resize_garbage_raises_only_channel_protocol_error(garbage: bytes, cut: int) -> None:
    decoder = ResizeDecoder()
    with contextlib.suppress(ChannelProtocolError):
        decoder.feed(garbage[:cut])
        decoder.feed(garbage[cut:])


# Port forward -----------------------------------------------------------------------------


def test_port_query() -> None:
    assert channels.parse_port_query(["80", "443,8080"]) == [80, 443, 8080]
    assert channels.parse_port_query(["000080", "0" * 5000 + "81"]) == [80, 81]  # as the kubelet parses them
    for bad in ([], [""], ["0"], ["65536"], ["80,"], ["http"], ["+80"], ["٨٠"], ["9" * 5000]):
        with pytest.raises(ChannelProtocolError):
            channels.parse_port_query(bad)


def test_port_channel_pairs_and_prefix() -> None:
    assert [channels.port_channels(i) for i in range(3)] == [(0, 1), (2, 3), (4, 5)]
    assert channels.port_prefix(8080) == b"\x90\x1f"
    assert channels.port_prefix(80) == b"P\x00"


def test_port_forward_stream_headers() -> None:
    assert channels.port_forward_stream({"streamtype": "data", "port": "80", "requestid": "7"}, 3) == \
        channels.PortForwardStream("data", 80, "7")
    # Clients without requestid: the error stream and the data stream after it share an id.
    error = channels.port_forward_stream({"streamtype": "error", "port": "80"}, 5)
    data = channels.port_forward_stream({"streamtype": "data", "port": "80"}, 7)
    assert error.request_id == data.request_id == "5"
    for bad in ({"streamtype": "data"}, {"streamtype": "stdin", "port": "80"}, {"port": "80"},
                {"streamtype": "data", "port": "0"}):
        with pytest.raises(ChannelProtocolError):
            channels.port_forward_stream(bad, 1)


def test_port_forward_error_document() -> None:
    assert channels.port_forward_error("refused", close_connection=False) == b'{"message":"refused"}\n'
    assert json.loads(channels.port_forward_error("gone", close_connection=True)) == {
        "closeConnection": True, "message": "gone"}


# The WebSocket session ----------------------------------------------------------------------


def handshake(subprotocols: list[str], codec: ChannelCodec | None, chosen: str | None,
              max_message: int = 1 << 20) -> tuple[wsproto.WSConnection, WebSocketSession]:
    """A wsproto client and our session, past the 101, as the HTTP layer would set them up."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    wire = client.send(Request(host="127.0.0.1", target="/exec/token", subprotocols=subprotocols))
    http = h11.Connection(h11.SERVER)
    http.receive_data(wire)
    request = http.next_event()
    assert isinstance(request, h11.Request)
    session = WebSocketSession(request.headers, request.target, chosen, codec, max_message=max_message)
    client.receive_data(session.data_to_send())
    assert list(client.events()) == [AcceptConnection(subprotocol=chosen)]
    return client, session


def client_events(client: wsproto.WSConnection, session: WebSocketSession) -> list:
    client.receive_data(session.data_to_send())
    return list(client.events())


def test_v5_session_channels_and_close_signal() -> None:
    client, session = handshake(["v5.channel.k8s.io"], V5, "v5.channel.k8s.io")
    wire = client.send(BytesMessage(b"\x00echo\n")) + client.send(BytesMessage(b"\xff\x00"))
    assert session.receive_data(wire) == [ChannelData(0, b"echo\n"), ChannelClose(0)]
    session.send(channels.STDOUT, b"echo\n")
    session.send(channels.ERROR, Status.ok().payload(status_json=True))
    session.close()
    assert client_events(client, session) == [
        BytesMessage(b"\x01echo\n"), BytesMessage(b'\x03{"metadata":{},"status":"Success"}'),
        CloseConnection(1000, "")]
    assert session.receive_data(client.send(CloseConnection(1000))) == [Closed(1000)]
    assert session.closed


def test_base64_session_sends_text() -> None:
    client, session = handshake(["base64.channel.k8s.io"], BASE64, "base64.channel.k8s.io")
    assert session.receive_data(client.send(TextMessage("0" + base64.b64encode(b"ls\n").decode()))) == [
        ChannelData(0, b"ls\n")]
    session.send(channels.STDOUT, b"a b\n")
    assert client_events(client, session) == [TextMessage("1YSBiCg==")]


def test_no_subprotocol_is_accepted_without_echo() -> None:
    client, session = handshake([], BINARY, None)
    assert session.receive_data(client.send(BytesMessage(b"\x00x"))) == [ChannelData(0, b"x")]


def test_fragmented_messages_are_joined() -> None:
    client, session = handshake(["v4.channel.k8s.io"], BINARY, "v4.channel.k8s.io")
    wire = client.send(BytesMessage(b"\x00ab", message_finished=False)) + client.send(BytesMessage(b"cd"))
    assert session.receive_data(wire) == [ChannelData(0, b"abcd")]


def test_pings_are_answered_and_peer_close_acknowledged() -> None:
    client, session = handshake(["v5.channel.k8s.io"], V5, "v5.channel.k8s.io")
    assert session.receive_data(client.send(Ping(b"hb"))) == []
    assert client_events(client, session) == [Pong(b"hb")]
    assert session.receive_data(client.send(CloseConnection(1000, "bye"))) == [Closed(1000, "bye")]
    assert client_events(client, session) == [CloseConnection(1000, "bye")]
    assert session.receive_data(b"more") == []


def test_eof_closes_abnormally() -> None:
    _, session = handshake(["v5.channel.k8s.io"], V5, "v5.channel.k8s.io")
    assert session.receive_data(None) == [Closed(1006)]


@pytest.mark.parametrize(("codec", "message", "code"), [
    (BASE64, TextMessage("0***"), 1007),
    (V5, BytesMessage(b"\xff"), 1007),
    (None, TextMessage("not spdy"), 1003),
    (V5, BytesMessage(b"\x00" + b"x" * 2000), 1009),
])
def test_bad_messages_close_the_session(codec: ChannelCodec | None, message, code: int) -> None:
    client, session = handshake(["p"], codec, "p", max_message=1000)
    (event,) = session.receive_data(client.send(message))
    assert isinstance(event, Closed) and event.code == code
    assert [type(e) for e in client_events(client, session)] == [CloseConnection]


def test_spdy_tunnel_carries_raw_bytes() -> None:
    client, session = handshake(["SPDY/3.1+portforward.k8s.io"], None, "SPDY/3.1+portforward.k8s.io")
    assert session.receive_data(client.send(BytesMessage(b"\x80\x03\x00\x06"))) == [TunnelData(b"\x80\x03\x00\x06")]
    session.send_tunnel(b"\x80\x03")
    assert client_events(client, session) == [BytesMessage(b"\x80\x03")]
    with pytest.raises(ValueError):
        session.send(0, b"x")


def test_invalid_handshake_is_rejected() -> None:
    headers = [(b"host", b"x"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket")]
    with pytest.raises(HandshakeError) as excinfo:
        WebSocketSession(headers, b"/exec/t", None, BINARY)
    assert excinfo.value.rejection.status == 400
    headers += [(b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"8")]
    with pytest.raises(HandshakeError) as excinfo:
        WebSocketSession(headers, b"/exec/t", None, BINARY)
    assert excinfo.value.rejection.status == 426
    assert ("Sec-WebSocket-Version", "13") in excinfo.value.rejection.headers


@pytest.mark.parametrize("header", [b"sec-websocket-protocol", b"sec-websocket-extensions"])
def test_a_handshake_header_that_is_not_ascii_is_rejected(header: bytes) -> None:
    headers = [(b"host", b"x"), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
               (b"sec-websocket-version", b"13"), (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
               (header, b"v4.channel.k8s.io, \xff")]
    with pytest.raises(HandshakeError) as excinfo:
        WebSocketSession(headers, b"/exec/t", "v4.channel.k8s.io", BINARY)
    assert excinfo.value.rejection.status == 400


@PROPERTY
@given(st.binary(max_size=300), st.sampled_from([BINARY, BASE64, V5, None]))
def test_session_garbage_never_raises(garbage: bytes, codec: ChannelCodec | None) -> None:
    _, session = handshake([], codec, None)
    events = session.receive_data(garbage)
    closed = [e for e in events if isinstance(e, Closed)]
    assert closed in ([], events[-1:])
    assert session.closed == bool(closed)


def test_port_forward_over_a_spdy_tunnel() -> None:
    """The whole sans-IO path of `kubectl port-forward` over WebSocket, as the wiring will run it."""
    client, session = handshake(["SPDY/3.1+portforward.k8s.io"], None, "SPDY/3.1+portforward.k8s.io")
    spdy_client, spdy_server = spdy.Connection(client_side=True), spdy.Connection(client_side=False)
    error_id = spdy_client.open_stream({"streamtype": "error", "port": "8080", "requestid": "0"})
    data_id = spdy_client.open_stream({"streamtype": "data", "port": "8080", "requestid": "0"})
    spdy_client.send_data(data_id, b"GET / HTTP/1.0\r\n\r\n")

    opened: dict[str, channels.PortForwardStream] = {}
    for event in session.receive_data(client.send(BytesMessage(spdy_client.data_to_send()))):
        assert isinstance(event, TunnelData)
        for spdy_event in spdy_server.receive_data(event.data):
            if isinstance(spdy_event, spdy.StreamOpened):
                stream = channels.port_forward_stream(spdy_event.headers, spdy_event.stream_id)
                opened[stream.stream_type] = stream
                spdy_server.reply(spdy_event.stream_id)
            elif isinstance(spdy_event, spdy.DataReceived):
                assert spdy_event == spdy.DataReceived(data_id, b"GET / HTTP/1.0\r\n\r\n")
                spdy_server.send_data(data_id, b"HTTP/1.0 200 OK\r\n\r\n", fin=True)
    assert opened["data"].request_id == opened["error"].request_id == "0" and opened["data"].port == 8080

    session.send_tunnel(spdy_server.data_to_send())
    (message,) = client_events(client, session)
    assert spdy_client.receive_data(message.data) == [
        spdy.StreamReply(error_id, {}), spdy.StreamReply(data_id, {}),
        spdy.DataReceived(data_id, b"HTTP/1.0 200 OK\r\n\r\n", fin=True)]

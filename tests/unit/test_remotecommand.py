"""The remote command protocol cores (sans-IO): SPDY streams and WebSocket channels against a client codec."""

from __future__ import annotations

import json

from wsproto.events import BytesMessage, CloseConnection, TextMessage

from dockershim_py.streaming import spdy
from dockershim_py.streaming.channels import ERROR, STDERR, STDOUT, Status, TerminalSize, resize_message
from dockershim_py.streaming.negotiation import RemoteCommandProtocol, Transport
from dockershim_py.streaming.remotecommand import (
    Gone,
    Ready,
    RemoteCommand,
    Resize,
    SpdyStreams,
    Stdin,
    StdinClosed,
    WebSocketStreams,
)
from test_channels import handshake

EXEC = RemoteCommand("exec", "c" * 64, stdin=True, stdout=True, stderr=True, tty=False, cmd=("sh",))
TTY = RemoteCommand("exec", "c" * 64, stdin=True, stdout=True, stderr=False, tty=True, cmd=("sh",))



def sent_frames(data: bytes) -> list:
    decoder = spdy.FrameDecoder()
    decoder.receive_data(data)
    return list(iter(decoder.next_frame, None))

class SpdyPair:
    """Our server side and a client-side codec, wired back to back."""

    def __init__(self, version: int, request: RemoteCommand) -> None:
        name = {1: "channel.k8s.io"}.get(version, f"v{version}.channel.k8s.io")
        self.server = SpdyStreams(RemoteCommandProtocol(name, Transport.SPDY, version), request)
        self.client = spdy.Connection(client_side=True)
        self.client_events: list = []

    def pump(self) -> list:
        events = self.server.receive_data(self.client.data_to_send())
        self.client_events += self.client.receive_data(self.server.data_to_send())
        return events

    def open(self, *kinds: str) -> dict[str, int]:
        return {kind: self.client.open_stream({"streamtype": kind}) for kind in kinds}

    def replies(self) -> set[int]:
        return {e.stream_id for e in self.client_events if isinstance(e, spdy.StreamReply)}

    def resets(self) -> dict[int, int]:
        return {e.stream_id: e.status for e in self.client_events if isinstance(e, spdy.StreamReset)}

    def data(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.client_events if isinstance(e, spdy.DataReceived)
                        and e.stream_id == stream_id)

    def finished(self, stream_id: int) -> bool:
        return any(getattr(e, "fin", False) and e.stream_id == stream_id for e in self.client_events
                   if isinstance(e, spdy.DataReceived))


def test_ready_once_every_expected_stream_arrived() -> None:
    pair = SpdyPair(4, EXEC)
    ids = pair.open("error", "stdin", "stdout")
    assert pair.pump() == []
    ids.update(pair.open("stderr"))
    assert pair.pump() == [Ready()]
    assert pair.replies() == set(ids.values())


def test_extra_duplicate_and_unknown_streams_are_refused() -> None:
    pair = SpdyPair(4, EXEC)
    ids = pair.open("error", "error", "bogus", "stdin", "stdout", "stderr", "stdout")
    assert pair.pump() == [Ready()]
    refused = pair.resets()
    assert refused == {sid: spdy.RstStatus.REFUSED_STREAM for sid in (3, 5, 13)}
    assert ids["stdout"] == 13  # the dict kept the last of the two stdout streams


def test_a_unidirectional_stream_is_refused_not_a_crash() -> None:
    """client-go never opens one; a stream the server cannot reply on is refused, whatever its type."""
    for fin in (False, True):
        pair = SpdyPair(4, EXEC)
        syn = spdy.FrameEncoder().encode(spdy.SynStreamFrame(1, {"streamtype": "error"}, fin=fin, unidirectional=True))
        assert pair.server.receive_data(syn) == []  # StreamClosedError out of the session, before
        refused = spdy.RstStreamFrame(1, spdy.RstStatus.REFUSED_STREAM) in sent_frames(pair.server.data_to_send())
        assert refused or fin  # with FIN too, the stream is closed both ways already: nothing to reset


def test_stdin_data_end_and_reset() -> None:
    pair = SpdyPair(4, EXEC)
    ids = pair.open("error", "stdin", "stdout", "stderr")
    pair.pump()
    pair.client.send_data(ids["stdin"], b"input")
    pair.client.send_data(ids["stdin"], b"", fin=True)
    assert pair.pump() == [Stdin(b"input", ids["stdin"]), StdinClosed()]
    other = SpdyPair(4, EXEC)
    ids = other.open("error", "stdin", "stdout", "stderr")
    other.pump()
    other.client.reset_stream(ids["stdin"])
    assert other.pump() == [StdinClosed()]


def test_v1_half_closes_stdin_at_once_and_has_no_resize() -> None:
    pair = SpdyPair(1, TTY)
    ids = pair.open("error", "stdin", "stdout")
    assert pair.pump() == [Ready()]  # no resize stream expected before v3
    assert pair.finished(ids["stdin"])


def test_resize_sizes_skip_zero_and_survive_garbage() -> None:
    pair = SpdyPair(3, TTY)
    ids = pair.open("error", "stdin", "stdout", "resize")
    assert pair.pump() == [Ready()]
    pair.client.send_data(ids["resize"], b'{"Width":0,"Height":0}{"Width":80,"Height":2')
    pair.client.send_data(ids["resize"], b'4}\n{"width":100,"height":30}')
    assert pair.pump() == [Resize(TerminalSize(100, 30))]  # the second chunk ends two sizes: the last counts
    pair.client.send_data(ids["resize"], b'{"Width":0,"Height":0}{"Width":80,"Height":24}{"Width":0,"Height":0}')
    assert pair.pump() == [Resize(TerminalSize(80, 24))]
    pair.client.send_data(ids["resize"], b"not json")
    pair.client.send_data(ids["resize"], b'{"Width":1,"Height":1}')
    assert pair.pump() == []


def test_finish_reports_status_and_ends_everything() -> None:
    pair = SpdyPair(4, EXEC)
    ids = pair.open("error", "stdin", "stdout", "stderr")
    pair.pump()
    pair.server.send_output(STDOUT, b"out")
    pair.server.send_output(STDERR, b"err")
    pair.server.finish(Status.exit_code(2))
    pair.server.send_output(STDOUT, b"late")  # ignored
    pair.pump()
    assert pair.data(ids["stdout"]) == b"out" and pair.data(ids["stderr"]) == b"err"
    assert json.loads(pair.data(ids["error"]))["details"]["causes"][0]["message"] == "2"
    assert all(pair.finished(sid) for sid in ids.values())
    assert any(isinstance(e, spdy.GoAway) for e in pair.client_events)


def test_output_to_a_reset_stream_is_dropped() -> None:
    pair = SpdyPair(4, EXEC)
    ids = pair.open("error", "stdin", "stdout", "stderr")
    pair.pump()
    pair.client.reset_stream(ids["stdout"])
    pair.pump()
    pair.server.send_output(STDOUT, b"nobody listens")
    pair.server.finish(Status.ok())
    pair.pump()
    assert pair.data(ids["error"]) == b'{"metadata":{},"status":"Success"}'


def test_end_of_connection_and_protocol_errors_are_gone() -> None:
    pair = SpdyPair(4, EXEC)
    assert pair.server.receive_data(None) == [Gone("the client closed the connection")]
    assert isinstance(pair.server.receive_data(b"\x80\x03\x00\x01garbage-garbage")[0], Gone)


def websocket(subprotocol: str, request: RemoteCommand, version: int, base64: bool = False):
    protocol = RemoteCommandProtocol(subprotocol, Transport.WEBSOCKET, version, base64)
    client, session = handshake([subprotocol], protocol.codec(), subprotocol or None)
    return client, WebSocketStreams(session, protocol, request)


def messages(client, streams: WebSocketStreams) -> list:
    client.receive_data(streams.data_to_send())
    return list(client.events())


def test_websocket_ready_message_goes_to_the_first_output_channel() -> None:
    for request, channel in ((EXEC, STDOUT), (RemoteCommand("attach", "c", True, False, True, False), STDERR),
                             (RemoteCommand("attach", "c", True, False, False, False), ERROR)):
        client, streams = websocket("v4.channel.k8s.io", request, 4)
        assert streams.initial_events() == [Ready()]
        assert messages(client, streams) == [BytesMessage(bytes([channel]))]


def test_websocket_v5_stdin_close_signal_and_resize() -> None:
    client, streams = websocket("v5.channel.k8s.io", TTY, 5)
    messages(client, streams)
    wire = (client.send(BytesMessage(b"\x00typed")) + client.send(BytesMessage(b"\xff\x00"))
            + client.send(BytesMessage(b'\x04{"Width":9,"Height":3}')) + client.send(BytesMessage(b"\x02ignored")))
    assert streams.receive_data(wire) == [Stdin(b"typed"), StdinClosed(), Resize(TerminalSize(9, 3))]


def test_a_burst_of_sizes_in_one_message_is_its_last_size() -> None:
    """Each size is a Docker request: of a thousand in one message only the last is passed on."""
    client, streams = websocket("v5.channel.k8s.io", TTY, 5)
    messages(client, streams)
    burst = b"".join(resize_message(TerminalSize(width, 24)) for width in range(1, 1001))
    assert streams.receive_data(client.send(BytesMessage(b"\x04" + burst + b'{"Width":0,"Height":0}'))) == [
        Resize(TerminalSize(1000, 24))]


def test_websocket_stdin_is_ignored_when_not_requested() -> None:
    client, streams = websocket("v4.channel.k8s.io", RemoteCommand("exec", "c", False, True, True, False, ("x",)), 4)
    assert streams.receive_data(client.send(BytesMessage(b"\x00sneaky"))) == []


def test_websocket_finish_base64_v1_text_and_close() -> None:
    client, streams = websocket("base64.channel.k8s.io", EXEC, 1, base64=True)
    messages(client, streams)
    streams.send_output(STDOUT, b"hi")
    streams.finish(Status.exit_code(5))
    events = messages(client, streams)
    assert events[0] == TextMessage("1aGk=")
    assert isinstance(events[1], TextMessage) and events[1].data.startswith("3")  # the error text, no JSON
    assert isinstance(events[2], CloseConnection) and events[2].code == 1000
    assert streams.receive_data(client.send(events[2].response())) == [Gone("WebSocket closed (1000)")]

"""The port-forward protocol cores: SPDY stream pairs and WebSocket channel pairs (no sockets)."""

from __future__ import annotations

import errno
import json
import threading

from wsproto.events import BytesMessage

from dockershim_py.streaming import portforward, spdy
from dockershim_py.streaming.channels import ChannelCodec
from dockershim_py.streaming.loop import Timer
from dockershim_py.streaming.portforward import (
    MAX_CONNECTIONS,
    Abort,
    Connect,
    Data,
    DataEnd,
    SpdyForwards,
    WebSocketForwards,
)
from test_channels import handshake



def sent_frames(data: bytes) -> list:
    decoder = spdy.FrameDecoder()
    decoder.receive_data(data)
    return list(iter(decoder.next_frame, None))

class FakeLoop:
    """Timers without a clock: the test fires them."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []

    def call_later(self, delay: float, callback) -> Timer:
        self.timers.append(Timer(delay, callback))
        return self.timers[-1]

    def fire(self) -> None:
        for timer in self.timers:
            if not timer.cancelled:
                timer.callback()


class Pair:
    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.server = SpdyForwards(self.loop, 30.0)  # type: ignore[arg-type]
        self.client = spdy.Connection(client_side=True)
        self.client_events: list = []

    def pump(self) -> list:
        events = self.server.receive_data(self.client.data_to_send())
        self.client_events += self.client.receive_data(self.server.data_to_send())
        return events

    def open(self, kind: str, port: int = 8080, request_id: str | None = "1") -> int:
        headers = {"streamtype": kind, "port": str(port)}
        if request_id is not None:
            headers["requestid"] = request_id
        return self.client.open_stream(headers)

    def data(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.client_events
                        if isinstance(e, spdy.DataReceived) and e.stream_id == stream_id)

    def finished(self, stream_id: int) -> bool:
        return any(e.fin for e in self.client_events if isinstance(e, spdy.DataReceived) and e.stream_id == stream_id)

    def reset(self, stream_id: int) -> bool:
        return any(isinstance(e, spdy.StreamReset) and e.stream_id == stream_id for e in self.client_events)


def test_streams_pair_by_request_id() -> None:
    pair = Pair()
    error = pair.open("error", request_id="a")
    other = pair.open("error", 9090, request_id="b")
    assert pair.pump() == []
    data = pair.open("data", request_id="a")
    assert pair.pump() == [Connect("a", 8080)]
    pair.client.send_data(data, b"hello")
    pair.client.send_data(data, b"", fin=True)
    pair.client.send_data(other, b"ignored")  # the error stream carries nothing from the client
    assert pair.pump() == [Data("a", b"hello", data), DataEnd("a")]
    pair.server.send("a", b"reply")
    pair.server.end_data("a")
    pair.server.finish("a")
    pair.pump()
    assert pair.data(data) == b"reply" and pair.finished(data) and pair.finished(error)


def test_clients_without_request_ids_pair_by_stream_id() -> None:
    pair = Pair()
    pair.open("error", request_id=None)       # stream 1
    pair.open("data", request_id=None)        # stream 3: 3 - 2 = 1
    assert pair.pump() == [Connect("1", 8080)]


def test_a_second_data_stream_is_refused_with_a_message() -> None:
    pair = Pair()
    error = pair.open("error")
    pair.open("data")
    duplicate = pair.open("data")
    assert pair.pump() == [Connect("1", 8080)]
    assert pair.reset(duplicate)
    assert pair.data(error) == b"error processing stream for request 1: data stream already assigned"


def test_a_unidirectional_stream_is_reset_not_a_crash() -> None:
    pair = Pair()
    syn = spdy.SynStreamFrame(1, {"streamtype": "data", "port": "80", "requestid": "1"}, unidirectional=True)
    assert pair.server.receive_data(spdy.FrameEncoder().encode(syn)) == []
    assert spdy.RstStreamFrame(1, spdy.RstStatus.PROTOCOL_ERROR) in sent_frames(pair.server.data_to_send())


def test_bad_headers_are_reset() -> None:
    pair = Pair()
    no_port = pair.client.open_stream({"streamtype": "data"})
    bad_type = pair.client.open_stream({"streamtype": "stdin", "port": "80"})
    bad_port = pair.client.open_stream({"streamtype": "data", "port": "99999"})
    assert pair.pump() == []
    assert pair.reset(no_port) and pair.reset(bad_type) and pair.reset(bad_port)


def test_incomplete_pairs_time_out() -> None:
    pair = Pair()
    error = pair.open("error")
    pair.pump()
    pair.loop.fire()
    pair.client_events += pair.client.receive_data(pair.server.data_to_send())
    assert pair.data(error) == b"(request=1) timed out waiting for streams"
    assert pair.finished(error)
    later = pair.open("data")  # the request id is free again: a new pair starts
    assert pair.pump() == []
    assert not pair.reset(later)


def test_errors_are_json_and_resets_abort() -> None:
    pair = Pair()
    error, data = pair.open("error"), pair.open("data")
    pair.pump()
    pair.server.finish("1", "error forwarding port 8080 to pod p, uid : refused", close_connection=True)
    pair.pump()
    assert json.loads(pair.data(error)) == {"closeConnection": True,
                                            "message": "error forwarding port 8080 to pod p, uid : refused"}
    assert pair.finished(data)
    pair.open("error", request_id="2")
    second = pair.open("data", request_id="2")
    pair.pump()
    pair.client.reset_stream(second)
    assert pair.pump() == [Abort("2")]


def test_connections_beyond_the_cap_are_refused_and_a_connections_second_stream_never_is() -> None:
    pair = Pair()
    for index in range(MAX_CONNECTIONS - 1):
        pair.open("error", request_id=str(index))
        pair.open("data", request_id=str(index))
    half = pair.open("error", request_id="half")
    assert len(pair.pump()) == MAX_CONNECTIONS - 1
    extra = pair.open("error", request_id="extra")
    pair.pump()
    assert pair.reset(extra)
    second = pair.open("data", request_id="half")
    assert len(pair.pump()) == 1
    assert not pair.reset(half) and not pair.reset(second)


def test_websocket_channel_pairs_announce_their_ports() -> None:
    codec = ChannelCodec()
    client, session = handshake(["v4.channel.k8s.io"], codec, "v4.channel.k8s.io")
    forwards = WebSocketForwards(session, (8080, 443))
    assert forwards.initial_events() == [Connect("0", 8080), Connect("1", 443)]
    client.receive_data(forwards.data_to_send())
    assert [e.data for e in client.events()] == [b"\x00\x90\x1f", b"\x01\x90\x1f", b"\x02\xbb\x01", b"\x03\xbb\x01"]
    wire = client.send(BytesMessage(b"\x02to 443")) + client.send(BytesMessage(b"\x01not data"))
    assert forwards.receive_data(wire) == [Data("1", b"to 443")]
    forwards.send("0", b"from 8080")
    forwards.finish("0", "error forwarding port 8080")
    assert not forwards.done
    forwards.finish("1")
    assert forwards.done
    client.receive_data(forwards.data_to_send())
    assert [e.data for e in client.events()] == [b"\x00from 8080", b"\x01error forwarding port 8080"]


def test_a_connection_into_the_pod_with_no_thread_to_make_it_fails_alone(monkeypatch) -> None:
    """Threads for connects are capped, and one that cannot start fails its connection only (an
    unguarded start once killed the streaming server's accept thread)."""
    got: list[object] = []
    monkeypatch.setattr(portforward, "_connecting", threading.BoundedSemaphore(1))
    portforward._connecting.acquire()  # every allowed connect is under way
    portforward.connect_in_background(0, 80, got.append)
    assert isinstance(got[-1], OSError) and got[-1].errno == errno.EAGAIN
    portforward._connecting.release()

    def no_thread(self) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with open("/proc/self/ns/net", "rb") as netns:
        portforward.connect_in_background(netns.fileno(), 80, got.append)
    assert isinstance(got[-1], OSError) and "cannot start a thread" in str(got[-1])
    assert portforward._connecting.acquire(blocking=False)  # its place was given back

"""The HTTP/2 server state machine, fed bytes and read back frame by frame, without sockets."""

from __future__ import annotations

import struct

import hpack
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
import pytest

from dockershim_py import http2
from dockershim_py.http2 import (
    CONTINUATION, DATA, GOAWAY, HEADERS, PING, PREFACE, RST_STREAM, SETTINGS, WINDOW_UPDATE,
    ConnectionTerminated, DataReceived, ProtocolError, RequestReceived, ServerConnection, StreamReset, frame,
)

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/runtime.v1.RuntimeService/Version"),
           (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]


def settings(**values: int) -> bytes:
    ids = {"initial_window": http2.SETTINGS_INITIAL_WINDOW_SIZE, "max_frame": http2.SETTINGS_MAX_FRAME_SIZE,
           "push": http2.SETTINGS_ENABLE_PUSH}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items()))


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    out = []
    while data:
        size = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big"), data[9:9 + size]))
        data = data[9 + size:]
    return out


def connected(**client_settings: int) -> ServerConnection:
    connection = ServerConnection(max_concurrent_streams=4)
    assert connection.receive(PREFACE + settings(**client_settings)) == []
    connection.data_to_send()
    return connection


def request(connection: ServerConnection, stream_id: int, body: bytes = b"\0\0\0\0\x02hi", encoder=None) -> list:
    block = (encoder or hpack.Encoder()).encode(REQUEST)
    return connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, stream_id, block)
                              + frame(DATA, http2.FLAG_END_STREAM, stream_id, body))


def test_opening_sends_settings_and_acknowledges_the_clients() -> None:
    connection = ServerConnection()
    sent = frames(connection.data_to_send())
    assert [(kind, stream) for kind, _, stream, _ in sent] == [(SETTINGS, 0), (WINDOW_UPDATE, 0)]
    assert struct.unpack(">I", sent[1][3])[0] == http2.RECEIVE_WINDOW - http2.DEFAULT_WINDOW
    connection.receive(PREFACE + settings(initial_window=1000))
    assert frames(connection.data_to_send()) == [(SETTINGS, http2.FLAG_ACK, 0, b"")]


def test_a_request_cut_at_every_byte_gives_the_same_events() -> None:
    encoder = hpack.Encoder()
    whole = (PREFACE + settings() + frame(HEADERS, http2.FLAG_END_HEADERS, 1, encoder.encode(REQUEST))
             + frame(DATA, 0, 1, b"\0\0\0\0\x05he") + frame(DATA, http2.FLAG_END_STREAM, 1, b"llo"))
    for cut in range(len(whole) + 1):
        connection = ServerConnection()
        events = connection.receive(whole[:cut]) + connection.receive(whole[cut:])
        assert events == [RequestReceived(1, REQUEST, False), DataReceived(1, b"\0\0\0\0\x05he", False),
                          DataReceived(1, b"llo", True)], cut


def test_headers_with_padding_priority_and_continuations() -> None:
    connection = connected()
    block = hpack.Encoder().encode(REQUEST)
    padded = bytes([3]) + b"\0\0\0\0\x10" + block[:10] + b"\0\0\0"
    events = connection.receive(frame(HEADERS, http2.FLAG_PADDED | http2.FLAG_PRIORITY, 1, padded)
                                + frame(CONTINUATION, 0, 1, block[10:20])
                                + frame(CONTINUATION, http2.FLAG_END_HEADERS, 1, block[20:]))
    assert events == [RequestReceived(1, REQUEST, False)]


def test_a_header_block_interrupted_by_another_frame_ends_the_connection() -> None:
    connection = connected()
    block = hpack.Encoder().encode(REQUEST)
    with pytest.raises(ProtocolError):
        connection.receive(frame(HEADERS, 0, 1, block[:10]) + frame(PING, 0, 0, b"12345678"))
    kind, _, _, payload = frames(connection.data_to_send())[-1]
    assert kind == GOAWAY and struct.unpack(">I", payload[4:8])[0] == http2.PROTOCOL_ERROR
    assert connection.receive(b"anything") == []


@pytest.mark.parametrize("opening", [b"GET / HTTP/1.1\r\n\r\n", PREFACE + frame(PING, 0, 0, b"12345678")])
def test_a_client_that_does_not_open_with_preface_and_settings_is_refused(opening: bytes) -> None:
    connection = ServerConnection()
    with pytest.raises(ProtocolError):
        connection.receive(opening)
    assert frames(connection.data_to_send())[-1][0] == GOAWAY


def test_ping_is_answered_and_a_ping_ack_is_not() -> None:
    connection = connected()
    connection.receive(frame(PING, 0, 0, b"abcdefgh") + frame(PING, http2.FLAG_ACK, 0, b"zzzzzzzz"))
    assert frames(connection.data_to_send()) == [(PING, http2.FLAG_ACK, 0, b"abcdefgh")]


def test_a_response_reads_back_as_headers_data_and_trailers() -> None:
    connection = connected()
    request(connection, 1)
    connection.send_headers(1, [(b":status", b"200"), (b"content-type", b"application/grpc")])
    connection.send_data(1, b"\0\0\0\0\x03abc")
    long_message = "x" * 300
    connection.send_headers(1, [(b"grpc-status", b"5"), (b"grpc-message", long_message.encode())], end_stream=True)
    sent = frames(connection.data_to_send())
    assert [(kind, flags, stream) for kind, flags, stream, _ in sent] == [
        (HEADERS, http2.FLAG_END_HEADERS, 1), (DATA, 0, 1),
        (HEADERS, http2.FLAG_END_HEADERS | http2.FLAG_END_STREAM, 1)]
    decoder = hpack.Decoder()
    assert decoder.decode(sent[0][3], raw=True) == [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert sent[1][3] == b"\0\0\0\0\x03abc"
    assert decoder.decode(sent[2][3], raw=True) == [(b"grpc-status", b"5"), (b"grpc-message", long_message.encode())]
    assert not connection.is_open(1)


def test_data_waits_for_flow_control_credit_and_trailers_wait_for_the_data() -> None:
    connection = connected(initial_window=10)
    request(connection, 1)
    connection.send_data(1, b"a" * 25)
    connection.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    assert [(kind, len(payload)) for kind, _, _, payload in frames(connection.data_to_send())] == [(DATA, 10)]
    assert connection.pending(1) == 15
    connection.receive(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 10)))
    assert [(kind, len(payload)) for kind, _, _, payload in frames(connection.data_to_send())] == [(DATA, 10)]
    connection.receive(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))
    assert [(kind, flags & http2.FLAG_END_STREAM) for kind, flags, _, _ in frames(connection.data_to_send())] == [
        (DATA, 0), (HEADERS, http2.FLAG_END_STREAM)]
    assert connection.pending(1) == 0 and not connection.is_open(1)


def test_the_connection_window_limits_all_streams_and_a_settings_change_moves_open_windows() -> None:
    connection = connected()
    request(connection, 1)
    connection.send_data(1, b"b" * 80000)
    sent = frames(connection.data_to_send())
    assert sum(len(payload) for *_, payload in sent) == http2.DEFAULT_WINDOW
    assert max(len(payload) for *_, payload in sent) <= http2.DEFAULT_MAX_FRAME
    connection.receive(settings(initial_window=http2.DEFAULT_WINDOW - 100))  # the stream now owes 100
    connection.receive(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 10000)))
    assert frames(connection.data_to_send()) == [(SETTINGS, http2.FLAG_ACK, 0, b"")]
    connection.receive(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 5100)))
    assert sum(len(payload) for kind, *_, payload in frames(connection.data_to_send()) if kind == DATA) == 5000


def test_large_frames_are_used_once_the_client_allows_them() -> None:
    connection = connected(max_frame=40000, initial_window=100000)
    connection.receive(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100000)))
    request(connection, 1)
    connection.send_data(1, b"c" * 50000)
    assert [len(payload) for *_, payload in frames(connection.data_to_send())] == [40000, 10000]


def test_a_reset_stream_is_reported_and_later_sends_to_it_are_dropped() -> None:
    connection = connected()
    connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(REQUEST)))
    assert connection.receive(frame(RST_STREAM, 0, 1, struct.pack(">I", http2.CANCEL))) == [StreamReset(1, http2.CANCEL)]
    connection.send_data(1, b"late")
    connection.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    assert connection.data_to_send() == b""
    assert connection.receive(frame(DATA, 0, 1, b"more")) == []
    assert frames(connection.data_to_send()) == [(RST_STREAM, 0, 1, struct.pack(">I", http2.STREAM_CLOSED))]


@pytest.mark.parametrize("bad, code", [
    (frame(http2.PRIORITY, 0, 1, b"\0\0\0"), http2.FRAME_SIZE_ERROR),
    (frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0)), http2.PROTOCOL_ERROR),
    (frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 2**31 - 1)), http2.FLOW_CONTROL_ERROR),
    (frame(DATA, http2.FLAG_END_STREAM, 1, b"") + frame(DATA, 0, 1, b"after the end"), http2.STREAM_CLOSED),
])
def test_a_stream_the_client_breaks_is_reset_and_reported_like_a_reset_it_sent(bad: bytes, code: int) -> None:
    """Whoever serves the stream hears of it, and stops working for an answer nobody takes."""
    connection = connected()
    connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(REQUEST)))
    events = connection.receive(bad)
    assert events[-1] == StreamReset(1, code)
    assert (RST_STREAM, 0, 1, struct.pack(">I", code)) in frames(connection.data_to_send())
    assert not connection.is_open(1)


@pytest.mark.parametrize("bad", [
    frame(HEADERS, http2.FLAG_END_HEADERS, 2, b"\x82"),  # even: a server's stream id
    frame(DATA, 0, 7, b"x"),  # never opened
    frame(DATA, 0, 0, b"x"),
    frame(HEADERS, 0, 0, b""),
    b"\x00\x40\x01" + bytes([DATA, 0]) + struct.pack(">I", 1) + b"x" * 0x4001,  # over 16 KiB
    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
    frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1)),
    frame(http2.PUSH_PROMISE, http2.FLAG_END_HEADERS, 1, b"\0\0\0\x02"),
    frame(SETTINGS, 0, 0, b"\0\x04\0\0"),
    frame(SETTINGS, 0, 0, struct.pack(">HI", http2.SETTINGS_MAX_FRAME_SIZE, 100)),
    frame(PING, 0, 0, b"short"),
    frame(RST_STREAM, 0, 0, b"\0\0\0\0"),
    frame(http2.PRIORITY, 0, 0, b"\0\0\0\0\x10"),
    frame(HEADERS, http2.FLAG_END_HEADERS | http2.FLAG_PADDED, 1, b"\x09abc"),
])
def test_malformed_frames_end_the_connection_with_goaway(bad: bytes) -> None:
    connection = connected()
    with pytest.raises(ProtocolError):
        connection.receive(bad)
    assert frames(connection.data_to_send())[-1][0] == GOAWAY


def test_an_undecodable_header_block_is_a_compression_error() -> None:
    connection = connected()
    with pytest.raises(ProtocolError) as failure:
        connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\x0f"))
    assert failure.value.code == http2.COMPRESSION_ERROR


def test_a_stream_id_cannot_go_backwards() -> None:
    connection = connected()
    encoder = hpack.Encoder()
    request(connection, 5, encoder=encoder)
    with pytest.raises(ProtocolError):
        request(connection, 3, encoder=encoder)


def test_streams_beyond_the_limit_are_refused() -> None:
    connection = connected()
    encoder = hpack.Encoder()
    for stream_id in (1, 3, 5, 7):
        assert request(connection, stream_id, encoder=encoder)[0] == RequestReceived(stream_id, REQUEST, False)
    connection.data_to_send()
    assert request(connection, 9, encoder=encoder) == []
    assert frames(connection.data_to_send())[0] == (RST_STREAM, 0, 9, struct.pack(">I", http2.REFUSED_STREAM))


def test_received_data_is_credited_back_once_half_the_window_is_used() -> None:
    connection = connected()
    connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(REQUEST)))
    chunk = b"d" * http2.DEFAULT_MAX_FRAME
    connection.receive(chunk and b"".join(frame(DATA, 0, 1, chunk) for _ in range(32)))
    updates = [(stream, struct.unpack(">I", payload)[0]) for kind, _, stream, payload in
               frames(connection.data_to_send()) if kind == WINDOW_UPDATE]
    assert updates == [(0, http2.RECEIVE_WINDOW // 2), (1, http2.RECEIVE_WINDOW // 2)]


def test_go_away_lets_open_streams_finish_and_refuses_new_ones() -> None:
    connection = connected()
    encoder = hpack.Encoder()
    request(connection, 1, encoder=encoder)
    connection.go_away()
    kind, _, _, payload = frames(connection.data_to_send())[0]
    assert kind == GOAWAY and struct.unpack(">II", payload) == (1, http2.NO_ERROR)
    assert request(connection, 3, encoder=encoder) == []
    assert frames(connection.data_to_send())[0][0] == RST_STREAM
    connection.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    assert frames(connection.data_to_send())[0][0] == HEADERS


def test_the_clients_goaway_and_unknown_frames() -> None:
    connection = connected()
    assert connection.receive(frame(0x42, 0, 0, b"ignored")) == []
    assert connection.receive(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0))) == [ConnectionTerminated(0, 0)]


def test_an_answer_before_the_request_ends_tells_the_client_to_stop_sending() -> None:
    connection = connected()
    connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(REQUEST)))
    connection.send_headers(1, [(b"grpc-status", b"8")], end_stream=True)
    assert [kind for kind, *_ in frames(connection.data_to_send())] == [HEADERS, RST_STREAM]
    assert not connection.is_open(1)


@pytest.mark.parametrize("size", [0, 126, 127, 128, 300, 70000])
def test_encoded_headers_decode_with_hpack(size: int) -> None:
    headers = [(b":status", b"200"), (b"grpc-message", b"m" * size), (b"n" * size, b"v")]
    assert hpack.Decoder(max_header_list_size=1 << 20).decode(http2.encode_headers(headers), raw=True) == headers


def test_a_header_block_larger_than_a_frame_goes_out_in_continuations() -> None:
    connection = connected()
    request(connection, 1)
    connection.send_headers(1, [(b"grpc-status", b"2"), (b"grpc-message", b"e" * 40000)], end_stream=True)
    sent = frames(connection.data_to_send())
    assert [(kind, flags) for kind, flags, *_ in sent] == [
        (HEADERS, http2.FLAG_END_STREAM), (CONTINUATION, 0), (CONTINUATION, http2.FLAG_END_HEADERS)]
    block = b"".join(payload for *_, payload in sent)
    assert hpack.Decoder(max_header_list_size=1 << 20).decode(block, raw=True)[1][1] == b"e" * 40000


# --- HeaderDecoder against python-hyper's hpack --------------------------------------------------

header_names = st.sampled_from([b":path", b":method", b"content-type", b"grpc-timeout", b"user-agent", b"te",
                                b"x-custom", b"authorization"]) | st.binary(min_size=1, max_size=20)
header_lists = st.lists(st.tuples(header_names, st.binary(max_size=60)), max_size=12)


@examples(max_examples=300, deadline=None)
@given(blocks=st.lists(st.tuples(header_lists, st.booleans(), st.sampled_from([None, 0, 256, 4096])), min_size=1, max_size=8))
def test_header_decoder_reads_what_hpack_encodes_block_after_block(blocks) -> None:
    encoder = hpack.Encoder()
    decoder = http2.HeaderDecoder(max_header_list_size=1 << 20)
    for headers, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        block = encoder.encode([hpack.NeverIndexedHeaderTuple(n, v) if n == b"authorization" else (n, v)
                                for n, v in headers], huffman=huffman)
        assert decoder.decode(block) == headers


@examples(max_examples=500, deadline=None)
@given(block=st.binary(max_size=40))
def test_header_decoder_accepts_and_refuses_what_hpack_does(block: bytes) -> None:
    reference = hpack.Decoder()
    try:
        expected = [(bytes(n), bytes(v)) for n, v in reference.decode(block, raw=True)]
    except hpack.HPACKError:
        expected = None
    decoder = http2.HeaderDecoder(max_header_list_size=reference.max_header_list_size)
    if expected is None:
        with pytest.raises(ProtocolError):
            decoder.decode(block)
    else:
        assert decoder.decode(block) == expected


def test_header_decoder_limits() -> None:
    decoder = http2.HeaderDecoder(max_header_list_size=100)
    with pytest.raises(ProtocolError) as oversized:
        decoder.decode(hpack.Encoder().encode([(b"a", b"b" * 80)]))
    assert oversized.value.code == http2.PROTOCOL_ERROR
    with pytest.raises(ProtocolError) as too_big_table:
        http2.HeaderDecoder(1 << 20).decode(b"\x3f\xe1\x3f")  # a table size update to 8192
    assert too_big_table.value.code == http2.COMPRESSION_ERROR
    evicting = http2.HeaderDecoder(1 << 20)
    encoder = hpack.Encoder()
    for index in range(200):  # 200 entries of 64 bytes through a 4 KiB table: the oldest go
        assert evicting.decode(encoder.encode([(b"k", b"%031d" % index)])) == [(b"k", b"%031d" % index)]
    assert evicting._table_size <= 4096


# Found by mutation testing: behaviour no test above pinned -----------------------------------


def test_connection_window_updates_add_up_to_what_was_received() -> None:
    """Credits past what was received pile up beyond 2^31-1, and gRPC clients end the connection."""
    connection = connected()
    connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS, 1, hpack.Encoder().encode(REQUEST)))
    chunk = b"d" * http2.DEFAULT_MAX_FRAME
    for _ in range(2 * http2.RECEIVE_WINDOW // len(chunk)):  # twice the window, credited as it goes
        connection.receive(frame(DATA, 0, 1, chunk))
    credited = sum(struct.unpack(">I", payload)[0] for kind, _, stream, payload in frames(connection.data_to_send())
                   if kind == WINDOW_UPDATE and stream == 0)
    assert credited == 2 * http2.RECEIVE_WINDOW


def test_a_reply_stalled_on_the_connection_window_resumes_after_its_update() -> None:
    connection = connected()
    connection.receive(frame(HEADERS, http2.FLAG_END_HEADERS | http2.FLAG_END_STREAM, 1,
                             hpack.Encoder().encode(REQUEST)))
    connection.send_headers(1, [(b":status", b"200")])
    connection.send_data(1, b"b" * 70000)
    connection.receive(frame(SETTINGS, 0, 0, struct.pack(">HI", http2.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)))
    sent = sum(len(payload) for kind, *_, payload in frames(connection.data_to_send()) if kind == DATA)
    assert sent == 65535  # RFC 9113's initial connection window
    connection.receive(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 10000)))
    assert sum(len(payload) for kind, *_, payload in frames(connection.data_to_send()) if kind == DATA) == 70000 - 65535


def test_error_codes_are_rfc_9113s() -> None:
    assert (http2.NO_ERROR, http2.PROTOCOL_ERROR, http2.INTERNAL_ERROR, http2.FLOW_CONTROL_ERROR, http2.STREAM_CLOSED,
            http2.FRAME_SIZE_ERROR, http2.REFUSED_STREAM, http2.CANCEL, http2.COMPRESSION_ERROR) == (
        0, 1, 2, 3, 5, 6, 7, 8, 9)

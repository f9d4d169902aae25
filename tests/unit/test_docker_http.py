"""The HTTP/1.1 framing the shim speaks to dockerd, without sockets."""

from __future__ import annotations

import pytest

from dockershim_py.docker_http import (
    END,
    MAX_HEAD_BYTES,
    NEED_DATA,
    Head,
    ProtocolError,
    ResponseReader,
    request_bytes,
)


def events(reader: ResponseReader, data: bytes, step: int = 0, eof: bool = False) -> list:
    """Feed `data` in `step`-byte pieces (all at once for 0), collecting events until END or NEED_DATA."""
    out: list = []
    pieces = [data[i:i + step] for i in range(0, len(data), step)] if step else [data]
    for piece in pieces + ([b""] if eof else []):
        reader.feed(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            out.append(event)
            if event is END:
                return out
    return out


def split(collected: list) -> tuple[Head, bytes, bool]:
    """The head, the body and whether END came."""
    head = collected[0]
    assert isinstance(head, Head)
    body = b"".join(event for event in collected[1:] if isinstance(event, bytes))
    return head, body, collected[-1] is END


INSPECT = b'{"Id":"abc","State":{"Running":true}}'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"a;name=value\r\n" + INSPECT[:10] + b"\r\n"
    + b"%x\r\n" % len(INSPECT[10:]) + INSPECT[10:] + b"\r\n"
    b"0\r\nX-Trailer: yes\r\n\r\n"
)


def test_a_get_has_no_body_and_a_post_says_its_length() -> None:
    assert request_bytes("GET", "/v1.41/containers/json?all=1") == (
        b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\n\r\n")
    assert request_bytes("POST", "/v1.41/containers/x/start").endswith(b"Content-Length: 0\r\n\r\n")
    sent = request_bytes("POST", "/c", b'{"a":1}', {"Content-Type": "application/json"})
    assert sent == b'POST /c HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'


@pytest.mark.parametrize("step", [0, 1, 7])
def test_a_body_of_known_length_arrives_whole_however_it_is_cut(step: int) -> None:
    reader = ResponseReader()
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nApi-Version: 1.41\r\n\r\n" % len(INSPECT) + INSPECT
    head, body, ended = split(events(reader, data, step))
    assert (head.status, head.headers["api-version"], body, ended) == (200, "1.41", INSPECT, True)
    assert reader.reusable


@pytest.mark.parametrize("step", [0, 1, 3, 11])
def test_a_chunked_body_arrives_whole_with_extensions_and_trailers(step: int) -> None:
    reader = ResponseReader()
    head, body, ended = split(events(reader, CHUNKED, step))
    assert (head.status, body, ended) == (200, INSPECT, True)
    assert reader.reusable


@pytest.mark.parametrize("status", [204, 304])
def test_no_content_and_not_modified_end_at_their_head(status: int) -> None:
    reader = ResponseReader()
    collected = events(reader, b"HTTP/1.1 %d X\r\nContent-Length: 99\r\n\r\n" % status)
    assert [type(event) for event in collected] == [Head, type(END)]
    assert reader.reusable


def test_a_connection_the_server_closes_is_not_used_again() -> None:
    closing = ResponseReader()
    events(closing, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    old = ResponseReader()
    events(old, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    old_kept = ResponseReader()
    events(old_kept, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    assert (closing.reusable, old.reusable, old_kept.reusable) == (False, False, True)


def test_a_body_without_length_lasts_until_the_connection_closes() -> None:
    reader = ResponseReader()
    first = events(reader, b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    assert not first[-1] is END
    head, body, ended = split(first + events(reader, b"part two", eof=True))
    assert (body, ended, reader.reusable) == (b"part one, part two", True, False)


def test_bytes_beyond_the_response_make_the_connection_unusable() -> None:
    reader = ResponseReader()
    collected = events(reader, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200")
    assert split(collected)[1:] == (b"ok", True)
    assert not reader.reusable


def test_a_hijacked_stream_keeps_what_came_with_the_head() -> None:
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x02hi")
    head = reader.next_event()
    assert isinstance(head, Head) and head.status == 101
    assert reader.leftover() == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"


@pytest.mark.parametrize("data, eof, says", [
    (b"", True, "closed before a response"),
    (b"HTTP/1.1 200 OK\r\nContent-Len", True, "closed before a response"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", False, "not an HTTP/1.1 status line"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", False, "not an HTTP/1.1 status line"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", False, "malformed header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", False, "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True, "5 bytes before the end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", False, "bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX", False, "does not end with CRLF"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", True, "inside a chunked body"),
    (b"HTTP/1.1 200 OK\r\n" + b"X" * (MAX_HEAD_BYTES + 1), False, "no end of the response head"),
])
def test_what_is_not_a_response_is_a_protocol_error(data: bytes, eof: bool, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        events(ResponseReader(), data, eof=eof)

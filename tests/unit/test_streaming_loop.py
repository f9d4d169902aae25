"""The streaming loop notices a peer that leaves while its socket is not read (its gate is shut)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from dockershim_py.streaming.loop import Loop, Pipe


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, peer


@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_peer_that_leaves_while_the_gate_is_shut_ends_the_pipe(how: str) -> None:
    """A client gone while its stdin waited held its session and its process for hours."""
    ours, peer = _tcp_pair()
    ended = threading.Event()
    loop = Loop(idle_timeout=60)
    pipe = loop.add(Pipe(ours, name="client", on_data=lambda data: None, on_eof=ended.set,
                         on_error=lambda exc: ended.set(), peer_end_is_eof=True))
    pipe.gate = lambda: False  # what a process that does not read its stdin leaves
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        time.sleep(0.2)
        if how == "reset":
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        assert ended.wait(5), f"a {how} went unseen"
    finally:
        loop.stop()
        loop.post(lambda: None)
        runner.join(5)
        loop.close()


def test_a_peer_that_only_goes_quiet_keeps_its_gated_pipe() -> None:
    ours, peer = _tcp_pair()
    ended = threading.Event()
    loop = Loop(idle_timeout=60)
    pipe = loop.add(Pipe(ours, name="docker", on_data=lambda data: None, on_eof=ended.set,
                         on_error=lambda exc: ended.set()))
    pipe.gate = lambda: False
    runner = threading.Thread(target=loop.run, daemon=True)
    runner.start()
    try:
        peer.shutdown(socket.SHUT_WR)  # a FIN, with output perhaps still to come: not the end here
        assert not ended.wait(2.5)
    finally:
        loop.stop()
        loop.post(lambda: None)
        runner.join(5)
        loop.close()
        peer.close()


def test_idle_seconds_counts_from_the_last_activity_with_or_without_pipes() -> None:
    """The accept thread asks it of every session when the server is full, pipes or not yet."""
    loop = Loop(idle_timeout=60)
    try:
        assert 0 <= loop.idle_seconds() < 1  # no pipe yet: a session still being set up
        ours, peer = _tcp_pair()
        pipe = loop.add(Pipe(ours, name="client", on_data=lambda data: None, on_eof=lambda: None,
                             on_error=lambda exc: None))
        pipe.last_activity = time.monotonic() + 30  # (a pipe's activity is later than the loop's)
        assert loop.idle_seconds() < 0
        peer.close()
    finally:
        loop.close()


def test_end_idle_tells_the_session_once_and_stops_the_loop() -> None:
    told: list[str] = []
    loop = Loop(idle_timeout=60, on_idle=lambda: told.append("idle"))
    loop.end_idle()
    loop.end_idle()
    assert told == ["idle"] and loop.stopped
    loop.close()

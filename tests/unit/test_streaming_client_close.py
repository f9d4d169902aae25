"""The test client's own sockets: a closed session's reader thread must not read the next socket.

A thread blocked in recv() when its socket is closed wakes on the descriptor number, and the
kernel may have given that number to a new socket meanwhile. CI once lost the first bytes of a
TLS handshake that way (WRONG_VERSION_NUMBER in test_tls).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import streaming_client as client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, threading.Event]]:
    """A loopback listener: TLS on its first connection; its second is greeted, and only then
    the first one closed. (OpenSSL keeps the descriptor number it was given: a plain socket reads
    through the closed socket object, which fails instead.)"""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    first_closed = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        accepted.append(context.wrap_socket(connection, server_side=True))
        connection, _ = listener.accept()
        accepted.append(connection)
        accepted[1].sendall(b"greeting")
        accepted[0].close()  # wakes whatever still waits on the first connection
        first_closed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], first_closed
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_closed_readers_thread_leaves_the_next_socket_alone(server: tuple[int, threading.Event]) -> None:
    port, first_closed = server
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    first = tls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))
    reader = client._Reader()
    received: list[bytes] = []
    reader.start(lambda: first.recv(65536), received.append)
    number = first.fileno()
    time.sleep(0.1)  # the reader waits in recv()
    reader.close(first)
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    if second.fileno() != number:  # the case that matters is the number given again
        second.close()
        pytest.skip("another thread took the closed socket's descriptor number meanwhile")
    assert first_closed.wait(5)
    time.sleep(0.1)  # time for a reader woken by that close to take the greeting
    with second:
        assert second.recv(64) == b"greeting"
    assert received == []

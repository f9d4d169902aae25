import socket
from pathlib import Path

import grpc
import pytest

from dockershim_py.errors import CRIError
from dockershim_py.config import parse_endpoint
from dockershim_py.server import remove_stale_socket


@pytest.mark.parametrize(
    "endpoint, expected",
    [
        ("unix:///var/run/dockershim.sock", ("unix", "/var/run/dockershim.sock")),
        ("/run/x.sock", ("unix", "/run/x.sock")),
        ("tcp://127.0.0.1:7777", ("tcp", "127.0.0.1:7777")),
        ("tcp://[::1]:7777", ("tcp", "[::1]:7777")),
    ],
)
def test_parse_endpoint(endpoint: str, expected: tuple) -> None:
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["unix://relative.sock", "tcp://nohost", "tcp://:80", "tcp://127.0.0.1:99999", "http://x",
                                      "npipe://x"])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(CRIError) as caught:
        parse_endpoint(endpoint)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_stale_socket_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody accepts
    remove_stale_socket(str(path))
    assert not path.exists()


def test_live_socket_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    try:
        with pytest.raises(CRIError) as caught:
            remove_stale_socket(str(path))
        assert "already listening" in caught.value.message
        assert path.exists()
    finally:
        live.close()


def test_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("keep me")
    with pytest.raises(CRIError):
        remove_stale_socket(str(path))
    assert path.read_text() == "keep me"


def test_missing_path_is_fine(tmp_path: Path) -> None:
    remove_stale_socket(str(tmp_path / "absent.sock"))

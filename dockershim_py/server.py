"""The gRPC listener: a unix (or tcp) socket serving the CRI services, with a graceful shutdown.

Knows nothing about Docker; it is handed the adapters to serve.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from concurrent import futures

import grpc

from .cri.handlers import Adapter, generic_handlers
from .errors import CRIError, invalid_argument

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SOCKET_MODE = 0o660


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """("unix", path) or ("tcp", "host:port") from the --container-runtime-endpoint forms."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
        if not path.startswith("/"):
            raise invalid_argument(f"endpoint {endpoint!r}: a unix socket path must be absolute")
        return "unix", path
    if endpoint.startswith("tcp://"):
        address = endpoint[len("tcp://"):]
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise invalid_argument(f"endpoint {endpoint!r}: expected tcp://host:port")
        return "tcp", address
    if endpoint.startswith("/"):
        return "unix", endpoint
    raise invalid_argument(f"endpoint {endpoint!r}: expected unix:///path or tcp://host:port")


def remove_stale_socket(path: str) -> None:
    """Delete a socket file nobody accepts on; refuse to steal one that a live server holds."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CRIError(grpc.StatusCode.FAILED_PRECONDITION, f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        log.info("removing stale socket %s", path)
        os.unlink(path)
        return
    finally:
        probe.close()
    raise CRIError(grpc.StatusCode.FAILED_PRECONDITION, f"another server is already listening on {path}")


class CRIServer:
    def __init__(self, endpoint: str, adapters: list[Adapter], workers: int) -> None:
        self.endpoint = endpoint
        self._kind, self._address = parse_endpoint(endpoint)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cri"),
            handlers=generic_handlers(adapters),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )

    def start(self) -> None:
        if self._kind == "unix":
            os.makedirs(os.path.dirname(self._address) or "/", exist_ok=True)
            remove_stale_socket(self._address)
            bound = self._server.add_insecure_port(f"unix://{self._address}")
            os.chmod(self._address, SOCKET_MODE)
        else:
            bound = self._server.add_insecure_port(self._address)
        if not bound:
            raise CRIError(grpc.StatusCode.UNAVAILABLE, f"cannot listen on {self.endpoint}")
        self._server.start()
        log.info("serving CRI v1 and v1alpha2 on %s", self.endpoint)

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to `grace` seconds, remove the socket."""
        self._server.stop(grace).wait()
        if self._kind == "unix":
            try:
                os.unlink(self._address)
            except FileNotFoundError:
                pass
        log.info("stopped serving on %s", self.endpoint)

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

from .cri.handlers import Adapter, generic_handlers, inline_paths, long_paths, method_table, stop_paths
from .config import parse_endpoint
from .errors import CRIError
from .grpc_transport import GrpcServer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SOCKET_MODE = 0o660


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
    """The CRI services on one endpoint, carried by dockershim-py's HTTP/2 framer or by grpcio."""

    def __init__(self, endpoint: str, adapters: list[Adapter], workers: int, transport: str = "http2") -> None:
        self.endpoint = endpoint
        self._kind, self._address = parse_endpoint(endpoint)
        self._transport = transport
        if transport == "grpcio":
            self._grpcio: grpc.Server | None = grpc.server(
                futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cri"),
                handlers=generic_handlers(adapters),
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.so_reuseport", 0),
                ],
            )
            self._http2: GrpcServer | None = None
        else:
            self._grpcio = None
            self._http2 = GrpcServer(method_table(adapters), workers, MAX_MESSAGE_BYTES, inline_paths(adapters),
                                     long_paths(adapters), stop_paths(adapters))

    def start(self) -> None:
        if self._kind == "unix":
            os.makedirs(os.path.dirname(self._address) or "/", exist_ok=True)
            remove_stale_socket(self._address)
        if self._grpcio is not None:
            self._start_grpcio(self._grpcio)
        else:
            self._start_http2(self._http2)  # type: ignore[arg-type]
        if self._kind == "unix":
            os.chmod(self._address, SOCKET_MODE)
        log.info("serving CRI v1 and v1alpha2 on %s (%s)", self.endpoint, self._transport)

    def _start_grpcio(self, server: grpc.Server) -> None:
        address = f"unix://{self._address}" if self._kind == "unix" else self._address
        port = server.add_insecure_port(address)
        if not port:
            raise CRIError(grpc.StatusCode.UNAVAILABLE, f"cannot listen on {self.endpoint}")
        if self._kind == "tcp":
            self._name_bound_port(port)
        server.start()

    def _name_bound_port(self, port: int) -> None:
        """Port 0 is any free port: the log and `endpoint` name the one the kernel gave."""
        host = self._address.rpartition(":")[0]
        self._address = f"{host}:{port}"
        self.endpoint = f"tcp://{self._address}"

    def _start_http2(self, server: GrpcServer) -> None:
        try:
            if self._kind == "unix":
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(self._address)
            else:
                host, _, port = self._address.rpartition(":")
                family, kind, proto, _, address = socket.getaddrinfo(
                    host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0]
                listener = socket.socket(family, kind, proto)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(address)
                self._name_bound_port(listener.getsockname()[1])
            listener.listen(128)
        except OSError as exc:
            raise CRIError(grpc.StatusCode.UNAVAILABLE, f"cannot listen on {self.endpoint}: {exc}") from exc
        server.serve(listener, self._kind)

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to `grace` seconds, remove the socket."""
        if self._grpcio is not None:
            self._grpcio.stop(grace).wait()
        else:
            self._http2.stop(grace)  # type: ignore[union-attr]
        if self._kind == "unix":
            try:
                os.unlink(self._address)
            except FileNotFoundError:
                pass
        log.info("stopped serving on %s", self.endpoint)

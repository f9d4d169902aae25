"""gRPC's own cost on this machine: a server whose one method answers a canned reply at once.

The shim's status calls do little work of their own (a fraction of a millisecond); what a client
sees beyond that is the gRPC transport's threads and the machine's scheduling. Timed in the same
run as the shim, this server shows that floor: latency percentiles for the same reply bytes, and
the server's CPU per call. It is built like the shim's server: the same transport (grpc_transport,
or grpcio's server with --grpc-transport grpcio), a pool of 32 threads, one unix socket. It has
the same method twice: one answered by a worker, one on the connection's thread as the shim's
inline calls are (see dockershim_py.inline), so each of the shim's rows meets the floor of its kind.

    python bench/grpc_floor.py SOCKET_PATH REPLY_FILE [http2|grpcio]   (serves until SIGTERM)
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dockershim_py.grpc_transport import GrpcServer  # noqa: E402

METHOD = "/dspy.bench.Floor/Reply"
INLINE_METHOD = "/dspy.bench.Floor/ReplyInline"
WORKERS = 32


def serve(socket_path: str, reply: bytes, transport: str) -> None:
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: reply)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    if transport == "grpcio":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="floor"))
        service = METHOD.strip("/").split("/")[0]  # grpcio has no inline calls: both go to its pool
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            service, {path.rsplit("/", 1)[1]: handler for path in (METHOD, INLINE_METHOD)})])
        server.add_insecure_port(f"unix://{socket_path}")
        server.start()
        print("serving", flush=True)
        stopped.wait()
        server.stop(0).wait()
        return
    transport_server = GrpcServer({METHOD: handler, INLINE_METHOD: handler}, WORKERS, 1 << 24,
                                  frozenset({INLINE_METHOD}))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(socket_path)
    listener.listen(16)
    transport_server.serve(listener, "unix")
    print("serving", flush=True)
    stopped.wait()
    transport_server.stop(0)


class FloorServer:
    """The floor server in a child process, and a callable that sends it one request: to a worker,
    or with `inline` to be answered on the connection's thread."""

    def __init__(self, reply: bytes, transport: str = "http2") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dspy-floor-")
        socket_path = Path(self._dir.name) / "floor.sock"
        reply_path = Path(self._dir.name) / "reply"
        reply_path.write_bytes(reply)
        self.process = subprocess.Popen([sys.executable, __file__, str(socket_path), str(reply_path), transport],
                                        stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"serving":
            raise RuntimeError("the gRPC floor server did not start")
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._pooled = self._channel.unary_unary(METHOD)
        self._inline = self._channel.unary_unary(INLINE_METHOD)
        grpc.channel_ready_future(self._channel).result(timeout=10)

    def __call__(self, request: bytes, inline: bool = False) -> Any:
        return (self._inline if inline else self._pooled)(request, timeout=60)

    def close(self) -> None:
        self._channel.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._dir.cleanup()

    def __enter__(self) -> "FloorServer":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


if __name__ == "__main__":
    serve(sys.argv[1], Path(sys.argv[2]).read_bytes(), sys.argv[3] if len(sys.argv) > 3 else "http2")

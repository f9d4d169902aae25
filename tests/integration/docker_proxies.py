"""Unix-socket proxies in front of the suite's dockerd that hold a container start back, so a test
can act in the moment between Docker's create and start, or between its start and the answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

START_REQUEST = b"/start HTTP/1.1"


class StartHoldingProxy:
    """Forwards `path` to dockerd, holding every container start for `hold` seconds: its request
    (`answer=False`: the container is made and not started while the shim waits), or Docker's
    answer to it (`answer=True`: the container runs while the shim still waits to hear so)."""

    def __init__(self, path: Path, hold: float, answer: bool, target: str = "/var/run/docker.sock") -> None:
        self.path, self.hold, self.answer, self.target = path, hold, answer, target
        self.starts_held = 0
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(str(path))
        self._listener.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            asked_to_start = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, asked_to_start), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client, asked_to_start), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, asked_to_start: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if START_REQUEST in data:
                    if self.answer:
                        asked_to_start.set()
                    else:
                        self._held()
                upstream.sendall(data)

    def _answers(self, upstream: socket.socket, client: socket.socket, asked_to_start: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if asked_to_start.is_set():
                    asked_to_start.clear()
                    self._held()
                client.sendall(data)

    def _held(self) -> None:
        self.starts_held += 1
        time.sleep(self.hold)

    def close(self) -> None:
        self._listener.close()

"""Pod networking: which networks pods get, and whether the node's pod network is ready.

Without a network plugin a pod sandbox sits on Docker's default bridge, as dockershim's
`--network-plugin=""` did; the network is then ready whenever Docker is.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkStatus:
    ready: bool
    reason: str = ""
    message: str = ""


class Network:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pod_cidr = ""

    @property
    def pod_cidr(self) -> str:
        return self._pod_cidr

    def update_pod_cidr(self, pod_cidr: str) -> None:
        """Kept for the plugins that allocate from it; Docker's bridge allocates on its own."""
        with self._lock:
            if pod_cidr != self._pod_cidr:
                log.info("pod CIDR set to %r", pod_cidr)
                self._pod_cidr = pod_cidr

    def status(self, docker_ready: bool) -> NetworkStatus:
        if not docker_ready:
            return NetworkStatus(False, "DockerDaemonNotReady", "Docker's bridge network needs a running Docker daemon")
        return NetworkStatus(True)

"""Single-use tokens that carry a streaming request from the Exec/Attach/PortForward RPC to its URL.

The kubelet gets a URL from the RPC and connects to it at once; the token in the URL is the
only thing that authorises the connection, so it is long (128 random bits from `secrets`,
where cri-dockerd used 48), works once, expires after a minute, and the cache holding the
requests is bounded: when it is full the RPC fails with RESOURCE_EXHAUSTED instead of the shim
growing without limit.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import grpc

from ..errors import CRIError

TOKEN_BYTES = 16
DEFAULT_TTL = 60.0
DEFAULT_CAPACITY = 1000

T = TypeVar("T")


class TokenCache(Generic[T]):
    """Requests by token. Tokens expire in insertion order, since they all live `ttl` seconds."""

    def __init__(self, ttl: float = DEFAULT_TTL, capacity: int = DEFAULT_CAPACITY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def insert(self, request: T) -> str:
        """A new token for `request`; RESOURCE_EXHAUSTED when `capacity` tokens are outstanding."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            if len(self._entries) >= self._capacity:
                raise CRIError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"{self._capacity} streaming requests are waiting to be used; try again later")
            token = secrets.token_urlsafe(TOKEN_BYTES)
            while token in self._entries:  # 2**-128: never, but cheap to rule out
                token = secrets.token_urlsafe(TOKEN_BYTES)
            self._entries[token] = (now + self._ttl, request)
            return token

    def consume(self, token: str) -> T | None:
        """The request of `token`, once; None for an unknown, used or expired token."""
        with self._lock:
            entry = self._entries.pop(token, None)
            if entry is None or entry[0] <= self._clock():
                return None
            return entry[1]

    def _purge(self, now: float) -> None:
        while self._entries:
            token, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[token]

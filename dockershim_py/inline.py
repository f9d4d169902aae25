"""Calls answered on the connection's own thread while they need nothing that may wait.

Handing a call to a worker thread costs the server about 0.05 ms of CPU (the worker's wake-up),
a quarter of what a ContainerStatus answered from the index costs in all, and the kubelet asks
1 300 of them a minute on a full node. Run on the connection's thread, though, one call that
waits (on Docker, or on a log being copied) would hold up every other call of that connection.
So such a call tries there first, and gives up at the first thing that may wait, before
starting it; it is then run again, from the start, on a worker. Only read-only calls may try:
what they did before giving up (a cache filled, a sequence number drawn) is harmless twice.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_state = threading.local()


class WouldWait(BaseException):
    """Raised where an inline call would wait. A BaseException, as GeneratorExit is: the handlers'
    `except Exception` that turns failures into gRPC statuses must let it pass."""


@contextlib.contextmanager
def attempt() -> Iterator[None]:
    """Run the body as an inline attempt: may_wait() raises WouldWait in it."""
    _state.active = True
    try:
        yield
    finally:
        _state.active = False


def active() -> bool:
    return getattr(_state, "active", False)


def may_wait(what: str) -> None:
    """Before anything that may wait: an inline attempt gives up here, to be run on a worker."""
    if active():
        raise WouldWait(what)

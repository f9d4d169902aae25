"""Which of the shim's locks the calls answered on the connection's thread take, and which locks
a thread holds when it is about to wait, recorded in a running shim and written out as it exits.

A lock in both sets would let a ContainerStatus tried inline wait behind a Docker request (or a
sleep, a subprocess, or a file being opened on a disk), holding up every call of its connection
for as long. Reading the code says no such lock exists; this makes a test say so, through a real
shim and daemon.

sitecustomize.py installs it before dockershim_py is imported, so the locks dockershim_py's own
modules make with threading.Lock() are audited ones; every other module's locks stay as they are.
"""

from __future__ import annotations

import _thread
import atexit
import builtins
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Callable

_real_lock = _thread.allocate_lock
_PACKAGE = "dockershim_py"


class Audit:
    """What was seen, by the place in the source each audited lock was made."""

    def __init__(self, inline_active: Callable[[], bool]) -> None:
        self.inline_active = inline_active
        self._guard = _real_lock()
        self._held: dict[int, list[AuditedLock]] = {}  # thread → audited locks it holds now
        self.sites: dict[str, dict[str, Any]] = {}
        self.waits_seen: dict[str, int] = {}  # by kind: may_wait, time.sleep, ...

    def make_lock(self, site: str) -> AuditedLock:
        with self._guard:
            self.sites.setdefault(site, {"acquired": 0, "taken_inline": 0, "max_hold_ms": 0.0,
                                         "max_inline_wait_ms": 0.0, "held_while": {}})
        return AuditedLock(self, site)

    def acquired(self, lock: AuditedLock, inline: bool, waited_s: float) -> None:
        with self._guard:
            self._held.setdefault(lock.owner, []).append(lock)
            site = self.sites[lock.site]
            site["acquired"] += 1
            if inline:
                site["taken_inline"] += 1
                site["max_inline_wait_ms"] = max(site["max_inline_wait_ms"], waited_s * 1000)

    def released(self, lock: AuditedLock, owner: int, held_s: float) -> None:
        with self._guard:
            held = self._held.get(owner, [])
            if lock in held:
                held.remove(lock)
            site = self.sites[lock.site]
            site["max_hold_ms"] = max(site["max_hold_ms"], held_s * 1000)

    def waiting(self, what: str) -> None:
        """Called before anything that may wait: notes every audited lock this thread holds."""
        with self._guard:
            kind = what.partition("(")[0]
            self.waits_seen[kind] = self.waits_seen.get(kind, 0) + 1
            held = list(self._held.get(_thread.get_ident(), ()))
        if not held:
            return
        stack = "".join(line for line in traceback.format_stack(limit=25)[:-2] if _PACKAGE in line)
        with self._guard:
            for lock in held:
                self.sites[lock.site]["held_while"].setdefault(what, stack)

    def report(self) -> dict[str, Any]:
        with self._guard:
            sites = json.loads(json.dumps(self.sites))
            waits_seen = dict(self.waits_seen)
        violations = [{"lock": site, "held_while": seen["held_while"]} for site, seen in sites.items()
                      if seen["taken_inline"] and seen["held_while"]]
        return {"waits_seen": waits_seen, "sites": sites, "violations": violations}


class AuditedLock:
    """A threading.Lock telling the audit who holds it, how long, and how long inline calls waited."""

    def __init__(self, audit: Audit, site: str) -> None:
        self._audit = audit
        self._lock = _real_lock()
        self.site = site
        self.owner = 0
        self._since = 0.0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        inline = self._audit.inline_active()
        asked = time.monotonic()
        got = self._lock.acquire(blocking, timeout)
        if got:
            self.owner, self._since = _thread.get_ident(), time.monotonic()
            self._audit.acquired(self, inline, self._since - asked)
        return got

    def release(self) -> None:
        owner, held_s = self.owner, time.monotonic() - self._since
        self._lock.release()
        self._audit.released(self, owner, held_s)

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def install(report_path: str) -> Audit:
    """Audit dockershim_py's locks and waits in this process; write the report at exit."""
    from dockershim_py import inline  # makes no lock

    audit = Audit(inline.active)
    real_thread_lock = threading.Lock

    def lock_factory() -> Any:
        caller = sys._getframe(1)
        if caller.f_globals.get("__name__", "").startswith(_PACKAGE):
            return audit.make_lock(f"{caller.f_code.co_filename.rpartition(_PACKAGE + '/')[2]}:{caller.f_lineno}")
        return real_thread_lock()

    threading.Lock = lock_factory  # type: ignore[assignment]
    _wrap(inline, "may_wait", lambda what: audit.waiting(f"may_wait({what})"))
    _wrap(time, "sleep", lambda seconds: audit.waiting("time.sleep"))
    _wrap(threading.Event, "wait", lambda event, timeout=None: audit.waiting("Event.wait"))
    _wrap(subprocess.Popen, "wait", lambda process, timeout=None: audit.waiting("Popen.wait"))
    _wrap(os, "open", lambda path, *args, **kwargs: _opening(audit, path))
    _wrap(builtins, "open", lambda file, *args, **kwargs: _opening(audit, file))

    def write() -> None:
        with open(report_path, "w") as out:
            json.dump(audit.report(), out, indent=1)

    atexit.register(write)
    return audit


# Kernel files answer from memory; a file anywhere else may wait for a disk.
_KERNEL_FILES = ("/proc/", "/sys/", "/dev/")
_in_audit = threading.local()


def _opening(audit: Audit, file: Any) -> None:
    """Opening a file on a disk is a wait (the audit's own reads of source lines are not)."""
    if isinstance(file, int) or getattr(_in_audit, "active", False):
        return
    path = os.fsdecode(file)
    if path.startswith(_KERNEL_FILES):
        return
    _in_audit.active = True
    try:
        audit.waiting("file")
    finally:
        _in_audit.active = False


def _wrap(owner: Any, name: str, before: Callable[..., None]) -> None:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before(*args, **kwargs)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)

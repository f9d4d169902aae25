"""The lock audit that the inline-path test loads into a shim: it must see what it is there to see."""

from __future__ import annotations

import threading

from dockershim_py import inline
from hooks.lock_audit.lock_audit import Audit, _opening


def held_while_waiting(audit: Audit, lock, what: str) -> None:
    """Another thread takes `lock` and waits while holding it, as a Docker request under a lock would."""
    def worker() -> None:
        with lock:
            audit.waiting(what)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()


def test_a_lock_taken_inline_and_held_while_waiting_is_a_violation() -> None:
    audit = Audit(inline.active)
    index_lock = audit.make_lock("events.py:1")
    held_while_waiting(audit, index_lock, "may_wait(list_containers)")
    with inline.attempt():
        with index_lock:
            pass
    report = audit.report()
    assert [violation["lock"] for violation in report["violations"]] == ["events.py:1"]
    assert list(report["violations"][0]["held_while"]) == ["may_wait(list_containers)"]
    assert report["sites"]["events.py:1"]["taken_inline"] == 1
    assert report["sites"]["events.py:1"]["acquired"] == 2
    assert report["waits_seen"] == {"may_wait": 1}


def test_locks_only_inline_or_only_held_while_waiting_are_fine() -> None:
    audit = Audit(inline.active)
    inline_only, waiting_only = audit.make_lock("a.py:1"), audit.make_lock("b.py:1")
    held_while_waiting(audit, waiting_only, "time.sleep")
    with inline.attempt():
        with inline_only:
            pass
    audit.waiting("may_wait(inspect)")  # no lock held here
    report = audit.report()
    assert report["violations"] == []
    assert report["sites"]["a.py:1"]["held_while"] == {}
    assert list(report["sites"]["b.py:1"]["held_while"]) == ["time.sleep"]


def test_a_lock_released_by_another_thread_is_no_longer_held_by_its_taker() -> None:
    audit = Audit(inline.active)
    handed_over = audit.make_lock("c.py:1")
    handed_over.acquire()
    thread = threading.Thread(target=handed_over.release)
    thread.start()
    thread.join()
    audit.waiting("may_wait(inspect)")
    assert audit.report()["sites"]["c.py:1"]["held_while"] == {}


def test_the_time_an_inline_call_waits_for_a_lock_is_kept() -> None:
    audit = Audit(inline.active)
    busy = audit.make_lock("d.py:1")
    taken = threading.Event()

    def hold() -> None:
        with busy:
            taken.set()
            threading.Event().wait(0.05)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait()
    with inline.attempt():
        with busy:
            pass
    thread.join()
    assert audit.report()["sites"]["d.py:1"]["max_inline_wait_ms"] >= 40


def test_opening_a_file_on_disk_is_a_wait_and_a_kernel_file_is_not(tmp_path) -> None:
    audit = Audit(inline.active)
    log_lock = audit.make_lock("logs.py:1")
    with log_lock:
        _opening(audit, "/proc/self/stat")
        _opening(audit, b"/sys/fs/cgroup/memory/memory.stat")
        _opening(audit, 3)  # a descriptor: nothing opened by name
    assert audit.report()["waits_seen"] == {}
    with log_lock:
        _opening(audit, tmp_path / "state.json")
    with inline.attempt():
        with log_lock:
            pass
    report = audit.report()
    assert report["waits_seen"] == {"file": 1}
    assert [violation["lock"] for violation in report["violations"]] == ["logs.py:1"]

"""The CRI log copier on files shaped like Docker's json-file logs: format, partial lines, rotation, resume."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest

from dockershim_py import inline, logs
from dockershim_py.errors import CRIError
from dockershim_py.logs import CopyState, LogCopier, LogManager, cri_line

T = "2026-11-22T15:00:00.123456789Z"


def docker_entry(text: str, stream: str = "stdout", time_: str = T) -> bytes:
    return json.dumps({"log": text, "stream": stream, "time": time_}).encode() + b"\n"


def cri_texts(path: Path) -> list[str]:
    """The text of every CRI line, partial ones joined to the line they belong to."""
    texts, pending = [], ""
    for line in path.read_bytes().decode().splitlines():
        _, _, tag, text = line.split(" ", 3)
        pending += text
        if tag == "F":
            texts.append(pending)
            pending = ""
    return texts


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    source = tmp_path / "docker" / "abc-json.log"
    source.parent.mkdir()
    source.touch()
    return {"source": source, "target": tmp_path / "pods" / "c" / "0.log", "state": tmp_path / "state.json"}


def copier_for(files: dict[str, Path], resume: bool = False) -> LogCopier:
    if resume:
        state = CopyState.load(str(files["state"]))
    else:
        state = CopyState(container_id="abc", source_path=str(files["source"]), target_path=str(files["target"]))
    copier = LogCopier(state, str(files["state"]))
    copier.open()
    return copier


def append(path: Path, *entries: bytes) -> None:
    with open(path, "ab") as handle:
        for entry in entries:
            handle.write(entry)


# --- the format ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (docker_entry("hello\n"), f"{T} stdout F hello\n"),
        (docker_entry("no newline yet"), f"{T} stdout P no newline yet\n"),
        (docker_entry("oops\n", "stderr"), f"{T} stderr F oops\n"),
        (docker_entry("\n"), f"{T} stdout F \n"),
        (docker_entry("tabs\tand spaces  \n"), f"{T} stdout F tabs\tand spaces  \n"),
        (docker_entry("crlf from a tty\r\n"), f"{T} stdout F crlf from a tty\r\n"),
        (docker_entry("grüße ✓\n"), f"{T} stdout F grüße ✓\n"),
    ],
)
def test_docker_entries_become_cri_lines(entry: bytes, expected: str) -> None:
    assert cri_line(entry.rstrip(b"\n")) == expected.encode()


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[1, 2]", json.dumps({"log": "x\n", "stream": "stdin", "time": T}).encode(),
     json.dumps({"log": "x\n", "stream": "stdout"}).encode(), json.dumps({"log": 3, "stream": "stdout", "time": T}).encode()],
)
def test_lines_that_are_not_entries_are_skipped(line: bytes) -> None:
    assert cri_line(line) is None


def test_a_lone_surrogate_does_not_break_the_line() -> None:
    line = b'{"log":"\\ud800\\n","stream":"stdout","time":"' + T.encode() + b'"}'
    assert cri_line(line) == f"{T} stdout F ?\n".encode()


# --- copying ------------------------------------------------------------------------------------


def test_copies_lines_in_order_and_waits_for_an_unfinished_entry(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    append(files["source"], docker_entry("one\n"), docker_entry("two\n", "stderr"))
    half = docker_entry("three\n")
    append(files["source"], half[:10])
    copier.pump()
    assert files["target"].read_text() == f"{T} stdout F one\n{T} stderr F two\n"
    append(files["source"], half[10:])
    copier.pump()
    assert cri_texts(files["target"]) == ["one", "two", "three"]


def test_split_lines_are_partial_then_full(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    append(files["source"], docker_entry("a" * 16384), docker_entry("b" * 100 + "\n"))
    copier.pump()
    tags = [line.split(" ")[2] for line in files["target"].read_text().splitlines()]
    assert tags == ["P", "F"]
    assert cri_texts(files["target"]) == ["a" * 16384 + "b" * 100]


def test_follows_dockers_rotation_without_losing_a_line(files: dict[str, Path]) -> None:
    source = files["source"]
    copier = copier_for(files)
    append(source, docker_entry("1\n"))
    copier.pump(thorough=True)
    append(source, docker_entry("2\n"))  # written, then rotated before the copier saw it
    os.rename(source, f"{source}.1")
    append(source, docker_entry("3\n"))
    copier.pump(thorough=True)
    os.rename(f"{source}.1", f"{source}.2")  # two more rotations in one round
    os.rename(source, f"{source}.1")
    append(source, docker_entry("4\n"))
    os.rename(f"{source}.1", f"{source}.2")
    os.rename(source, f"{source}.1")
    append(source, docker_entry("5\n"))
    copier.pump(thorough=True)
    assert cri_texts(files["target"]) == ["1", "2", "3", "4", "5"]


def test_resume_cuts_back_what_was_not_saved_and_copies_it_once(files: dict[str, Path], monkeypatch) -> None:
    copier = copier_for(files)
    append(files["source"], docker_entry("saved\n"))
    copier.pump()
    copier.close()
    saved = json.loads(files["state"].read_text())
    assert saved["source_offset"] == files["source"].stat().st_size
    # the shim wrote more, then died before saving its position
    monkeypatch.setattr(logs, "PERSIST_SECONDS", 3600)
    copier = copier_for(files, resume=True)
    append(files["source"], docker_entry("unsaved\n"))
    copier._saved_at = time.monotonic()
    copier.pump()
    copier._close()  # dies: no save
    assert cri_texts(files["target"]) == ["saved", "unsaved"]
    copier = copier_for(files, resume=True)
    append(files["source"], docker_entry("after restart\n"))
    copier.pump()
    assert cri_texts(files["target"]) == ["saved", "unsaved", "after restart"]


def test_resume_keeps_what_was_copied_from_a_file_docker_rotated_away(files: dict[str, Path], monkeypatch) -> None:
    """The shim died after copying lines past its saved position, and Docker then dropped that file
    (max-file): cut back, those lines could never be copied again."""
    monkeypatch.setattr(logs, "PERSIST_SECONDS", 3600)
    source = files["source"]
    copier = copier_for(files)
    append(source, docker_entry("saved\n"))
    copier.pump(thorough=True)
    copier.close()
    copier = copier_for(files, resume=True)
    append(source, docker_entry("copied, not saved\n"))
    copier._saved_at = time.monotonic()
    copier.pump(thorough=True)
    copier._close()  # dies: no save
    os.rename(source, f"{source}.1")  # Docker rotates twice; with max-file 2 the copied file is gone
    append(source, docker_entry("newer\n"))
    os.rename(source, f"{source}.1")
    append(source, docker_entry("newest\n"))
    copier = copier_for(files, resume=True)
    copier.pump(thorough=True)
    texts = cri_texts(files["target"])
    assert texts[:2] == ["saved", "copied, not saved"] and texts[-1] == "newest" and "newer" in texts


def test_resume_after_docker_rotated_meanwhile(files: dict[str, Path]) -> None:
    source = files["source"]
    copier = copier_for(files)
    append(source, docker_entry("1\n"))
    copier.pump(thorough=True)
    copier.close()
    append(source, docker_entry("2\n"))
    os.rename(source, f"{source}.1")
    append(source, docker_entry("3\n"))
    copier = copier_for(files, resume=True)
    copier.pump(thorough=True)
    assert cri_texts(files["target"]) == ["1", "2", "3"]


def test_reopen_starts_a_new_file_and_leaves_the_renamed_one_alone(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    append(files["source"], docker_entry("old\n"))
    copier.pump()
    rotated = files["target"].with_suffix(".log.20261122")
    os.rename(files["target"], rotated)
    append(files["source"], docker_entry("written before the reopen\n"))
    copier.reopen()
    append(files["source"], docker_entry("new\n"))
    copier.pump()
    assert cri_texts(rotated) == ["old", "written before the reopen"]
    assert cri_texts(files["target"]) == ["new"]


def test_a_failed_write_after_the_file_was_emptied_leaves_whole_lines_only(
        files: dict[str, Path], monkeypatch) -> None:
    """An operator empties the CRI file of a full disk; the next write fails half way. Taking it
    back must go to the file's real end: no cut line, no NUL bytes, each line once on the retry."""
    copier = copier_for(files)
    append(files["source"], *(docker_entry(f"old {n}\n") for n in range(50)))
    copier.pump()
    os.truncate(files["target"], 0)
    append(files["source"], *(docker_entry(f"new {n}\n") for n in range(3)))
    real_write = os.write

    def disk_full_half_way(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full_half_way)
    copier.pump()
    monkeypatch.setattr(os, "write", real_write)
    assert files["target"].read_bytes() == b""
    copier.pump()
    assert cri_texts(files["target"]) == ["new 0", "new 1", "new 2"]
    copier.close()


def test_an_overlong_entry_is_skipped_and_copying_goes_on(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    append(files["source"], docker_entry("before\n"), docker_entry("x" * (logs.CHUNK_BYTES + 10) + "\n"),
           docker_entry("after\n"))
    copier.pump()
    assert cri_texts(files["target"]) == ["before", "after"]


def test_an_idle_copier_looks_for_rotations_once_a_second_and_saves_only_news(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    append(files["source"], docker_entry("1\n"))
    copier.pump()
    state = json.loads(files["state"].read_text())
    assert state["source_offset"] == 0  # saved at most once a second
    copier._saved_at -= 2 * logs.PERSIST_SECONDS
    copier.pump()
    assert json.loads(files["state"].read_text())["source_offset"] == files["source"].stat().st_size
    saved = files["state"].stat().st_mtime_ns
    copier._saved_at -= 2 * logs.PERSIST_SECONDS
    copier.pump()  # nothing new: nothing written
    assert files["state"].stat().st_mtime_ns == saved

    os.rename(files["source"], f"{files['source']}.1")
    append(files["source"], docker_entry("2\n"))
    copier._rotation_checked_at = time.monotonic()
    copier.pump()  # the rotation was looked for a moment ago: not yet
    assert cri_texts(files["target"]) == ["1"]
    copier._rotation_checked_at -= 2 * logs.ROTATION_CHECK_SECONDS
    copier.pump()
    assert cri_texts(files["target"]) == ["1", "2"]


def test_a_file_at_dockers_size_limit_is_checked_for_rotation_every_round(files: dict[str, Path]) -> None:
    entry = docker_entry("1\n")
    state = CopyState(container_id="abc", source_path=str(files["source"]), target_path=str(files["target"]))
    copier = LogCopier(state, str(files["state"]), rotate_bytes=len(entry))
    copier.open()
    append(files["source"], entry)
    copier.pump()
    os.rename(files["source"], f"{files['source']}.1")
    append(files["source"], docker_entry("2\n"))
    copier.pump()
    assert cri_texts(files["target"]) == ["1", "2"]


def test_a_file_renamed_between_listing_and_opening_is_not_taken_for_another(files: dict[str, Path]) -> None:
    inode = files["source"].stat().st_ino
    assert logs._open_inode(str(files["source"]), inode) is not None
    os.rename(files["source"], f"{files['source']}.1")
    files["source"].touch()
    assert logs._open_inode(str(files["source"]), inode) is None


@pytest.mark.parametrize(("size", "expected"), [("10m", 10 << 20), ("512k", 512 << 10), ("1g", 1 << 30), ("4096", 4096)])
def test_docker_sizes(size: str, expected: int) -> None:
    assert logs.docker_size_bytes(size) == expected


def test_a_round_copies_at_most_its_budget(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    entry = docker_entry("y" * 1000 + "\n")
    append(files["source"], entry * 2000)
    assert copier.pump(budget=len(entry) * 10) <= len(entry) * 10 + logs.CHUNK_BYTES
    while copier.pump():
        pass
    assert len(cri_texts(files["target"])) == 2000


def test_finish_copies_the_rest_and_closes(files: dict[str, Path]) -> None:
    copier = copier_for(files)
    append(files["source"], *(docker_entry(f"{n}\n") for n in range(100)))
    copier.finish()
    assert cri_texts(files["target"]) == [str(n) for n in range(100)]
    assert json.loads(files["state"].read_text())["finished"] is True
    with pytest.raises(Exception, match="complete"):
        copier.reopen()


# --- the manager --------------------------------------------------------------------------------


def _wait_until_finished(manager: LogManager, container_id: str, within: float, why: str) -> None:
    deadline = time.monotonic() + within
    while not (manager.saved_state(container_id) or CopyState("", "", "")).finished:
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


@pytest.mark.parametrize("exits", ["while followed", "before followed", "before inspected"])
def test_an_exited_containers_log_is_finished_once_it_settles_not_at_the_safety_round(
        files: dict[str, Path], tmp_path: Path, monkeypatch, exits: str) -> None:
    """A container that exits by itself (a crash): `kubectl logs --previous` wants all of it soon.
    One that exited before StartContainer's inspect has Docker's Pid 0."""
    monkeypatch.setattr(logs, "EXIT_SETTLE_SECONDS", 0.3)
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    process = subprocess.Popen(["sleep", "0.3" if exits == "while followed" else "0"])
    try:
        if exits != "while followed":
            process.wait()
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]),
                       0 if exits == "before inspected" else process.pid)
        append(files["source"], docker_entry("last words\n"))
        process.wait()
        _wait_until_finished(manager, "abc", within=3, why="the copier waited for the safety round")
        assert cri_texts(files["target"]) == ["last words"]
        manager.forget("abc")
        assert manager.saved_state("abc") is None
    finally:
        manager.stop()


def test_a_running_container_whose_process_cannot_be_watched_is_copied_until_it_is_finished(
        files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """Where pidfd_open fails (ENOSYS before Linux 5.3, EPERM under a seccomp profile) the process is
    not taken for gone: the copier goes on, and the shim's own exit checks finish it."""
    monkeypatch.setattr(logs, "EXIT_SETTLE_SECONDS", 0.2)

    def no_pidfds(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60, poll_seconds=0.05)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        append(files["source"], docker_entry("first\n"))
        time.sleep(1)  # quiet for five times what an exited container's log is given to settle
        append(files["source"], docker_entry("second\n"))
        deadline = time.monotonic() + 3
        while cri_texts(files["target"]) != ["first", "second"]:
            assert time.monotonic() < deadline, f"copied {cri_texts(files['target'])}"
            time.sleep(0.05)
        assert not manager.saved_state("abc").finished
        manager.reopen("abc", str(files["source"]), str(files["target"]), process.pid)  # the kubelet can still rotate it
    finally:
        process.kill()
        manager.stop()


def test_an_exited_containers_copier_wakes_for_its_last_lines_and_not_for_other_wake_ups(
        files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """On a churning node something wakes the copier thread many times a second; an exited
    container that has nothing more to copy must not be pumped at each of them."""
    monkeypatch.setattr(logs, "EXIT_SETTLE_SECONDS", 2.0)
    pumped: list[str] = []
    pump = LogCopier.pump
    monkeypatch.setattr(LogCopier, "pump", lambda self, *args, **kwargs: (
        pumped.append(self.state.container_id), pump(self, *args, **kwargs))[1])
    other = tmp_path / "other" / "def-json.log"
    other.parent.mkdir()
    other.touch()
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    exited, running = subprocess.Popen(["sleep", "0"]), subprocess.Popen(["sleep", "30"])
    try:
        exited.wait()
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]), exited.pid)
        manager.prepare("def", str(tmp_path / "pods" / "d" / "0.log"))
        manager.follow("def", str(other), str(tmp_path / "pods" / "d" / "0.log"), running.pid)
        append(other, docker_entry("first\n"))  # the first wake-up is the first full round
        _wait_for_texts(tmp_path / "pods" / "d" / "0.log", ["first"], within=1.0)
        pumped.clear()
        for n in range(10):  # another container writing: ten wake-ups
            append(other, docker_entry(f"{n}\n"))
            time.sleep(0.02)
        time.sleep(0.1)
        assert pumped.count("def") >= 2 and "abc" not in pumped
        append(files["source"], docker_entry("late line\n"))  # Docker's last write after the exit
        _wait_for_texts(files["target"], ["late line"], within=1.0)
        _wait_until_finished(manager, "abc", within=5, why="the settled log was not finished")
    finally:
        running.kill()
        running.wait()
        manager.stop()


def test_a_log_that_cannot_be_finished_is_tried_again_at_the_safety_round_not_at_every_round(
        files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(logs, "EXIT_SETTLE_SECONDS", 0.1)
    tries: list[float] = []

    def failing_finish(self) -> None:
        tries.append(time.monotonic())
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(logs.LogCopier, "finish", failing_finish)
    manager = LogManager(str(tmp_path / "states"), poll_seconds=0.05, safety_seconds=60)
    process = subprocess.Popen(["sleep", "0"])
    try:
        process.wait()
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        deadline = time.monotonic() + 3
        while not tries and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # ten rounds' worth of polling
        assert len(tries) == 1
    finally:
        manager.stop()


def test_a_log_the_disk_cannot_hold_at_the_end_is_finished_once_space_is_back(
        files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """The last lines of a crashed container are the ones its owner wants: a full disk when it is
    finished must not mark its log complete with them missing."""
    monkeypatch.setattr(logs, "EXIT_SETTLE_SECONDS", 0.2)
    manager = LogManager(str(tmp_path / "states"), safety_seconds=0.5)
    process = subprocess.Popen(["sleep", "0"])
    process.wait()
    try:
        manager.prepare("abc", str(files["target"]))
        append(files["source"], *(docker_entry(f"line {n}\n") for n in range(5)))
        real_write = os.write

        def disk_full(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", disk_full)
        manager.finish("abc", str(files["source"]))  # StopContainer's, say: it does not fail for this
        assert not manager.saved_state("abc").finished
        monkeypatch.setattr(os, "write", real_write)
        _wait_until_finished(manager, "abc", within=5, why="the safety round did not finish the log")
        assert cri_texts(files["target"]) == [f"line {n}" for n in range(5)]
    finally:
        manager.stop()


def test_a_start_writes_the_position_only_when_it_changes(files: dict[str, Path], tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path / "states"))
    process = subprocess.Popen(["sleep", "5"])
    try:
        manager.prepare("abc", str(files["target"]))
        prepared = os.stat(manager.state_path("abc")).st_ino  # each save replaces the file
        copier = LogCopier(manager.saved_state("abc"), manager.state_path("abc"), on_disk=True)
        copier.open()
        copier.close()
        assert os.stat(manager.state_path("abc")).st_ino == prepared
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        assert manager.saved_state("abc").source_path == str(files["source"])  # news: written at once
    finally:
        process.kill()
        process.wait()
        manager.stop()


@pytest.mark.parametrize("saved", ["left empty by a crash", "lost"])
def test_a_running_container_without_a_readable_position_is_copied_again_from_the_start(
        files: dict[str, Path], tmp_path: Path, saved: str) -> None:
    """Positions are written without fsync: after a crash the file may be empty. Copying again
    from Docker's first line may repeat lines; copying nothing would lose the rest of the log."""
    process = subprocess.Popen(["sleep", "30"])
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    try:
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        append(files["source"], docker_entry("before the crash\n"))
        _wait_for_texts(files["target"], ["before the crash"], within=3.0)
        manager.stop()
        if saved == "lost":
            os.unlink(manager.state_path("abc"))
        else:
            open(manager.state_path("abc"), "wb").close()
        manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        append(files["source"], docker_entry("after the restart\n"))
        _wait_for_texts(files["target"], ["before the crash", "before the crash", "after the restart"], within=3.0)
        manager.reopen("abc", str(files["source"]), str(files["target"]), process.pid)  # followed again: rotatable
        assert manager.saved_state("abc").target_path == str(files["target"])
    finally:
        process.kill()
        process.wait()
        manager.stop()


def test_a_start_whose_position_cannot_be_saved_fails_instead_of_running_uncopied(
        files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    manager = LogManager(str(tmp_path / "states"))

    def disk_full(path: str, data: bytes, durable: bool = True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logs, "write_atomically", disk_full)
    opened = len(os.listdir("/proc/self/fd"))
    with pytest.raises(CRIError) as raised:
        manager.prepare("abc", str(files["target"]))
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "No space left on device" in raised.value.message
    assert len(os.listdir("/proc/self/fd")) == opened  # the CRI file is not left open
    manager.stop()


def test_manager_catches_up_a_container_that_exited_while_the_shim_was_down(files: dict[str, Path], tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path / "states"))
    manager.prepare("abc", str(files["target"]))
    append(files["source"], docker_entry("while away\n"))
    manager.finish("abc", str(files["source"]))
    assert cri_texts(files["target"]) == ["while away"]
    manager.finish("abc", str(files["source"]))  # once only
    assert cri_texts(files["target"]) == ["while away"]


def test_finishing_from_many_threads_at_once_copies_once(files: dict[str, Path], tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path / "states"))
    manager.prepare("abc", str(files["target"]))
    append(files["source"], *(docker_entry(f"{n}\n") for n in range(2000)))
    threads = [threading.Thread(target=manager.finish, args=("abc", str(files["source"]))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cri_texts(files["target"]) == [str(n) for n in range(2000)]


def test_a_finished_log_is_not_read_again_until_its_container_is_forgotten(
    files: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    manager = LogManager(str(tmp_path / "states"))
    manager.prepare("abc", str(files["target"]))
    manager.prepare("def", str(files["target"]))
    append(files["source"], docker_entry("last\n"))
    reads: list[str] = []
    saved_state = manager.saved_state

    def counted_saved_state(container_id: str) -> CopyState | None:
        reads.append(container_id)
        return saved_state(container_id)

    monkeypatch.setattr(manager, "saved_state", counted_saved_state)
    manager.finish("abc", str(files["source"]))
    assert reads == ["abc", "abc"]  # the look before the lock, then the copy's start
    manager.finish("abc", str(files["source"]))  # ContainerStatus of the exited container, again
    assert reads == ["abc", "abc"]
    manager.finish("def", str(files["source"]))
    manager.keep_only({"def"})  # abc was removed behind the shim's back
    manager.finish("abc")
    manager.finish("def")
    assert reads[-1:] == ["abc"] and reads.count("def") == 2
    manager.forget("def")
    manager.prepare("def", str(files["target"]))
    manager.finish("def")
    assert reads.count("def") == 4


def test_reopen_of_a_container_docker_keeps_no_log_file_for_is_refused(tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path / "states"))
    with pytest.raises(CRIError, match="Docker keeps no log file") as raised:
        manager.reopen("nope", "", str(tmp_path / "0.log"), 1)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_reopen_of_a_log_that_is_a_link_to_dockers_file_copies_from_then_on(
        files: dict[str, Path], tmp_path: Path) -> None:
    """A container dockershim or cri-dockerd made: its log path links to Docker's file, which no
    copier writes. The kubelet renames the link at rotation and asks for a new file: it failed
    (FAILED_PRECONDITION), so the kubelet renamed it back and tried again every 10 s, for ever."""
    append(files["source"], docker_entry("before the migration\n"))
    files["target"].parent.mkdir(parents=True, exist_ok=True)
    files["target"].symlink_to(files["source"])
    rotated = files["target"].with_name("0.log.20261208-014500")
    files["target"].rename(rotated)  # the kubelet's rotation
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60, poll_seconds=0.05)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.reopen("abc", str(files["source"]), str(files["target"]), process.pid)
        append(files["source"], docker_entry("after the rotation\n"))
        _wait_for_texts(files["target"], ["after the rotation"], within=3.0)
        assert not files["target"].is_symlink()
        assert b"before the migration" in rotated.read_bytes()  # still Docker's, through the link
        manager.reopen("abc", str(files["source"]), str(files["target"]), process.pid)  # and again, as usual
        assert manager.saved_state("abc").source_inode == os.stat(files["source"]).st_ino
    finally:
        process.kill()
        process.wait()
        manager.stop()


def _wait_for_texts(path: Path, expected: list[str], within: float) -> None:
    deadline = time.monotonic() + within
    while not (path.exists() and cri_texts(path) == expected):
        assert time.monotonic() < deadline, f"{expected} not copied within {within}s: {path.read_bytes()!r}"
        time.sleep(0.02)


def test_lines_written_before_the_copy_is_followed_are_copied_at_once(files: dict[str, Path], tmp_path: Path) -> None:
    """A container prints at its start, before follow() watches its log (`id; sleep infinity`):
    the watch sees no later change, so its first lines waited for the safety round."""
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.prepare("abc", str(files["target"]))
        other = tmp_path / "other-docker" / "def-json.log"
        other.parent.mkdir()
        other.touch()
        manager.follow("def", str(other), str(tmp_path / "pods" / "d" / "0.log"),
                       process.pid)  # the copier thread runs, waiting for the safety round
        time.sleep(0.2)
        append(files["source"], docker_entry("printed at the start\n"))
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        _wait_for_texts(files["target"], ["printed at the start"], within=2.0)
    finally:
        process.kill()
        process.wait()
        manager.stop()


@pytest.mark.parametrize("watched", [True, False], ids=["inotify", "polled"])
def test_manager_copies_new_lines_at_once_without_waiting_for_the_safety_round(
    files: dict[str, Path], tmp_path: Path, monkeypatch, watched: bool
) -> None:
    if not watched:  # inotify out of watches: the copier is polled instead
        monkeypatch.setattr(logs.LogDirectoryWatch, "add", lambda self, container_id, source_path: False)
    manager = LogManager(str(tmp_path / "states"), poll_seconds=0.05, safety_seconds=60)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        time.sleep(0.1)  # the first full round has passed: only a wake-up can copy now
        append(files["source"], docker_entry("first\n"))
        _wait_for_texts(files["target"], ["first"], within=1.0)
        files["source"].rename(files["source"].with_name("abc-json.log.1"))  # Docker's rotation
        append(files["source"].with_name("abc-json.log.1"), docker_entry("before rotation\n"))
        append(files["source"], docker_entry("after rotation\n"))
        _wait_for_texts(files["target"], ["first", "before rotation", "after rotation"], within=3.0)
    finally:
        process.kill()
        process.wait()
        manager.stop()


def test_manager_stops_at_once(tmp_path: Path) -> None:
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    manager._ensure_thread()
    started = time.monotonic()
    manager.stop()
    assert time.monotonic() - started < 1


def test_a_stopped_manager_leaves_no_descriptor_open(files: dict[str, Path], tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.prepare("abc", str(files["target"]))
        manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
        manager.stop()
        manager.stop()  # twice is harmless
    finally:
        process.kill()
        process.wait()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_follow_after_stop_starts_nothing_and_writes_to_no_closed_descriptor(
        files: dict[str, Path], tmp_path: Path) -> None:
    """A log-resume thread that runs late during shutdown: its container is recovered at the next start."""
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.prepare("abc", str(files["target"]))
        manager.stop()
        before = len(os.listdir("/proc/self/fd"))
        reused = os.eventfd(0, os.EFD_NONBLOCK)  # takes the number of the closed wake descriptor, if free
        try:
            manager.follow("abc", str(files["source"]), str(files["target"]), process.pid)
            with pytest.raises(BlockingIOError):
                os.eventfd_read(reused)  # nothing was written to whatever holds the old number now
        finally:
            os.close(reused)
        assert len(os.listdir("/proc/self/fd")) == before
        assert manager._thread is None or not manager._thread.is_alive()
        assert manager.describe("abc")["source_path"] == ""  # the saved position was not touched
    finally:
        process.kill()
        process.wait()


def test_the_watch_wakes_for_the_log_and_its_rotations_not_for_dockers_other_files(tmp_path: Path) -> None:
    directory = tmp_path / "containers" / "abc"
    directory.mkdir(parents=True)
    source = directory / "abc-json.log"
    source.write_bytes(b"")
    watch = logs.LogDirectoryWatch()
    try:
        assert watch.add("abc", str(source))
        assert watch.changed() == set()
        (directory / ".tmp-config.v2.json123").write_text("{}")  # Docker's checkpoint at a start or stop
        (directory / ".tmp-config.v2.json123").rename(directory / "config.v2.json")
        (directory / "hostconfig.json").write_text("{}")
        assert watch.changed() == set()
        append(source, docker_entry("line\n"))
        assert watch.changed() == {"abc"}
        source.rename(directory / "abc-json.log.1")  # a rotation: the old file renamed, a new one made
        assert watch.changed() == {"abc"}
        source.write_bytes(b"")
        assert watch.changed() == {"abc"}
        watch.remove("abc")
        append(source, docker_entry("unwatched\n"))
        assert watch.changed() == set()
    finally:
        watch.close()


def test_an_inline_status_call_gives_up_before_copying_the_rest_of_a_log(files: dict[str, Path], tmp_path: Path) -> None:
    """ContainerStatus of an exited container copies what is left first: not on the connection's thread."""
    manager = LogManager(str(tmp_path / "states"))
    manager.prepare("abc", str(files["target"]))
    append(files["source"], docker_entry("left to copy\n"))
    with inline.attempt(), pytest.raises(inline.WouldWait):
        manager.finish("abc", str(files["source"]))
    assert not files["target"].read_bytes()
    manager.finish("abc", str(files["source"]))  # run again on a worker
    assert cri_texts(files["target"]) == ["left to copy"]
    with inline.attempt():
        manager.finish("abc", str(files["source"]))  # finished: nothing to wait for
    manager.stop()


@pytest.mark.parametrize("reader", [True, False])
def test_a_log_path_that_is_a_fifo_is_refused_not_waited_on(files: dict[str, Path], reader: bool) -> None:
    """A write into a FIFO nobody reads (or its opening, with no reader) would stall every container's copy."""
    files["target"].parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(files["target"])
    held = os.open(files["target"], os.O_RDONLY | os.O_NONBLOCK) if reader else None
    try:
        with pytest.raises(CRIError) as refused:
            copier_for(files)
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert str(files["target"]) in refused.value.message
    finally:
        if held is not None:
            os.close(held)


def test_a_reopened_link_starts_at_the_entry_docker_is_writing_not_inside_it(
        files: dict[str, Path], tmp_path: Path) -> None:
    """Starting at the file's size dropped the entry Docker was halfway through writing."""
    being_written = docker_entry("being written at the reopen\n")
    append(files["source"], docker_entry("before\n") + being_written[:20])
    manager = LogManager(str(tmp_path / "states"), safety_seconds=60, poll_seconds=0.05)
    process = subprocess.Popen(["sleep", "30"])
    try:
        manager.reopen("abc", str(files["source"]), str(files["target"]), process.pid)
        append(files["source"], being_written[20:] + docker_entry("after\n"))
        _wait_for_texts(files["target"], ["being written at the reopen", "after"], within=3.0)
    finally:
        process.kill()
        process.wait()
        manager.stop()

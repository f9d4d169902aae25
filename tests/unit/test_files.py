"""State files replaced whole: the old version or the new one, and no dot-file left behind."""

from __future__ import annotations

import os

import pytest

from dockershim_py import files


def test_a_write_replaces_the_file_and_leaves_no_dot_file(tmp_path) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old")
    (tmp_path / ".state.tmp").write_bytes(b"left by a crash, longer than what comes next")
    for durable in (True, False):
        files.write_atomically(str(path), b"new" * 10_000, durable=durable)
        assert path.read_bytes() == b"new" * 10_000
        assert sorted(os.listdir(tmp_path)) == ["state"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state"
    path.write_bytes(b"old")

    def no_space(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        files.write_atomically(str(path), b"new")
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["state"]


def test_removing_what_is_not_there_is_fine(tmp_path) -> None:
    files.remove_if_present(str(tmp_path / "absent"))

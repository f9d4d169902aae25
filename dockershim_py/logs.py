"""CRI-format container logs: Docker's json-file log copied line by line into the kubelet's file.

The kubelet and crictl read `<RFC3339Nano time> <stdout|stderr> <F|P> <text>` lines from the
file at `log_directory/log_path`, rotate it by renaming and asking for ReopenContainerLog, and
expect no line lost or repeated. dockershim and cri-dockerd only symlinked Docker's JSON file
there, so rotation could not work. Here every CRI container logs to Docker's json-file driver
and a copier follows that file (and Docker's own rotations of it, by inode) from a byte offset.

Why follow the file and not an attach stream: the file survives a restart of the shim. The
copier's position (source inode and offset, and the size of the CRI file it had written) is
saved under the root directory; after a restart the CRI file is cut back to that size and the
copy resumes from that offset, so a line is neither lost nor written twice.

Docker ends a json-file entry with "\\n" unless the line was split (Docker cuts lines at 16 KiB),
which is exactly CRI's F (full) and P (partial). Memory per container is one read chunk.

One thread serves every copier. It wakes when inotify says a log file changed (a write
or a rotation), when a container's process exits (a pidfd), when an exited one's log has
settled, and every 10 s as a safety net; an idle container costs nothing in between. Where
inotify cannot watch (no watches left), that copier is polled instead.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import select
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc

from . import inline
from .errors import CRIError, failed_precondition
from .files import write_atomically

log = logging.getLogger(__name__)

# Largest read; a Docker entry (16 KiB of text, JSON-escaped) always fits, longer ones are skipped.
CHUNK_BYTES = 256 * 1024
# What one copier may copy per round before the others get their turn.
ROUND_BUDGET_BYTES = 4 * 1024 * 1024
# How often a copier without an inotify watch looks for new lines.
POLL_SECONDS = 0.2
# How often every copier is pumped anyway, for what inotify might not have said. Seldom: each round
# reads every container's log, 220 of them on a full node.
SAFETY_ROUND_SECONDS = 10.0
# Docker closes a container's log at most a few seconds after its process exits.
EXIT_SETTLE_SECONDS = 3.0
PERSIST_SECONDS = 1.0
# How often an idle copier looks whether Docker rotated its file (a rotated file is final).
ROTATION_CHECK_SECONDS = 1.0
# A Docker log file is known by its inode and the start of what it holds: an inode number freed by
# Docker's removal of its oldest file is often the next new file's, which a restart must not
# take for the file its saved position is in. The first entries carry nanosecond timestamps.
SOURCE_HEAD_BYTES = 64 * 1024
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
STREAMS = ("stdout", "stderr")


# --- the format (pure) ----------------------------------------------------------------------------


def cri_line(docker_line: bytes) -> bytes | None:
    """One CRI log line from one line of Docker's json-file log; None for a line that is not an entry.

    Docker's timestamp is already RFC 3339 with nanoseconds in UTC, so it is kept as written.
    """
    try:
        entry = json.loads(docker_line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    text, stream, timestamp = entry.get("log"), entry.get("stream"), entry.get("time")
    if not isinstance(text, str) or stream not in STREAMS or not isinstance(timestamp, str) or " " in timestamp:
        return None
    full = text.endswith("\n")
    if full:
        text = text[:-1]
    prefix = f"{timestamp} {stream} {'F' if full else 'P'} "
    return (prefix + text).encode("utf-8", errors="replace") + b"\n"


@dataclass
class CopyState:
    """Where a copier stands; saved after each burst of copying, so a restart resumes exactly."""

    container_id: str
    source_path: str  # Docker's `<id>-json.log`; rotated files are `.1`, `.2`, ...
    target_path: str  # the CRI log file
    source_inode: int = 0  # 0 until the first source file is opened
    source_offset: int = 0
    source_head: str = ""  # digest of the file's first `source_head_bytes` (copied) bytes; "" unknown
    source_head_bytes: int = 0
    target_inode: int = 0
    target_size: int = 0
    finished: bool = False

    @classmethod
    def load(cls, path: str) -> CopyState:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def fields(self) -> dict[str, Any]:
        """The fields by name: all are plain values, so this shallow copy is `asdict` without its deep copies."""
        return dict(vars(self))

    def save(self, path: str) -> None:
        write_atomically(path, json.dumps(self.fields()).encode(), durable=False)


def docker_size_bytes(size: str) -> int:
    """Bytes in a json-file `max-size` (`10m`, `512k`, `1g`, `4096`), as Docker counts them."""
    size = size.strip().lower()
    unit = size[-1:] if size[-1:] in _SIZE_UNITS else ""
    return int(size[:len(size) - len(unit)]) * _SIZE_UNITS[unit]


def source_chain(source_path: str) -> list[tuple[str, int]]:
    """Docker's log files of a container, newest first, as (path, inode)."""
    chain = []
    index = 0
    while True:
        path = source_path if index == 0 else f"{source_path}.{index}"
        try:
            chain.append((path, os.stat(path).st_ino))
        except FileNotFoundError:
            if index > 0:
                return chain
        index += 1


def _end_of_last_entry(path: str) -> tuple[int, int]:
    """(inode, offset just past the last whole entry) of a Docker log file: one Docker is writing
    at this moment is copied whole, from its start."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - CHUNK_BYTES)
        tail = os.pread(fd, size - start, start)
        end = start + tail.rfind(b"\n") + 1 if b"\n" in tail else size
        return os.fstat(fd).st_ino, end
    finally:
        os.close(fd)


def head_digest(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()[:32]


def _open_inode(path: str, inode: int) -> int | None:
    """`path` opened for reading if it still is file `inode`, else None (Docker renamed it meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    if os.fstat(fd).st_ino != inode:
        os.close(fd)
        return None
    return fd


# --- one container --------------------------------------------------------------------------------


class LogCopier:
    """Copies one container's Docker log into its CRI log file; thread-safe."""

    def __init__(self, state: CopyState, state_path: str, rotate_bytes: int = 0, on_disk: bool = False) -> None:
        """`on_disk`: `state` is what `state_path` holds, so saving it unchanged is skipped."""
        self.state = state
        self._state_path = state_path
        self._on_disk = state.fields() if on_disk else None
        self._rotate_bytes = rotate_bytes  # Docker's max-size: past it, a rotation is due any moment
        self._lock = threading.Lock()
        self._source_fd: int | None = None
        self._target_fd: int | None = None
        self._skipping = False  # inside an entry longer than CHUNK_BYTES
        self._write_error: OSError | None = None  # why the last write failed (a full disk), until one works
        self._saved_at = 0.0
        self._unsaved = False  # copied since the position was last saved
        self._rotation_checked_at = 0.0
        self.exited_at: float | None = None
        self.copied_at = time.monotonic()

    # --- opening ---------------------------------------------------------------------------------

    def open(self, must_save: bool = False) -> None:
        """Open both ends; on a resumed state the CRI file is cut back to what the saved offset matches,
        unless Docker rotated away the file that offset is in: what was copied after it could not be
        copied again, so it stays (and lines of the newer files may repeat).

        `must_save`: a position that cannot be written raises (as CRIError) instead of being logged.
        """
        with self._lock:
            source_kept = not self.state.source_inode or any(
                self._is_saved_source(path, inode) for path, inode in source_chain(self.state.source_path))
            self._open_target(resume=source_kept)
            self._save(must_save)

    def _is_saved_source(self, path: str, inode: int) -> bool:
        """Whether `path` (now inode `inode`) is the file the saved position is in."""
        if inode != self.state.source_inode:
            return False
        fd = _open_inode(path, inode)
        if fd is None:
            return True  # renamed this very moment by a rotation: it is still there
        try:
            return self._head_matches(fd)
        finally:
            os.close(fd)

    def _head_matches(self, fd: int) -> bool:
        """Whether open file `fd` starts as the file of the saved position did (its inode may be another's)."""
        if not self.state.source_head_bytes:
            return True  # saved before anything was copied from it, or by an older version
        return head_digest(fd, self.state.source_head_bytes) == self.state.source_head

    def _open_target(self, resume: bool) -> None:
        directory = os.path.dirname(self.state.target_path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            # O_NONBLOCK: opening a FIFO for writing would wait for a reader (no effect on a file).
            fd = os.open(self.state.target_path,
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o640)
        except OSError as exc:
            raise failed_precondition(f"cannot open the container log {self.state.target_path}: {exc.strerror}") from exc
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would stall the copier of every container
            os.close(fd)
            raise failed_precondition(f"the container log {self.state.target_path} is not a regular file")
        if resume and info.st_ino == self.state.target_inode and info.st_size > self.state.target_size:
            log.info("container %s: dropping %d log bytes written after the last saved position, to copy them again",
                     self.state.container_id[:12], info.st_size - self.state.target_size)
            os.ftruncate(fd, self.state.target_size)
        else:
            self.state.target_size = info.st_size
        self.state.target_inode = info.st_ino
        if self._target_fd is not None:
            os.close(self._target_fd)
        self._target_fd = fd

    def _open_source(self) -> bool:
        """Open the file the saved position is in, else the oldest still there; False when none exists yet."""
        chain = source_chain(self.state.source_path) if self.state.source_path else []
        if not chain:
            return False
        for path, inode in chain:
            if inode == self.state.source_inode:
                fd = _open_inode(path, inode)
                if fd is None:
                    return False  # rotated this very moment: next round
                if not self._head_matches(fd):  # the inode number of a removed file, now another's
                    os.close(fd)
                    continue
                self._source_fd = fd
                if os.fstat(fd).st_size < self.state.source_offset:
                    self._start_file(inode)
                return True
        if self.state.source_inode:
            log.warning("container %s: Docker rotated away the log file being copied; lines in it are lost",
                        self.state.container_id[:12])
        path, inode = chain[-1]
        fd = _open_inode(path, inode)
        if fd is None:
            return False
        self._source_fd = fd
        self._start_file(inode)
        return True

    def _start_file(self, inode: int) -> None:
        """Copy the open source file, inode `inode`, from its start."""
        self.state.source_inode, self.state.source_offset = inode, 0
        self.state.source_head, self.state.source_head_bytes = "", 0
        self._unsaved = True

    # --- copying ---------------------------------------------------------------------------------

    def pump(self, budget: int = ROUND_BUDGET_BYTES, thorough: bool = False) -> int:
        """Copy up to `budget` bytes of Docker's log; the bytes of Docker's log consumed."""
        with self._lock:
            return self._pump(budget, thorough)

    def _pump(self, budget: int, thorough: bool = False) -> int:
        """Copy; `thorough` looks for a rotation at every end of file, not just once a second."""
        if self.state.finished or self._target_fd is None:
            return 0
        if self._source_fd is None and not self._open_source():
            return 0
        assert self._source_fd is not None  # _open_source() opened it
        consumed = 0
        while consumed < budget:
            data = os.pread(self._source_fd, CHUNK_BYTES, self.state.source_offset)
            if not data:
                if self._rotation_due(thorough) and self._follow_rotation(self._source_fd):
                    continue
                break
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) < CHUNK_BYTES:
                    break  # Docker is writing this entry: wait for its end
                self._skip(len(data))
                consumed += len(data)
                continue
            if not self._write(self._target_fd, data[:end + 1]):
                break
            self.state.source_offset += end + 1
            consumed += end + 1
        if consumed:
            self.copied_at = time.monotonic()
            self._unsaved = True
        if self._unsaved and time.monotonic() - self._saved_at > PERSIST_SECONDS:
            self._save()
        return consumed

    def _skip(self, length: int) -> None:
        if not self._skipping:
            log.warning("container %s: a Docker log entry is longer than %d bytes; it is skipped",
                        self.state.container_id[:12], CHUNK_BYTES)
        self._skipping = True
        self.state.source_offset += length

    def _write(self, target_fd: int, lines: bytes) -> bool:
        out = bytearray()
        for line in lines.split(b"\n")[:-1]:
            if self._skipping:  # the tail of an entry that was too long
                self._skipping = False
                continue
            converted = cri_line(line)
            if converted is not None:
                out += converted
        view = memoryview(out)
        # The file's own size, not the one remembered: someone may have emptied it (a full disk's
        # `truncate -s0`, logrotate's copytruncate), and taking a write back must not cut a line.
        start = os.fstat(target_fd).st_size
        try:
            while view:
                view = view[os.write(target_fd, view):]
        except OSError as exc:
            log.error("container %s: cannot write its log %s: %s", self.state.container_id[:12],
                      self.state.target_path, exc.strerror)
            os.ftruncate(target_fd, start)  # a partial write is taken back
            self.state.target_size = start
            self._write_error = exc
            return False
        self.state.target_size = start + len(out)
        self._write_error = None
        return True

    def _rotation_due(self, thorough: bool) -> bool:
        """Whether to look for a rotation now: always when asked, or when the file is as big as Docker
        lets it grow (it must not be missed while Docker keeps few files), else once a second."""
        return (thorough
                or 0 < self._rotate_bytes <= self.state.source_offset
                or time.monotonic() - self._rotation_checked_at > ROTATION_CHECK_SECONDS)

    def _follow_rotation(self, source_fd: int) -> bool:
        """At the end of a file: move to the next one if Docker rotated it; True when there is more to read."""
        self._rotation_checked_at = time.monotonic()
        try:
            current = os.stat(self.state.source_path)
        except FileNotFoundError:
            return False  # the container is being removed
        if current.st_ino == self.state.source_inode:
            if current.st_size < self.state.source_offset:  # truncated in place: start over
                self._start_file(current.st_ino)
                return True
            return False
        if os.fstat(source_fd).st_size > self.state.source_offset:
            return True  # written just before the rotation: read it first, it is final now
        for _ in range(10):  # Docker may rotate again between listing the files and opening one
            chain = source_chain(self.state.source_path)
            if not chain:
                return False
            inodes = [inode for _, inode in chain]
            if self.state.source_inode not in inodes:
                log.warning("container %s: Docker rotated its log faster than it could be copied; lines are lost "
                            "(raise --docker-log-max-size)", self.state.container_id[:12])
            position = inodes.index(self.state.source_inode) if self.state.source_inode in inodes else len(chain)
            path, inode = chain[max(position - 1, 0)]
            fd = _open_inode(path, inode)
            if fd is not None:
                os.close(source_fd)
                self._source_fd = fd
                self._start_file(inode)
                return True
        return False

    # --- kubelet requests and the end --------------------------------------------------------------

    def reopen(self) -> None:
        """Start a new CRI file at the path (the kubelet renamed the old one); later lines go there."""
        with self._lock:
            if self.state.finished:
                raise failed_precondition(f"container {self.state.container_id}: its log is complete and closed")
            self._pump(ROUND_BUDGET_BYTES)  # what is already in Docker's log stays in the renamed file
            self._open_target(resume=False)
            self._save()

    def finish(self) -> None:
        """Copy everything that is left (the container has exited) and close."""
        with self._lock:
            if self.state.finished:
                return
            while self._pump(ROUND_BUDGET_BYTES, thorough=True):
                pass
            if self._write_error is not None:  # the rest is still to copy: not finished, tried again
                self._save()
                raise self._write_error
            self.state.finished = True
            self._save()
            self._close()

    def close(self) -> None:
        """Save the position and close; copying resumes from here when the copier is opened again."""
        with self._lock:
            self._save()
            self._close()

    def _close(self) -> None:
        for fd in (self._source_fd, self._target_fd):
            if fd is not None:
                os.close(fd)
        self._source_fd = self._target_fd = None

    def _save(self, must_save: bool = False) -> None:
        """Write the position, unless the file holds it already: prepare, close and reopen at a start
        would each write the same bytes again."""
        state = self.state
        if self._source_fd is not None and state.source_head_bytes < min(state.source_offset, SOURCE_HEAD_BYTES):
            state.source_head_bytes = min(state.source_offset, SOURCE_HEAD_BYTES)  # copied, so final
            state.source_head = head_digest(self._source_fd, state.source_head_bytes)
        current = state.fields()
        try:
            if current != self._on_disk:
                self.state.save(self._state_path)
                self._on_disk = current
            self._saved_at = time.monotonic()
            self._unsaved = False
        except OSError as exc:
            if must_save:
                self._close()
                raise CRIError(grpc.StatusCode.RESOURCE_EXHAUSTED if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                               else grpc.StatusCode.FAILED_PRECONDITION,
                               f"cannot save the log copy position {self._state_path}: {exc.strerror}") from exc
            log.error("container %s: cannot save the log copy position: %s", self.state.container_id[:12], exc)


# --- every container ------------------------------------------------------------------------------

_IN_MODIFY, _IN_MOVED_TO, _IN_CREATE = 0x2, 0x80, 0x100
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
_INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows


class LogDirectoryWatch:
    """inotify on the directories of the Docker logs being copied: which containers wrote."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd
        self._containers: dict[int, str] = {}  # watch descriptor -> container id
        self._log_names: dict[int, bytes] = {}  # watch descriptor -> the log's file name
        self._watches: dict[str, int] = {}

    def add(self, container_id: str, source_path: str) -> bool:
        """Watch the directory of a container's log; False when inotify cannot (then poll it)."""
        directory, name = os.path.split(source_path)
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO)
        if wd < 0:
            log.info("container %s: cannot watch %s (%s); polling its log", container_id[:12], directory,
                     os.strerror(ctypes.get_errno()))
            return False
        self._containers[wd] = container_id
        self._log_names[wd] = os.fsencode(name)
        self._watches[container_id] = wd
        return True

    def remove(self, container_id: str) -> None:
        wd = self._watches.pop(container_id, None)
        if wd is not None and self._containers.pop(wd, None) is not None:
            self._log_names.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    def changed(self) -> set[str] | None:
        """The containers whose log files changed since the last call; None if the kernel lost count.

        Only names that start with the log's own (the log and its rotations, `.1`, `.2.gz`):
        Docker rewrites config.v2.json and hostconfig.json in the same directory at every start,
        stop and exec, which would wake the copier for nothing each time.
        """
        changed: set[str] = set()
        overflow = False
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
                name_at = offset + _INOTIFY_EVENT.size
                offset = name_at + length
                if mask & _IN_Q_OVERFLOW:
                    overflow = True
                elif mask & _IN_IGNORED:  # the directory is gone (its container removed)
                    container_id = self._containers.pop(wd, None)
                    self._log_names.pop(wd, None)
                    if container_id is not None and self._watches.get(container_id) == wd:
                        del self._watches[container_id]
                elif wd in self._containers and data.startswith(self._log_names[wd], name_at):
                    changed.add(self._containers[wd])
        return None if overflow else changed

    def close(self) -> None:
        os.close(self.fd)


class LogManager:
    """The copiers of all running containers and the one thread that drives them."""

    def __init__(self, state_directory: str, rotate_bytes: int = 0, poll_seconds: float = POLL_SECONDS,
                 safety_seconds: float = SAFETY_ROUND_SECONDS) -> None:
        self._directory = state_directory
        self._rotate_bytes = rotate_bytes
        os.makedirs(state_directory, mode=0o700, exist_ok=True)
        self._poll_seconds = poll_seconds
        self._safety_seconds = safety_seconds
        self._lock = threading.Lock()
        self._copiers: dict[str, LogCopier] = {}
        self._polled: set[str] = set()  # copiers without an inotify watch
        self._behind: set[str] = set()  # copiers that stopped at their round's budget
        self._exited: set[str] = set()  # copiers whose process ended: finished once their log settles
        # Containers whose log is complete (a CRI container starts once, so it stays complete):
        # ContainerStatus of an exited container then reads no file.
        self._complete: set[str] = set()
        self._pidfds: dict[int, str] = {}
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # stop() or a new copier ends the wait
        self._epoll.register(self._wake, select.EPOLLIN)
        self._watch: LogDirectoryWatch | None = None
        try:
            self._watch = LogDirectoryWatch()
            self._epoll.register(self._watch.fd, select.EPOLLIN)
        except OSError as exc:
            log.warning("inotify is not available (%s): container logs are polled every %.1fs", exc, poll_seconds)
        self._last_full_round = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # ContainerStatus takes _lock on the connection's thread, so nothing that waits holds it:
        # opening a copier's files is serialized by _open_lock (taken before _lock, never inside
        # it), and starting the thread (Thread.start() waits for it to run) by _thread_lock.
        self._open_lock = threading.Lock()
        self._thread_lock = threading.Lock()

    def state_path(self, container_id: str) -> str:
        return os.path.join(self._directory, f"{container_id}.json")

    def saved_state(self, container_id: str) -> CopyState | None:
        try:
            return CopyState.load(self.state_path(container_id))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning("container %s: unreadable log copy position, starting over: %s", container_id[:12], exc)
            return None

    def saved_containers(self) -> list[str]:
        return [name[:-len(".json")] for name in os.listdir(self._directory)
                if name.endswith(".json") and not name.startswith(".")]

    def prepare(self, container_id: str, target_path: str) -> None:
        """Before a container starts: the CRI file exists and the starting position is saved.

        A position that cannot be saved (a full disk) fails the start: the container would run
        with a log that no restart of the shim knows to copy.
        """
        state = CopyState(container_id=container_id, source_path="", target_path=target_path)
        copier = LogCopier(state, self.state_path(container_id), self._rotate_bytes)
        copier.open(must_save=True)
        copier.close()

    def follow(self, container_id: str, source_path: str, target_path: str, pid: int) -> None:
        """Copy a started (or, after a restart, still running) container's log until its process ends.

        Without a readable saved position (the file was left empty by a crash, or lost), copying
        starts over from Docker's oldest log file: lines may repeat in the CRI file, none are lost.
        """
        with self._open_lock:
            if self._stopping.is_set():  # a late resume at shutdown: the next start recovers it
                return
            with self._lock:
                if container_id in self._copiers:
                    return
            # Read under the open lock: a finish() that made and finished a copier meanwhile has
            # saved the log as finished, and a copier from an older read would copy it again.
            state = self.saved_state(container_id)
            if state is not None and state.finished:
                return
            if state is None:
                log.warning("container %s: no saved log copy position; copying its whole Docker log to %s again",
                            container_id[:12], target_path)
                state = CopyState(container_id=container_id, source_path="", target_path=target_path)
                copier = LogCopier(state, self.state_path(container_id), self._rotate_bytes)
            else:
                copier = LogCopier(state, self.state_path(container_id), self._rotate_bytes, on_disk=True)
            state.source_path = source_path  # news to the file, so open() below saves it
            copier.open()
            with self._lock:
                self._copiers[container_id] = copier
                self._watch_exit(container_id, copier, pid)
                if self._watch is None or not self._watch.add(container_id, source_path):
                    self._polled.add(container_id)
                # What it printed before the watch began (`id; sleep infinity`) wakes nothing:
                # copied by the next round, not the safety round.
                self._behind.add(container_id)
            os.eventfd_write(self._wake, 1)  # under the open lock: stop() closes it only after taking that
        self._ensure_thread()

    def finish(self, container_id: str, source_path: str = "") -> None:
        """The container has exited: copy what is left now, so whoever reads the log next sees all of it.

        `source_path` (Docker's LogPath) lets a container that exited while the shim was down catch up.
        A log that cannot be written to the end (a full disk) is left to the safety round, which
        tries again: the caller's StopContainer or ContainerStatus does not fail for it.
        """
        try:
            self._finish(container_id, source_path)
        except OSError as exc:
            log.error("container %s: finishing its log failed (%s); tried again at the safety round",
                      container_id[:12], exc)
            self._ensure_thread()  # the copier is left to it: none may be running on a shim just started

    def _finish(self, container_id: str, source_path: str) -> None:
        with self._lock:
            if container_id in self._complete:
                return
            copying = container_id in self._copiers
        # Read outside the lock (the file is replaced whole): a finished log stays finished.
        if not copying and self._finished_on_disk(container_id):
            with self._lock:
                self._complete.add(container_id)
            return
        inline.may_wait("copying the rest of a container's log")  # a copier's lock may be held a while
        with self._open_lock:  # callers at the same time share one copier, so nothing is copied twice
            with self._lock:
                copier = self._copiers.get(container_id)
            if copier is None:  # none yet: one from the saved position
                state = self.saved_state(container_id)
                if state is None or state.finished:  # finished by another caller since
                    with self._lock:
                        self._complete.add(container_id)
                    return
                copier = LogCopier(state, self.state_path(container_id), self._rotate_bytes, on_disk=True)
                state.source_path = state.source_path or source_path
                copier.open()
                with self._lock:
                    self._copiers[container_id] = copier
        try:
            copier.finish()
        except OSError:
            if copier.exited_at is None:  # so the safety round finishes it once the log can be written
                copier.exited_at = time.monotonic()
            raise
        with self._lock:
            self._complete.add(container_id)
            if self._copiers.get(container_id) is copier:
                self._drop(container_id)

    def _finished_on_disk(self, container_id: str) -> bool:
        state = self.saved_state(container_id)
        return state is None or state.finished

    def reopen(self, container_id: str, source_path: str, target_path: str, pid: int) -> None:
        """A new CRI file at the path, the kubelet having renamed the old one. A running container
        no copier writes (one dockershim or cri-dockerd made: its log path is a link to Docker's
        file, which the kubelet renamed) is copied from here on, from the end of Docker's log as
        it is now: what came before stays in Docker's file, which the renamed link still shows."""
        with self._lock:
            copier = self._copiers.get(container_id)
        if copier is not None:
            copier.reopen()
            return
        if not source_path:
            raise failed_precondition(f"container {container_id}: Docker keeps no log file for it (not json-file)")
        with self._open_lock:  # two reopens at once: one saves the starting point, the other is refused
            if self.saved_state(container_id) is not None:
                raise failed_precondition(f"container {container_id}: its log copy is not running (see the shim's log)")
            try:
                if os.path.islink(target_path):  # not renamed: the link's lines are in Docker's file anyway
                    os.unlink(target_path)
                inode, offset = _end_of_last_entry(source_path)
            except OSError as exc:
                raise failed_precondition(f"container {container_id}: cannot reopen its log: {exc}") from exc
            state = CopyState(container_id=container_id, source_path=source_path, target_path=target_path,
                              source_inode=inode, source_offset=offset)
            started = LogCopier(state, self.state_path(container_id), self._rotate_bytes)
            started.open(must_save=True)
            started.close()
        log.info("container %s: its log, a link to Docker's until now, is copied to %s from here on",
                 container_id[:12], target_path)
        self.follow(container_id, source_path, target_path, pid)

    def keep_only(self, container_ids: set[str]) -> None:
        """Forget what is remembered of containers removed behind the shim's back."""
        with self._lock:
            self._complete &= container_ids

    def forget(self, container_id: str) -> None:
        """The container is removed: stop copying and drop its saved position."""
        with self._lock:
            self._complete.discard(container_id)
            copier = self._copiers.get(container_id)
            if copier is not None:
                self._drop(container_id)
        if copier is not None:
            copier.close()
        try:
            os.unlink(self.state_path(container_id))
        except FileNotFoundError:
            pass

    def _drop(self, container_id: str) -> None:
        """Stop driving a copier; the caller holds the lock."""
        del self._copiers[container_id]
        self._polled.discard(container_id)
        self._behind.discard(container_id)
        self._exited.discard(container_id)
        if self._watch is not None:
            self._watch.remove(container_id)

    def describe(self, container_id: str) -> dict[str, Any] | None:
        state = self.saved_state(container_id)
        return None if state is None else state.fields()

    def stop(self) -> None:
        with self._open_lock:  # no follow() is between its check of _stopping and its wake-up write
            if self._stopping.is_set():
                return
            self._stopping.set()
        os.eventfd_write(self._wake, 1)
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            copiers = list(self._copiers.values())
            self._copiers.clear()
        for copier in copiers:
            copier.pump()
            copier.close()
        if self._thread is None or not self._thread.is_alive():  # the descriptors are no longer waited on
            for fd in [*self._pidfds, self._wake]:
                os.close(fd)
            self._pidfds.clear()
            if self._watch is not None:
                self._watch.close()
            self._epoll.close()

    # --- the thread ------------------------------------------------------------------------------

    def _watch_exit(self, container_id: str, copier: LogCopier, pid: int) -> None:
        try:
            if pid <= 0:  # Docker's Pid of a container that exited before it was inspected
                raise ProcessLookupError(pid)
            fd = os.pidfd_open(pid)
        except (ProcessLookupError, ValueError):
            copier.exited_at = time.monotonic()  # gone already (or no pid): finish once the log settles
            self._exited.add(container_id)
            return
        except OSError as exc:  # no pidfds here (a kernel before 5.3, a seccomp profile): not an exit
            log.warning("container %s: cannot watch its process for its exit (%s); its log is copied "
                        "until StopContainer or ContainerStatus finds it exited", container_id[:12], exc)
            return
        self._pidfds[fd] = container_id
        self._epoll.register(fd, select.EPOLLIN)

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._stopping.is_set():
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="log-copier", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._round(self._epoll.poll(self._wait_seconds()))
            except Exception:  # one bad round must not end log copying for every container
                log.exception("log copier round failed")
                time.sleep(self._poll_seconds)

    def _wait_seconds(self) -> float:
        """Until the next round: at once for a copier behind, else the poll or the safety round, or
        sooner when an exited container's log settles then."""
        with self._lock:
            if self._behind:
                return 0
            wait = self._poll_seconds if self._polled else self._safety_seconds
            settled = [at for at in (_settles_at(self._copiers.get(container_id)) for container_id in self._exited)
                       if at is not None]
        if settled:  # a little past the moment: a round finishes a log once it is settled for longer
            wait = min(wait, max(min(settled) - time.monotonic(), 0) + 0.01)
        return wait

    def _round(self, events: list[tuple[int, int]]) -> None:
        now = time.monotonic()
        full_round = now - self._last_full_round >= self._safety_seconds
        woken: set[str] = set()  # their log changed: a rotation is looked for at once
        with self._lock:
            # An exited container's last lines wake its copier as any others do; past that it is
            # due once its log has settled. (Pumping every exited copier at every round made each
            # wake-up of a churning node copy nothing dozens of times.)
            due = set(self._polled) | self._behind | {
                container_id for container_id in self._exited if _settled(self._copiers.get(container_id), now)}
            for fd, _ in events:
                if fd == self._wake:
                    try:
                        os.eventfd_read(self._wake)
                    except BlockingIOError:  # read by an earlier round
                        pass
                    continue
                if self._watch is not None and fd == self._watch.fd:
                    changed = self._watch.changed()
                    if changed is None:
                        full_round = True  # inotify lost events: look at every copier
                    else:
                        woken |= changed
                    continue
                container_id = self._pidfds.pop(fd, "")
                self._epoll.unregister(fd)
                os.close(fd)
                copier = self._copiers.get(container_id)
                if copier is not None:
                    copier.exited_at = now
                    self._exited.add(container_id)
                    due.add(container_id)
            if full_round:
                self._last_full_round = now
                due = set(self._copiers)
            copiers = [(container_id, self._copiers[container_id]) for container_id in due | woken
                       if container_id in self._copiers]
            self._behind.clear()
        for container_id, copier in copiers:
            try:
                if copier.pump(thorough=container_id in woken) >= ROUND_BUDGET_BYTES:
                    with self._lock:
                        self._behind.add(container_id)
            except OSError as exc:
                log.error("container %s: copying its log failed: %s", container_id[:12], exc)
            if _settled(copier, now):
                try:
                    self._finish(container_id, "")
                except OSError as exc:  # tried again at the safety round, not at every round meanwhile
                    log.error("container %s: finishing its log failed: %s", container_id[:12], exc)
                    with self._lock:
                        self._exited.discard(container_id)
                    continue
                if not os.path.exists(copier.state.source_path):  # removed with its pod, not by RemoveContainer
                    self.forget(container_id)


def _settles_at(copier: LogCopier | None) -> float | None:
    """When an exited container's log will have been still long enough to be final; None while it runs."""
    if copier is None or copier.exited_at is None:
        return None
    return max(copier.exited_at, copier.copied_at) + EXIT_SETTLE_SECONDS


def _settled(copier: LogCopier | None, now: float) -> bool:
    settles_at = _settles_at(copier)
    return settles_at is not None and now > settles_at

"""The shim's state files (checkpoints, CNI results, log copier positions), replaced whole.

A reader, or the shim after a crash, finds the old version or the new one, never half of one.
"""

from __future__ import annotations

import os


def write_atomically(path: str, data: bytes, durable: bool = True) -> None:
    """Write `data` to a dot-file beside `path`, then rename it over `path`.

    `durable`: fsync the file and its directory before returning, for state that must outlive a
    power loss (checkpoints, CNI results). The log copier's positions are rewritten constantly,
    and one a little behind only re-reads what it had copied, so they skip the fsyncs.
    A dot-file left by a crash is overwritten by the next write to `path`.
    """
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException:
        remove_if_present(temporary)
        raise
    if durable:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

"""Sandbox checkpoints: what a pod sandbox was asked for, kept on disk next to Docker's state.

One JSON file per sandbox, `<root>/sandbox/<sandbox id>`, in cri-dockerd's shape (version, name,
namespace, data {port_mappings, host_network}, checksum), with the pod's uid and creation time
beside them (cri-dockerd's reader ignores fields it does not know; its files have neither). It
outlives the pause container, so ListPodSandbox can still show a sandbox whose container vanished
(as NOTREADY, and the kubelet then stops and removes it), PodSandboxStatus can answer for it with
the uid and creation time that crictl's client requires, and StopPodSandbox knows what network
to tear down.

Files are written atomically (temporary dot-file, fsync, rename). The checksum is cri-dockerd's:
FNV-32a of go-spew's `%#v` rendering of `data` as a Go value, which names the Go types, so
dockershim's files (its own type names, with or without `HostIP`) and files of earlier
dockershim-py versions (FNV-32a of the canonical JSON) are accepted too, and cri-dockerd reads
the files the shim writes. A file that does not parse or whose checksum matches none of these is
removed with a log line, as cri-dockerd does. The store keeps an index in memory, loaded once at start,
so listing sandboxes every second reads no files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from .files import remove_if_present, write_atomically

log = logging.getLogger(__name__)

VERSION = "v1"
_SANDBOX_ID = re.compile(r"[0-9a-f]{1,64}")


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be trusted."""


@dataclass(frozen=True)
class PortMapping:
    protocol: str
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True)
class SandboxCheckpoint:
    name: str
    namespace: str
    port_mappings: tuple[PortMapping, ...] = field(default_factory=tuple)
    host_network: bool = False
    uid: str = ""  # outside the checksummed data, as the two below are
    created_at: int = 0  # nanoseconds since the epoch


# --- encoding (pure) ----------------------------------------------------------------------------


def _fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def _data_of(checkpoint: SandboxCheckpoint) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if checkpoint.port_mappings:
        data["port_mappings"] = [
            {
                "protocol": mapping.protocol.lower(),
                "container_port": mapping.container_port,
                "host_port": mapping.host_port,
                **({"host_ip": mapping.host_ip} if mapping.host_ip else {}),
            }
            for mapping in checkpoint.port_mappings
        ]
    if checkpoint.host_network:
        data["host_network"] = True
    return data


def checksum(data: dict[str, Any]) -> int:
    """Earlier dockershim-py versions' checksum: of the canonical JSON."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return _fnv32a(canonical)


@dataclass(frozen=True)
class GoTypes:
    """Where a shim's checkpoint types live: go-spew's rendering names them."""

    data_package: str
    mapping_package: str
    has_host_ip: bool


CRI_DOCKERD_TYPES = GoTypes("core", "config", True)
# Kubelet 1.21-1.23 (with HostIP), then the dockershim of the kubelets before.
DOCKERSHIM_TYPES = (GoTypes("dockershim", "dockershim", True), GoTypes("dockershim", "dockershim", False))


def go_rendering(data: dict[str, Any], types: GoTypes) -> str:
    """go-spew's `%#v` of `data` decoded into the Go checkpoint types (the kubelet's checksum input)."""
    def pointer(go_type: str, value: Any) -> str:
        return f"(*{go_type}){'<nil>' if value is None else value}"

    def mapping(entry: Any) -> str:
        if entry is None:
            return "<nil>"
        fields = [f"Protocol:{pointer(types.mapping_package + '.Protocol', entry.get('protocol'))}",
                  f"ContainerPort:{pointer('int32', entry.get('container_port'))}",
                  f"HostPort:{pointer('int32', entry.get('host_port'))}"]
        if types.has_host_ip:
            fields.append(f"HostIP:(string){entry.get('host_ip') or ''}")
        return "<*>{" + " ".join(fields) + "}"

    mappings = data.get("port_mappings")
    listed = "<nil>" if mappings is None else "[" + " ".join(mapping(entry) for entry in mappings) + "]"
    return (f"({types.data_package}.CheckpointData){{PortMappings:([]*{types.mapping_package}.PortMapping){listed} "
            f"HostNetwork:(bool){'true' if data.get('host_network') else 'false'}}}")


def go_checksum(data: dict[str, Any], types: GoTypes = CRI_DOCKERD_TYPES) -> int:
    return _fnv32a(go_rendering(data, types).encode())


def _checksum_matches(value: Any, data: dict[str, Any]) -> bool:
    if not isinstance(value, int):
        return False
    try:
        return value in (go_checksum(data), checksum(data), *(go_checksum(data, types) for types in DOCKERSHIM_TYPES))
    except (AttributeError, TypeError):  # port mappings that are not objects: malformed, reported below
        return value == checksum(data)


def encode(checkpoint: SandboxCheckpoint) -> bytes:
    data = _data_of(checkpoint)
    document = {
        "version": VERSION,
        "name": checkpoint.name,
        "namespace": checkpoint.namespace,
        "data": data,
        "checksum": go_checksum(data),
    }
    if checkpoint.uid:
        document["uid"] = checkpoint.uid
    if checkpoint.created_at:
        document["created_at"] = checkpoint.created_at
    return json.dumps(document, indent=1).encode()


def decode(raw: bytes) -> SandboxCheckpoint:
    """The checkpoint in `raw`; CorruptCheckpoint when it is malformed or fails its checksum."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise CorruptCheckpoint(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CorruptCheckpoint("not a JSON object")
    if document.get("version") != VERSION:
        raise CorruptCheckpoint(f"version {document.get('version')!r}, expected {VERSION!r}")
    name, namespace = document.get("name"), document.get("namespace")
    if not isinstance(name, str) or not isinstance(namespace, str):
        raise CorruptCheckpoint("name or namespace missing")
    data = document.get("data") or {}
    if not isinstance(data, dict):
        raise CorruptCheckpoint("data is not an object")
    if not _checksum_matches(document.get("checksum"), data):
        raise CorruptCheckpoint(f"checksum {document.get('checksum')!r} does not match its data")
    try:
        mappings = tuple(
            PortMapping(
                protocol=str(entry.get("protocol", "TCP")).upper(),  # written lower-case, as dockershim did
                container_port=int(entry.get("container_port", 0)),
                host_port=int(entry.get("host_port", 0)),
                host_ip=str(entry.get("host_ip", "")),
            )
            for entry in data.get("port_mappings") or []
        )
    except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: a port of 1e999
        raise CorruptCheckpoint(f"malformed port mapping: {exc}") from exc
    return SandboxCheckpoint(name, namespace, mappings, bool(data.get("host_network", False)),
                             uid=_kept_uid(document.get("uid")), created_at=_kept_time(document.get("created_at")))


# The uid and creation time are outside the checksum: a value that could not be the shim's is
# left out, not carried into every ListPodSandbox (a time past int64 failed each one).
def _kept_uid(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 256:
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return ""
    return value


def _kept_time(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 63 else 0


# --- the store (I/O) ----------------------------------------------------------------------------


def _valid_id(sandbox_id: str) -> bool:
    """Only Docker IDs name files: a request's id never reaches outside the directory."""
    return _SANDBOX_ID.fullmatch(sandbox_id) is not None


class CheckpointStore:
    """The checkpoints under one directory, indexed in memory; safe to use from many threads."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._index = self._load()

    def _load(self) -> dict[str, SandboxCheckpoint]:
        index: dict[str, SandboxCheckpoint] = {}
        for entry in os.listdir(self.directory):
            path = os.path.join(self.directory, entry)
            if entry.startswith("."):  # a write interrupted before its rename
                remove_if_present(path)
                continue
            if not _valid_id(entry):
                log.warning("ignoring %s: not a sandbox checkpoint", path)
                continue
            try:
                with open(path, "rb") as handle:
                    index[entry] = decode(handle.read())
            except CorruptCheckpoint as exc:
                log.warning("removing corrupt checkpoint %s: %s", path, exc)
                remove_if_present(path)
            except OSError as exc:
                log.warning("cannot read checkpoint %s: %s", path, exc)
        log.info("loaded %d sandbox checkpoint(s) from %s", len(index), self.directory)
        return index

    def write(self, sandbox_id: str, checkpoint: SandboxCheckpoint) -> None:
        if not _valid_id(sandbox_id):
            raise ValueError(f"not a sandbox id: {sandbox_id!r}")
        write_atomically(os.path.join(self.directory, sandbox_id), encode(checkpoint))
        with self._lock:
            self._index[sandbox_id] = checkpoint

    def get(self, sandbox_id: str) -> SandboxCheckpoint | None:
        with self._lock:
            return self._index.get(sandbox_id)

    def all(self) -> dict[str, SandboxCheckpoint]:
        with self._lock:
            return dict(self._index)

    def remove(self, sandbox_id: str) -> None:
        """Forget a checkpoint; one already gone is fine."""
        if not _valid_id(sandbox_id):
            return
        remove_if_present(os.path.join(self.directory, sandbox_id))
        with self._lock:
            self._index.pop(sandbox_id, None)


"""Sandbox checkpoints: cri-dockerd's JSON shape, checksums, atomic writes, corrupt files dropped."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from dockershim_py import checkpoint
from dockershim_py.checkpoint import CheckpointStore, CorruptCheckpoint, PortMapping, SandboxCheckpoint

SANDBOX_ID = "a" * 64
OTHER_ID = "b" * 64
SAMPLE = SandboxCheckpoint(
    name="web-0",
    namespace="default",
    port_mappings=(PortMapping("TCP", 80, 8080), PortMapping("UDP", 53, 5353, "127.0.0.1")),
    host_network=False,
)


def test_encoding_has_cri_dockerds_shape() -> None:
    document = json.loads(checkpoint.encode(SAMPLE))
    assert document["version"] == "v1"
    assert document["name"] == "web-0" and document["namespace"] == "default"
    assert document["data"] == {
        "port_mappings": [
            {"protocol": "tcp", "container_port": 80, "host_port": 8080},
            {"protocol": "udp", "container_port": 53, "host_port": 5353, "host_ip": "127.0.0.1"},
        ]
    }
    assert document["checksum"] == checkpoint.go_checksum(document["data"])  # cri-dockerd's


# Checksums that dockershim (kubelet 1.20 without HostIP, 1.21-1.23 with it) and cri-dockerd computed
# for these data: go-spew 1.1.1's "%#v" of the decoded Go value, FNV-32a, from a Go program with
# their type declarations.
GO_CHECKSUMS = [
    ({}, 815459779, 815459779, 2305795928),
    ({"host_network": True}, 996107268, 996107268, 12315789),
    ({"port_mappings": [{"protocol": "tcp", "container_port": 80, "host_port": 30080}]},
     2920668144, 2617786189, 157299536),
    ({"port_mappings": [{"protocol": "udp", "container_port": 53, "host_port": 5353, "host_ip": "127.0.0.1"},
                        {"container_port": 8080}], "host_network": False},
     3208278964, 3314847239, 1810166399),
]


@pytest.mark.parametrize(("data", "dockershim", "dockershim_without_host_ip", "cri_dockerd"), GO_CHECKSUMS)
def test_checksums_of_dockershim_and_cri_dockerd(data: dict, dockershim: int, dockershim_without_host_ip: int,
                                                 cri_dockerd: int) -> None:
    with_host_ip, without_host_ip = checkpoint.DOCKERSHIM_TYPES
    assert checkpoint.go_checksum(data, with_host_ip) == dockershim
    assert checkpoint.go_checksum(data, without_host_ip) == dockershim_without_host_ip
    assert checkpoint.go_checksum(data, checkpoint.CRI_DOCKERD_TYPES) == cri_dockerd
    for value in (dockershim, dockershim_without_host_ip, cri_dockerd, checkpoint.checksum(data)):
        document = {"version": "v1", "name": "web", "namespace": "shop", "data": data, "checksum": value}
        decoded = checkpoint.decode(json.dumps(document).encode())
        assert decoded.host_network == bool(data.get("host_network"))
        assert [mapping.protocol for mapping in decoded.port_mappings] == [
            entry.get("protocol", "tcp").upper() for entry in data.get("port_mappings", [])]
    with pytest.raises(CorruptCheckpoint):
        checkpoint.decode(json.dumps({"version": "v1", "name": "web", "namespace": "shop", "data": data,
                                      "checksum": cri_dockerd ^ 1}).encode())


def test_go_rendering_of_a_host_port() -> None:
    data = {"port_mappings": [{"protocol": "tcp", "container_port": 80, "host_port": 30080}]}
    assert checkpoint.go_rendering(data, checkpoint.CRI_DOCKERD_TYPES) == (
        "(core.CheckpointData){PortMappings:([]*config.PortMapping)[<*>{Protocol:(*config.Protocol)tcp "
        "ContainerPort:(*int32)80 HostPort:(*int32)30080 HostIP:(string)}] HostNetwork:(bool)false}")


@pytest.mark.parametrize("value", [SAMPLE, SandboxCheckpoint("p", "ns", host_network=True), SandboxCheckpoint("p", "ns"),
                                   SandboxCheckpoint("p", "ns", uid="u-1", created_at=1_765_000_000_123_456_789)])
def test_round_trip(value: SandboxCheckpoint) -> None:
    assert checkpoint.decode(checkpoint.encode(value)) == value


def test_the_uid_and_creation_time_stay_out_of_the_checksummed_data() -> None:
    """cri-dockerd checks its checksum over `data` and ignores top-level fields it does not know."""
    kept = SandboxCheckpoint("web-0", "default", SAMPLE.port_mappings, uid="u-1", created_at=42)
    document = json.loads(checkpoint.encode(kept))
    assert (document["uid"], document["created_at"]) == ("u-1", 42)
    assert document["data"] == json.loads(checkpoint.encode(SAMPLE))["data"]
    assert document["checksum"] == checkpoint.go_checksum(document["data"])
    for uid, created_at in ((7, "42"), (None, True), ("", -1), ("\ud800", 1 << 63), ("u" * 257, 10**30)):
        # not what the shim writes: left out (a time past int64 failed every ListPodSandbox)
        document.update(uid=uid, created_at=created_at)
        decoded = checkpoint.decode(json.dumps(document).encode())
        assert (decoded.uid, decoded.created_at) == ("", 0)


def test_fnv32a_known_values() -> None:
    assert checkpoint._fnv32a(b"") == 0x811C9DC5
    assert checkpoint._fnv32a(b"a") == 0xE40C292C
    assert checkpoint._fnv32a(b"foobar") == 0xBF9CF968


def _tampered(**changes: object) -> bytes:
    document = json.loads(checkpoint.encode(SAMPLE))
    document.update(changes)
    return json.dumps(document).encode()


def _signed(data: dict) -> bytes:
    """A checkpoint whose checksum matches its (malformed) data: damage the checksum cannot catch."""
    return json.dumps({"version": checkpoint.VERSION, "name": "web", "namespace": "default", "data": data,
                       "checksum": checkpoint.checksum(data)}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"[]",
        _tampered(version="v2"),
        _tampered(name=None),
        _tampered(data={"host_network": True}),  # checksum no longer matches
        _tampered(checksum=1),
        _tampered(data="x"),
        b"[" * 100_000 + b"]" * 100_000,  # nested past the JSON decoder's recursion limit
        _signed({"port_mappings": [{"container_port": 1e999}]}),  # a float JSON reads as infinity
    ],
)
def test_corrupt_files_are_refused(raw: bytes) -> None:
    with pytest.raises(CorruptCheckpoint):
        checkpoint.decode(raw)


def test_store_writes_reads_and_removes(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "sandbox"))
    store.write(SANDBOX_ID, SAMPLE)
    assert store.get(SANDBOX_ID) == SAMPLE
    assert checkpoint.decode((tmp_path / "sandbox" / SANDBOX_ID).read_bytes()) == SAMPLE
    assert os.listdir(tmp_path / "sandbox") == [SANDBOX_ID]  # no temporary file left
    store.remove(SANDBOX_ID)
    store.remove(SANDBOX_ID)  # idempotent
    assert store.get(SANDBOX_ID) is None
    assert os.listdir(tmp_path / "sandbox") == []


def test_store_survives_a_restart(tmp_path: Path) -> None:
    CheckpointStore(str(tmp_path)).write(SANDBOX_ID, SAMPLE)
    assert CheckpointStore(str(tmp_path)).all() == {SANDBOX_ID: SAMPLE}


def test_store_removes_corrupt_and_interrupted_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    CheckpointStore(str(tmp_path)).write(SANDBOX_ID, SAMPLE)
    (tmp_path / OTHER_ID).write_text('{"version": "v1"')
    (tmp_path / f".{OTHER_ID}.1234").write_text("half")
    (tmp_path / "README").write_text("not ours")
    with caplog.at_level(logging.WARNING):
        store = CheckpointStore(str(tmp_path))
    assert store.all() == {SANDBOX_ID: SAMPLE}
    assert sorted(os.listdir(tmp_path)) == sorted([SANDBOX_ID, "README"])
    assert "removing corrupt checkpoint" in caplog.text


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "", "ABC", "a" * 65, "x/y"])
def test_store_never_leaves_its_directory(tmp_path: Path, bad_id: str) -> None:
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(ValueError):
        store.write(bad_id, SAMPLE)
    store.remove(bad_id)  # ignored
    assert store.get(bad_id) is None

"""The writable-layer walker, its pace, and the background worker's cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from dockershim_py.errors import CRIError
from dockershim_py.writable_layer import Pacer, WritableLayers, walk


def make_layer(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "data").write_bytes(os.urandom(100_000))
    os.link(root / "etc" / "data", root / "etc" / "hardlink")  # counted once
    os.symlink("/usr/bin", root / "bin")  # not followed
    (root / "deep" / "er").mkdir(parents=True)
    (root / "deep" / "er" / "empty").write_bytes(b"")


def test_walk_counts_like_du(tmp_path: Path) -> None:
    make_layer(tmp_path / "upper")
    paced: list[int] = []
    used, inodes = walk(str(tmp_path / "upper"), paced.append)
    # upper, etc, data (once), bin, deep, er, empty
    assert inodes == 7
    assert used >= 100_000
    assert used < 100_000 + 7 * 64 * 1024  # the hard link did not count twice
    assert sum(paced) >= inodes  # every directory was paced


def test_walk_of_a_removed_layer_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        walk(str(tmp_path / "gone"), lambda count: None)


def test_pacer_holds_the_rate_after_a_burst() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(rate=1000, sleep=sleep, clock=lambda: now[0])
    pacer.take(1000)  # a second's worth: the burst allowance
    assert slept == []
    pacer.take(500)
    assert slept == [pytest.approx(0.5)]
    now[0] += 10  # idle: a burst is allowed again, but no more than one
    pacer.take(2000)
    assert slept[-1] == pytest.approx(1.0)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_worker_measures_in_the_background_and_forgets_removed_layers(tmp_path: Path) -> None:
    make_layer(tmp_path / "upper")
    layers = WritableLayers(period=60, rate=1_000_000, measure_by_docker=lambda container_id: 0)
    try:
        assert layers.usage("c1", str(tmp_path / "upper")) is None  # never on the request path
        wait_for(lambda: layers.usage("c1", str(tmp_path / "upper")) is not None)
        usage = layers.usage("c1", str(tmp_path / "upper"))
        assert usage.inodes == 7 and usage.used_bytes >= 100_000 and usage.timestamp_ns > 0
        layers.usage("c2", str(tmp_path / "missing"))
        wait_for(lambda: len(layers) == 1)  # c2's layer does not exist: forgotten
    finally:
        layers.close()


def test_worker_asks_docker_for_other_storage_drivers() -> None:
    asked: list[str] = []

    def measure(container_id: str) -> int:
        asked.append(container_id)
        if container_id == "gone":
            raise CRIError(grpc.StatusCode.NOT_FOUND, "no such container")
        return 12345

    layers = WritableLayers(period=60, rate=1_000_000, measure_by_docker=measure)
    try:
        layers.usage("c1", "")
        wait_for(lambda: layers.usage("c1", "") is not None)
        usage = layers.usage("c1", "")
        assert usage.used_bytes == 12345 and usage.inodes is None
        layers.usage("gone", "")
        wait_for(lambda: len(layers) == 1)
        assert asked.count("c1") == 1  # not again before the period is over
    finally:
        layers.close()


def test_worker_remeasures_after_the_period(tmp_path: Path) -> None:
    (tmp_path / "upper").mkdir()
    layers = WritableLayers(period=0.2, rate=1_000_000, measure_by_docker=lambda container_id: 0)
    try:
        layers.usage("c1", str(tmp_path / "upper"))
        wait_for(lambda: layers.usage("c1", str(tmp_path / "upper")) is not None)
        first = layers.usage("c1", str(tmp_path / "upper"))
        (tmp_path / "upper" / "new").write_bytes(b"x" * 10_000)
        wait_for(lambda: layers.usage("c1", str(tmp_path / "upper")).inodes == 2)
        assert layers.usage("c1", str(tmp_path / "upper")).timestamp_ns > first.timestamp_ns
    finally:
        layers.close()


def test_period_zero_turns_measuring_off(tmp_path: Path) -> None:
    layers = WritableLayers(period=0, rate=1000, measure_by_docker=lambda container_id: 1)
    assert layers.usage("c1", str(tmp_path)) is None
    assert len(layers) == 0
    layers.close()


def test_worker_measures_new_layers_first_then_the_longest_ago() -> None:
    measured: list[str] = []
    layers = WritableLayers(period=0.3, rate=1_000_000,
                            measure_by_docker=lambda container_id: measured.append(container_id) or 1)
    try:
        for container_id in ("a", "b", "c"):
            layers.usage(container_id, "")
        wait_for(lambda: len(measured) == 3)
        layers.usage("a", "")  # asking again does not move a layer up the queue
        layers.usage("d", "")  # a new one is measured before any is measured again
        wait_for(lambda: len(measured) == 7)
        assert measured[:3] == ["a", "b", "c"]
        assert measured[3:] == ["d", "a", "b", "c"]
    finally:
        layers.close()


def test_worker_forgets_layers_nobody_asks_about() -> None:
    now = [0.0]
    measured: list[str] = []
    layers = WritableLayers(period=60, rate=1_000_000, clock=lambda: now[0],
                            measure_by_docker=lambda container_id: measured.append(container_id) or 1)
    try:
        layers.usage("old", "")
        wait_for(lambda: measured == ["old"])
        now[0] = 700.0  # past FORGET_AFTER_SECONDS without a question
        layers.usage("new", "")
        wait_for(lambda: measured == ["old", "new"])
        wait_for(lambda: len(layers) == 1)
        assert layers.usage("old", "") is None  # asked again: measured afresh
        wait_for(lambda: measured == ["old", "new", "old"])
    finally:
        layers.close()

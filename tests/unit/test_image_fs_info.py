"""ImageFsInfo from Docker's layer store and the shim's writable-layer figures; `docker system df`
only where the layer store is not on this node."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dockershim_py.config import Config
from dockershim_py.docker_storage import LayerSizes, layer_store_directory, layers_mountpoint
from dockershim_py.image import ImageService


def layer(store: Path, chain_id: str, size: str | None) -> None:
    (store / chain_id).mkdir(parents=True)
    (store / chain_id / "diff").write_text(f"sha256:{chain_id}")
    if size is not None:
        (store / chain_id / "size").write_text(size)


class FakeDocker:
    """Docker's info for a root under a test directory; counts the df calls."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.df_calls = 0

    def info(self) -> dict[str, Any]:
        return {"DockerRootDir": str(self.root), "Driver": "overlay2"}

    def disk_usage(self) -> dict[str, Any]:
        self.df_calls += 1
        return {"LayersSize": 5000, "Containers": [{"SizeRw": 30}, {"SizeRw": 12}, {}]}


def store_of(root: Path) -> Path:
    return Path(layer_store_directory({"DockerRootDir": str(root), "Driver": "overlay2"}))


def test_layer_sizes_sum_the_layer_store_and_follow_removals(tmp_path: Path) -> None:
    store = tmp_path / "layerdb" / "sha256"
    layer(store, "a" * 64, "1000")
    layer(store, "b" * 64, "234\n")
    layer(store, "c" * 64, None)  # being registered: no size yet
    layer(store, "d" * 64, "garbled")
    sizes = LayerSizes()
    assert sizes.total(str(store)) == 1234
    (store / ("c" * 64) / "size").write_text("6")
    shutil.rmtree(store / ("a" * 64))
    assert sizes.total(str(store)) == 240


def test_a_layer_size_is_read_once(tmp_path: Path) -> None:
    """A chain ID names the layer's content: its size cannot change while it is there."""
    store = tmp_path / "sha256"
    layer(store, "a" * 64, "1000")
    sizes = LayerSizes()
    assert sizes.total(str(store)) == 1000
    (store / ("a" * 64) / "size").write_text("999999")
    assert sizes.total(str(store)) == 1000


def test_no_layer_store_here(tmp_path: Path) -> None:
    assert LayerSizes().total(str(tmp_path / "absent")) is None


def test_the_mountpoint_is_the_storage_drivers_directory(tmp_path: Path) -> None:
    info = {"DockerRootDir": str(tmp_path), "Driver": "overlay2"}
    assert layers_mountpoint(info) == str(tmp_path)  # no overlay2 directory: the root
    (tmp_path / "overlay2").mkdir()
    assert layers_mountpoint(info) == str(tmp_path / "overlay2")


def test_image_fs_info_asks_docker_nothing_when_the_layer_store_is_here(tmp_path: Path) -> None:
    (tmp_path / "overlay2").mkdir()
    layer(store_of(tmp_path), "a" * 64, "1000")
    docker = FakeDocker(tmp_path)
    writable = [77]
    images = ImageService(docker, Config(), lambda: writable[0])  # type: ignore[arg-type]
    [image_fs], [container_fs] = images.image_fs_info()
    assert (image_fs.used_bytes.value, container_fs.used_bytes.value) == (1000, 77)
    assert image_fs.fs_id.mountpoint == container_fs.fs_id.mountpoint == str(tmp_path / "overlay2")
    assert image_fs.inodes_used.value > 0 and image_fs.timestamp > 0
    # Nothing is kept: a pulled layer and a grown container show in the next answer.
    layer(store_of(tmp_path), "b" * 64, "24")
    writable[0] = 80
    [image_fs], [container_fs] = images.image_fs_info()
    assert (image_fs.used_bytes.value, container_fs.used_bytes.value) == (1024, 80)
    assert docker.df_calls == 0


def test_image_fs_info_falls_back_to_df_and_keeps_its_answer(tmp_path: Path) -> None:
    docker = FakeDocker(tmp_path)  # no layer store under this root: a remote Docker, say
    images = ImageService(docker, Config(), lambda: 77)  # type: ignore[arg-type]
    for _ in range(3):
        [image_fs], [container_fs] = images.image_fs_info()
        assert (image_fs.used_bytes.value, container_fs.used_bytes.value) == (5000, 42)
    assert docker.df_calls == 1


def test_without_writable_layer_figures_df_measures_the_containers(tmp_path: Path) -> None:
    layer(store_of(tmp_path), "a" * 64, "1000")
    docker = FakeDocker(tmp_path)
    [image_fs], [container_fs] = ImageService(docker, Config()).image_fs_info()  # type: ignore[arg-type]
    assert (image_fs.used_bytes.value, container_fs.used_bytes.value) == (5000, 42)
    assert docker.df_calls == 1


def test_a_docker_root_not_on_this_machine_gives_sizes_without_inodes(tmp_path: Path) -> None:
    docker = FakeDocker(tmp_path / "on-another-machine")  # a remote Docker's root: absent here
    [image_fs], [container_fs] = ImageService(docker, Config(), lambda: 77).image_fs_info()  # type: ignore[arg-type]
    assert (image_fs.used_bytes.value, container_fs.used_bytes.value) == (5000, 42)
    assert not image_fs.HasField("inodes_used") and not container_fs.HasField("inodes_used")

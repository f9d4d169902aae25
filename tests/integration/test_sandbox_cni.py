"""Pods on a CNI network (`--network-plugin=cni`) with Debian's containernetworking-plugins.

Each test's network is a bridge of its own on a /24 in 10.251.0.0/16 that no route of this
machine uses, with host-local IPAM in the test's directory and portmap for host ports. Traffic
goes only to the pods' addresses on that bridge and to 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import grpc
import pytest

from conftest import BUSYBOX, Shim, wait_for
from dockershim_py.api import api_pb2 as api
from docker_proxies import StartHoldingProxy
from sandbox_fixtures import Sandboxes, free_port

PLUGIN_DIR = Path("/usr/lib/cni")
pytestmark = pytest.mark.skipif(not (PLUGIN_DIR / "bridge").exists(),
                                reason="containernetworking-plugins is not installed (tests/env/setup.sh installs it)")


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:  # host-local's lock and last-reserved files
        return False


def unused_subnet() -> ipaddress.IPv4Network:
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(word, strict=False) for line in routes.splitlines() for word in line.split()[:2]
            if word[:1].isdigit()]
    for _ in range(100):
        candidate = ipaddress.ip_network(f"10.251.{secrets.randbelow(256)}.0/24")
        if not any(candidate.overlaps(route) for route in used):
            return candidate
    raise RuntimeError("no free /24 in 10.251.0.0/16")


class CNINetwork:
    """A CNI config directory, its bridge's address range and host-local's state, for one test."""

    def __init__(self, root: Path, plugins: list[dict] | None = None, one_address: bool = False) -> None:
        self.root = root
        self.conf_dir = root / "net.d"
        self.conf_dir.mkdir()
        self.cache_dir = root / "cache"
        self.ipam_dir = root / "ipam"
        self.bin_dirs = [PLUGIN_DIR]
        self.bridge = f"dspycni{secrets.token_hex(3)}"
        self.subnet = unused_subnet()
        ipam_range: dict = {"subnet": str(self.subnet)}
        if one_address:
            ipam_range.update(rangeStart=str(self.subnet[10]), rangeEnd=str(self.subnet[10]))
        self.plugins = plugins or [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "ranges": [[ipam_range]], "dataDir": str(self.ipam_dir)}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ]

    def write(self) -> "CNINetwork":
        (self.conf_dir / "10-dspy.conflist").write_text(json.dumps(
            {"cniVersion": "1.0.0", "name": "dspy-pods", "plugins": self.plugins}))
        return self

    def shim_args(self) -> list[str]:
        return ["--network-plugin", "cni", "--cni-conf-dir", str(self.conf_dir), "--cni-bin-dir", ",".join(map(str, self.bin_dirs)),
                "--cni-cache-dir", str(self.cache_dir)]

    def allocated(self) -> set[str]:
        """The addresses host-local holds."""
        directory = self.ipam_dir / "dspy-pods"
        if not directory.exists():
            return set()
        return {path.name for path in directory.iterdir() if is_address(path.name)}

    def veths(self) -> list[str]:
        shown = subprocess.run(["ip", "-o", "link", "show", "master", self.bridge], capture_output=True, text=True)
        return shown.stdout.splitlines()

    def cleanup(self) -> None:
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)


def remove_all(pods: Sandboxes) -> None:
    """Through the shim first, so the plugins take back their addresses and port rules."""
    for item in pods.listed():
        try:
            pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=item.id), timeout=60)
        except grpc.RpcError:
            pass
    pods.cleanup()


@pytest.fixture
def cni_network(tmp_path: Path) -> Iterator[CNINetwork]:
    network = CNINetwork(tmp_path)
    yield network
    network.cleanup()


@pytest.fixture
def cni_shim(start_shim, cni_network: CNINetwork) -> Shim:
    return start_shim(cni_network.write().shim_args())


@pytest.fixture
def pods(cni_shim: Shim, docker_api: docker.APIClient) -> Iterator[Sandboxes]:
    made = Sandboxes(cni_shim.runtime, docker_api)
    yield made
    remove_all(made)


@pytest.fixture
def pods_on(start_shim, docker_api: docker.APIClient) -> Iterator[Callable[..., Sandboxes]]:
    """Sandboxes through a shim of their own on `network` (its config written first unless `write`
    is false); afterwards the pods are removed and the bridge is deleted."""
    made: list[tuple[Sandboxes, CNINetwork]] = []

    def start(network: CNINetwork, write: bool = True) -> Sandboxes:
        shim = start_shim((network.write() if write else network).shim_args())
        made.append((Sandboxes(shim.runtime, docker_api), network))
        return made[-1][0]

    yield start
    for pods, network in made:
        remove_all(pods)
        network.cleanup()


def network_condition(runtime) -> api.RuntimeCondition:
    conditions = runtime.Status(api.StatusRequest(), timeout=10).status.conditions
    return next(condition for condition in conditions if condition.type == "NetworkReady")


def answer(address: str, port: int) -> str:
    try:
        with socket.create_connection((address, port), timeout=2) as connection:
            return connection.makefile().read()
    except OSError:
        return ""


def test_a_pod_gets_its_address_and_host_port_from_the_plugins(
        pods: Sandboxes, cni_network: CNINetwork, cni_shim: Shim, docker_api: docker.APIClient) -> None:
    assert network_condition(cni_shim.runtime).status
    host_port = free_port()
    sandbox_id = pods.run(pods.config(port_mappings=[
        api.PortMapping(protocol=api.TCP, container_port=8080, host_port=host_port, host_ip="127.0.0.1")]))
    host_config = docker_api.inspect_container(sandbox_id)["HostConfig"]
    assert host_config["NetworkMode"] == "none" and not host_config.get("PortBindings")

    status = pods.status(sandbox_id).status
    address = ipaddress.ip_address(status.network.ip)
    assert address in cni_network.subnet and address != next(cni_network.subnet.hosts())  # .1 is the bridge's
    assert cni_network.allocated() == {status.network.ip}
    assert len(cni_network.veths()) == 1
    assert status.network.ip in pods.output_of(sandbox_id, "cat /proc/net/fib_trie")  # the pod's namespace
    info = json.loads(pods.status(sandbox_id, verbose=True).info["info"])
    assert info["networkMode"] == "none" and info["cniResult"]["network"] == "dspy-pods"
    assert [entry["address"] for entry in info["cniResult"]["result"]["ips"]] == [f"{status.network.ip}/24"]

    pods.join(sandbox_id, "while true; do echo hello from the pod | nc -l -p 8080; done")
    assert "hello from the pod" in wait_for(lambda: answer(status.network.ip, 8080))
    assert "hello from the pod" in wait_for(lambda: answer("127.0.0.1", host_port))  # portmap's DNAT
    (stats,) = pods.runtime.ListPodSandboxStats(api.ListPodSandboxStatsRequest(
        filter=api.PodSandboxStatsFilter(id=sandbox_id)), timeout=30).stats
    assert stats.linux.network.default_interface.name == "eth0"  # the plugins' interface, counted
    assert stats.linux.network.default_interface.tx_bytes.value > 0

    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cni_network.allocated() == set()
    assert cni_network.veths() == []
    assert not list(cni_network.cache_dir.glob(f"results/*{sandbox_id}*"))
    assert answer("127.0.0.1", host_port) == ""
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)  # again: fine
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert pods.docker_containers() == []


def test_a_host_port_a_running_pod_holds_is_refused_until_that_pod_stops(
        pods: Sandboxes, cni_network: CNINetwork) -> None:
    """portmap would add a second rule behind the first, and the second pod would never get the
    traffic: the shim refuses it, as Docker does on its bridge."""
    host_port = free_port()
    mapping = api.PortMapping(protocol=api.TCP, container_port=8080, host_port=host_port)
    first = pods.run(pods.config("first", port_mappings=[mapping]))
    with pytest.raises(grpc.RpcError) as raised:
        pods.run(pods.config("second", port_mappings=[mapping]))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"host port *:{host_port}/TCP is held by pod sandbox {first[:12]}" in raised.value.details()
    assert [item.id for item in pods.listed()] == [first]  # nothing made, nothing held
    assert len(cni_network.allocated()) == 1
    # The pod's own next attempt is no clash: a crash may leave an earlier one created, port and all,
    # and the pod would never start again.
    again = pods.run(pods.config("first", attempt=1, port_mappings=[mapping]))
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=again), timeout=60)
    with ThreadPoolExecutor(4) as pool:  # side by side, still one holder
        others = [pool.submit(pods.run, pods.config(f"other-{index}", port_mappings=[
            api.PortMapping(protocol=api.TCP, container_port=80, host_port=host_port + 1)])) for index in range(4)]
        outcomes = [future.exception() for future in others]
    assert sum(outcome is None for outcome in outcomes) == 1
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=first), timeout=60)
    pods.run(pods.config("second", port_mappings=[mapping]))


def test_a_host_port_a_pod_whose_container_is_gone_holds_is_refused_until_that_pod_stops(
        pods: Sandboxes, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    """Its port rule stays first in portmap's chain until its DEL: a second pod accepted on the port
    sent the traffic to a dead address (CNI audit)."""
    host_port = free_port()
    mapping = api.PortMapping(protocol=api.TCP, container_port=8080, host_port=host_port)
    first = pods.run(pods.config("first", port_mappings=[mapping]))
    docker_api.remove_container(first, force=True)
    with pytest.raises(grpc.RpcError) as raised:
        pods.run(pods.config("second", port_mappings=[mapping]))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION and first[:12] in raised.value.details()
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=first), timeout=60)
    pods.run(pods.config("second", port_mappings=[mapping]))


def test_an_address_a_container_adds_in_the_pod_is_not_the_pods_ip(
        pods: Sandboxes, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    """A VIP a container puts on lo (an address below the pod's): the pod's IP is still the plugins' one."""
    sandbox_id = pods.run()
    pod_ip = pods.status(sandbox_id).status.network.ip
    vip = "10.250.0.9"  # below 10.251.0.0/16, where the test networks are; it is never sent to
    container = docker_api.create_container(
        BUSYBOX, ["sh", "-c", f"ip addr add {vip}/32 dev lo && sleep 3600"],
        name=f"dspy-sbx-helper-{secrets.token_hex(4)}",
        host_config=docker_api.create_host_config(network_mode=f"container:{sandbox_id}", cap_add=["NET_ADMIN"]))["Id"]
    try:
        docker_api.start(container)
        assert wait_for(lambda: vip in pods.output_of(sandbox_id, "cat /proc/net/fib_trie"), timeout=10)
        status = pods.status(sandbox_id).status
        assert (status.network.ip, list(status.network.additional_ips)) == (pod_ip, [])
    finally:
        docker_api.remove_container(container, force=True)


def test_remove_without_stop_releases_the_address(pods: Sandboxes, cni_network: CNINetwork) -> None:
    sandbox_id = pods.run()
    assert len(cni_network.allocated()) == 1
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cni_network.allocated() == set()
    assert cni_network.veths() == []
    assert pods.docker_containers() == []


def test_a_restarted_shim_still_tears_down(start_shim, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    first = start_shim(cni_network.write().shim_args())
    pods = Sandboxes(first.runtime, docker_api)
    try:
        sandbox_id = pods.run()
        assert len(cni_network.allocated()) == 1
        first.stop()
        second = start_shim(cni_network.shim_args() + ["--root-directory", str(first.root)])
        pods.runtime = second.runtime
        second.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
        assert cni_network.allocated() == set()
        second.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    finally:
        remove_all(pods)


def test_a_failed_setup_leaves_nothing(pods_on, tmp_path: Path) -> None:
    """host-local with one address: the second pod cannot have one, and leaves no trace."""
    network = CNINetwork(tmp_path, one_address=True)
    pods = pods_on(network)
    first = pods.run(pods.config("first"))
    with pytest.raises(grpc.RpcError) as raised:
        pods.run(pods.config("second"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no IP addresses available" in raised.value.details()
    assert "CNI plugin bridge ADD failed" in raised.value.details()
    assert [item.id for item in pods.listed()] == [first]
    assert [entry["Id"] for entry in pods.docker_containers()] == [first]
    assert len(network.veths()) == 1
    assert network.allocated() == {str(network.subnet[10])}


def test_a_failed_setup_whose_undoing_fails_is_undone_by_the_pods_stop(pods_on, tmp_path: Path) -> None:
    """A plugin holds something after ADD failed and its DEL failed too (an agent too busy to answer):
    the sandbox stays listed NOTREADY, and the kubelet's StopPodSandbox runs DEL again."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    held = tmp_path / "held"
    (bin_dir / "dspy-holds").write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        f"if [ \"$CNI_COMMAND\" = ADD ]; then touch {held}; echo '{{\"cniVersion\":\"1.0.0\"}}'; exit 0; fi\n"
        f"if [ \"$CNI_COMMAND\" = DEL ] && [ ! -e {tmp_path}/busy-once ]; then touch {tmp_path}/busy-once\n"
        "  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"agent busy\"}'; exit 1; fi\n"
        f"rm -f {held}\n")
    (bin_dir / "dspy-breaks").write_text(
        "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n"
        "echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no route to the agent\"}'; exit 1\n")
    for plugin in bin_dir.iterdir():
        plugin.chmod(0o755)
    network = CNINetwork(tmp_path)
    network.plugins = [*network.plugins, {"type": "dspy-holds"}, {"type": "dspy-breaks"}]
    network.bin_dirs.append(bin_dir)
    pods = pods_on(network)
    with pytest.raises(grpc.RpcError) as raised:
        pods.run()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no route to the agent" in raised.value.details() and "undoing it failed too" in raised.value.details()
    assert held.exists() and pods.docker_containers() == []
    assert network.allocated() == set()  # host-local's DEL worked; only dspy-holds still holds something
    (listed,) = pods.listed()
    assert listed.state == api.SANDBOX_NOTREADY
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=listed.id), timeout=60)
    assert not held.exists()
    assert list(network.cache_dir.glob("results/*")) == []
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=listed.id), timeout=60)
    assert pods.listed() == []


def test_a_stop_whose_network_teardown_fails_still_stops_the_pod(pods_on, tmp_path: Path) -> None:
    """The bridge's DEL has taken the address back by then: a READY pod would report it still."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dspy-busy-once").write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        "if [ \"$CNI_COMMAND\" = ADD ]; then echo '{\"cniVersion\":\"1.0.0\"}'; exit 0; fi\n"
        f"if [ \"$CNI_COMMAND\" = DEL ] && [ ! -e {tmp_path}/busy-once ]; then touch {tmp_path}/busy-once\n"
        "  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"xtables lock held\"}'; exit 1; fi\n")
    (bin_dir / "dspy-busy-once").chmod(0o755)
    network = CNINetwork(tmp_path)
    network.plugins = [*network.plugins, {"type": "dspy-busy-once"}]
    network.bin_dirs.append(bin_dir)
    pods = pods_on(network)
    sandbox_id = pods.run()
    with pytest.raises(grpc.RpcError) as raised:
        pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert "xtables lock held" in raised.value.details()
    assert [item.state for item in pods.listed()] == [api.SANDBOX_NOTREADY]
    assert not pods.docker.inspect_container(sandbox_id)["State"]["Running"]
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)  # DEL again
    assert list(network.cache_dir.glob("results/*")) == [] and network.allocated() == set()


def test_a_pod_whose_setup_failed_on_a_broken_config_is_removed_once_the_config_is_fixed(
        pods_on, tmp_path: Path) -> None:
    """Its DEL with the config its ADD had fails as that ADD did; the current config's does not."""
    network = CNINetwork(tmp_path)
    valid = json.loads(json.dumps(network.plugins))
    network.plugins[0]["ipam"]["ranges"] = [[{"subnet": f"{network.subnet.network_address}/33"}]]
    pods = pods_on(network)
    with pytest.raises(grpc.RpcError) as raised:
        pods.run()
    assert "undoing it failed too" in raised.value.details()
    (listed,) = pods.listed()
    network.plugins = valid
    network.write()
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=listed.id), timeout=60)
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=listed.id), timeout=60)
    assert pods.listed() == [] and list(network.cache_dir.glob("results/*")) == []


def test_a_running_pod_whose_plugin_delete_keeps_failing_is_removed_once_the_config_drops_it(
        pods_on, tmp_path: Path) -> None:
    """Its recorded config's DEL fails every time (a plugin broken by an upgrade, say): once the
    operator's fixed config leaves the plugin out, the pod's DEL follows it, as containerd's and
    dockershim's (which use the current config) would. Else the pod could never be removed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dspy-broken-del").write_text(
        "#!/bin/sh\ncat >/dev/null\n"
        "if [ \"$CNI_COMMAND\" = DEL ]; then echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"broken by an upgrade\"}'; exit 1; fi\n"
        "echo '{\"cniVersion\":\"1.0.0\"}'\n")
    (bin_dir / "dspy-broken-del").chmod(0o755)
    network = CNINetwork(tmp_path)
    fixed = json.loads(json.dumps(network.plugins))
    network.plugins = [*network.plugins, {"type": "dspy-broken-del"}]
    network.bin_dirs.append(bin_dir)
    pods = pods_on(network)
    sandbox_id = pods.run()
    assert len(network.allocated()) == 1
    with pytest.raises(grpc.RpcError) as raised:
        pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert "broken by an upgrade" in raised.value.details()
    network.plugins = fixed
    network.write()
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert pods.listed() == [] and list(network.cache_dir.glob("results/*")) == []
    assert network.allocated() == set() and network.veths() == []


def test_a_pod_whose_setup_a_killed_shim_cut_short_is_taken_off_the_network_and_stopped(
        start_shim, tmp_path: Path, docker_api: docker.APIClient) -> None:
    """SIGKILL mid-ADD (bridge done, a later plugin still running): the next shim DELs what was
    added and stops the pause container, which would otherwise list READY without its network."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    holding, held = tmp_path / "holding", tmp_path / "held"
    (bin_dir / "dspy-slow").write_text(
        f"#!{sys.executable}\nimport json, os, sys, time\nconfig = json.load(sys.stdin)\n"
        "if os.environ['CNI_COMMAND'] == 'ADD':\n"
        f"    open({str(holding)!r}, 'w').close()\n    deadline = time.time() + 60\n"
        f"    while os.path.exists({str(held)!r}) and time.time() < deadline:\n        time.sleep(0.1)\n"
        "    print(json.dumps(config['prevResult']))\n")
    (bin_dir / "dspy-slow").chmod(0o755)
    network = CNINetwork(tmp_path)
    network.plugins = [network.plugins[0], {"type": "dspy-slow"}]
    network.bin_dirs.append(bin_dir)
    held.touch()
    first = start_shim(network.write().shim_args())
    pods = Sandboxes(first.runtime, docker_api)
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(pods.run)
            assert wait_for(holding.exists, timeout=60)
            assert len(network.allocated()) == 1  # bridge's ADD is done
            (listed,) = pods.listed()
            first.stop(signal.SIGKILL)
            with pytest.raises(grpc.RpcError):
                running.result()
        held.unlink()  # the orphaned plugin ends
        second = start_shim(network.shim_args() + ["--root-directory", str(first.root)])
        pods.runtime = second.runtime
        assert wait_for(lambda: [item.state for item in pods.listed()] == [api.SANDBOX_NOTREADY], timeout=30)
        assert network.allocated() == set()
        assert network.veths() == []
        assert not (first.root / "cni-adds-in-progress" / listed.id).exists()
        assert f"pod sandbox {listed.id[:12]}: the shim was killed while putting it on the CNI network" in second.log()
        second.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=listed.id), timeout=60)
        second.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=listed.id), timeout=60)
        assert pods.docker_containers() == []
    finally:
        held.unlink(missing_ok=True)
        remove_all(pods)
        network.cleanup()


def test_a_pod_whose_shim_was_killed_after_its_start_and_before_its_setup_is_not_left_ready(
        start_shim, tmp_path: Path, docker_api: docker.APIClient) -> None:
    """SIGKILL after Docker started the pause container, before the CNI ADD began: the pod listed
    READY with no address after a restart, and the kubelet's retry got ALREADY_EXISTS."""
    network = CNINetwork(tmp_path).write()
    proxy = StartHoldingProxy(tmp_path / "docker.sock", hold=30, answer=True)
    first = start_shim(network.shim_args(), docker_endpoint=f"unix://{proxy.path}")
    pods = Sandboxes(first.runtime, docker_api)
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(pods.run)
            assert wait_for(lambda: proxy.starts_held == 1, timeout=60)
            (started,) = pods.docker_containers()
            assert wait_for(lambda: docker_api.inspect_container(started["Id"])["State"]["Running"], timeout=30)
            first.stop(signal.SIGKILL)
            with pytest.raises(grpc.RpcError):
                running.result()
        second = start_shim(network.shim_args() + ["--root-directory", str(first.root)])
        pods.runtime = second.runtime
        assert wait_for(lambda: [item.state for item in pods.listed()] == [api.SANDBOX_NOTREADY], timeout=30)
        assert network.allocated() == set()
        second.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=started["Id"]), timeout=60)
        assert pods.docker_containers() == []
    finally:
        proxy.close()
        remove_all(pods)
        network.cleanup()


def test_no_network_config_means_not_ready(pods_on, tmp_path: Path) -> None:
    network = CNINetwork(tmp_path)
    pods = pods_on(network, write=False)  # the directory stays empty
    condition = network_condition(pods.runtime)
    assert not condition.status and condition.reason == "NetworkPluginNotReady"
    assert "cni config uninitialized" in condition.message and str(network.conf_dir) in condition.message
    with pytest.raises(grpc.RpcError) as raised:
        pods.run()
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cni config uninitialized" in raised.value.details()
    assert pods.docker_containers() == []
    host_network = pods.config("host", linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
        namespace_options=api.NamespaceOption(network=api.NODE))))
    pods.run(host_network)  # a pod on the node's network needs no plugin
    network.write()  # the config appears: ready without a restart
    assert wait_for(lambda: network_condition(pods.runtime).status, timeout=5)
    sandbox_id = pods.run(pods.config("later"))
    assert ipaddress.ip_address(pods.status(sandbox_id).status.network.ip) in network.subnet
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert network.allocated() == set()


def test_a_missing_plugin_is_named(pods_on, tmp_path: Path) -> None:
    pods = pods_on(CNINetwork(tmp_path, plugins=[{"type": "no-such-plugin"}]))
    condition = network_condition(pods.runtime)
    assert not condition.status and "no-such-plugin" in condition.message and str(PLUGIN_DIR) in condition.message
    with pytest.raises(grpc.RpcError) as raised:
        pods.run()
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no-such-plugin" in raised.value.details()
    assert pods.docker_containers() == []


def test_a_pod_whose_pause_container_died_gives_back_its_address(
        pods: Sandboxes, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    sandbox_id = pods.run()
    docker_api.kill(sandbox_id)  # its network namespace goes with it; host-local still holds the address
    assert wait_for(lambda: pods.status(sandbox_id).status.state == api.SANDBOX_NOTREADY)
    assert len(cni_network.allocated()) == 1
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cni_network.allocated() == set()


def test_a_pod_restarted_behind_the_shims_back_shows_no_address(
        pods: Sandboxes, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    """`docker restart` of a pause container gives it a new, empty network namespace: the status
    kept the ADD's address, so the kubelet never made the pod again."""
    sandbox_id = pods.run()
    assert pods.status(sandbox_id).status.network.ip
    docker_api.restart(sandbox_id, timeout=1)
    assert wait_for(lambda: docker_api.inspect_container(sandbox_id)["State"]["Running"])
    status = pods.status(sandbox_id).status
    assert (status.state, status.network.ip) == (api.SANDBOX_READY, "")  # the kubelet's cue to make it again
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cni_network.allocated() == set()  # the old address is released by the stop


def test_a_running_pod_without_a_cache_record_is_torn_down_too(
        pods: Sandboxes, cni_network: CNINetwork) -> None:
    """As a node's pods set up by a runtime that kept no libcni cache: DEL with the current config."""
    sandbox_id = pods.run()
    for record in cni_network.cache_dir.glob(f"results/*-{sandbox_id}-eth0"):
        record.unlink()
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cni_network.allocated() == set()
    assert cni_network.veths() == []


def host_veth(network: CNINetwork) -> str:
    (line,) = network.veths()
    return line.split(":")[1].strip().split("@")[0]


def test_bandwidth_annotations_shape_the_pod(pods_on, tmp_path: Path) -> None:
    network = CNINetwork(tmp_path)
    network.plugins.append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    pods = pods_on(network)
    with pytest.raises(grpc.RpcError) as raised:
        pods.run(pods.config("bad", annotations={"kubernetes.io/ingress-bandwidth": "fast"}))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "kubernetes.io/ingress-bandwidth" in raised.value.details()
    assert pods.docker_containers() == [] and network.allocated() == set()

    pods.run(pods.config("shaped", annotations={"kubernetes.io/ingress-bandwidth": "1M"}))
    qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", host_veth(network)], capture_output=True, text=True).stdout
    assert "tbf" in qdiscs and "rate 1Mbit" in qdiscs


def test_the_pod_cidr_reaches_ipam(pods_on, tmp_path: Path) -> None:
    """host-local takes its range from the ipRanges capability: the CIDR of UpdateRuntimeConfig."""
    network = CNINetwork(tmp_path)
    network.plugins[0]["capabilities"] = {"ipRanges": True}
    network.plugins[0]["ipam"].pop("ranges")
    pods = pods_on(network)
    pods.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(runtime_config=api.RuntimeConfig(
        network_config=api.NetworkConfig(pod_cidr=str(network.subnet)))), timeout=10)
    sandbox_id = pods.run()
    assert ipaddress.ip_address(pods.status(sandbox_id).status.network.ip) in network.subnet


def test_the_pod_cidr_outlives_a_restart(start_shim, tmp_path: Path, docker_api: docker.APIClient) -> None:
    """The kubelet sets it only when it changes: a restarted shim must not forget it."""
    network = CNINetwork(tmp_path)
    network.plugins[0]["capabilities"] = {"ipRanges": True}
    network.plugins[0]["ipam"].pop("ranges")
    first = start_shim(network.write().shim_args())
    first.runtime.UpdateRuntimeConfig(api.UpdateRuntimeConfigRequest(runtime_config=api.RuntimeConfig(
        network_config=api.NetworkConfig(pod_cidr=str(network.subnet)))), timeout=10)
    first.stop()
    second = start_shim(network.shim_args() + ["--root-directory", str(first.root)])
    pods = Sandboxes(second.runtime, docker_api)
    try:
        sandbox_id = pods.run()
        assert ipaddress.ip_address(pods.status(sandbox_id).status.network.ip) in network.subnet
    finally:
        remove_all(pods)
        network.cleanup()


def test_a_replaced_attempt_gives_back_its_address(
        pods: Sandboxes, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    """The pause container died and the kubelet runs the same attempt again: its name is taken over."""
    first = pods.run(pods.config("again"))
    docker_api.kill(first)
    second = pods.run(pods.config("again"))
    assert second != first
    assert cni_network.allocated() == {pods.status(second).status.network.ip}


def test_a_shim_without_cni_warns_of_pods_on_a_cni_network(
        start_shim, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    first = start_shim(cni_network.write().shim_args())
    pods = Sandboxes(first.runtime, docker_api)
    try:
        sandbox_id = pods.run()
        first.stop()
        second = start_shim(["--root-directory", str(first.root)])
        pods.runtime = second.runtime
        assert wait_for(lambda: "restart with --network-plugin=cni" in second.log(), timeout=10)
        assert sandbox_id[:12] in second.log()
        second.stop()
        third = start_shim(cni_network.shim_args() + ["--root-directory", str(first.root)])
        pods.runtime = third.runtime
    finally:
        remove_all(pods)
    assert cni_network.allocated() == set()
    assert "--network-plugin is not cni" not in third.log()


def unused_ipv6_subnet() -> ipaddress.IPv6Network:
    routes = subprocess.run(["ip", "-6", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(word, strict=False) for line in routes.splitlines() for word in line.split()[:2]
            if ":" in word and word[:1] in "0123456789abcdef"]
    for _ in range(100):
        candidate = ipaddress.ip_network(f"fd51:{secrets.randbelow(65536):x}::/64")
        if not any(candidate.overlaps(route) for route in used if route.version == 6 and route.prefixlen > 0):
            return candidate
    raise RuntimeError("no free /64 in fd51::/16")


def test_a_dual_stack_pod_reports_both_addresses(pods_on, tmp_path: Path) -> None:
    network = CNINetwork(tmp_path)
    ipv6 = unused_ipv6_subnet()
    network.plugins[0]["ipam"]["ranges"].append([{"subnet": str(ipv6)}])
    pods = pods_on(network)
    sandbox_id = pods.run()
    status = pods.status(sandbox_id).status
    assert ipaddress.ip_address(status.network.ip) in network.subnet  # IPv4 first: the kubelet's pod IP
    assert [ipaddress.ip_address(extra.ip) in ipv6 for extra in status.network.additional_ips] == [True]
    assert len(network.allocated()) == 2
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert network.allocated() == set()


def test_a_pod_removed_behind_the_shims_back_gives_back_its_address(
        pods: Sandboxes, cni_network: CNINetwork, docker_api: docker.APIClient) -> None:
    """Its checkpoint lists it as NOTREADY, so the kubelet stops it: that stop runs DEL from the cache."""
    sandbox_id = pods.run()
    docker_api.remove_container(sandbox_id, force=True)
    assert wait_for(lambda: [(item.id, item.state) for item in pods.listed()] == [(sandbox_id, api.SANDBOX_NOTREADY)])
    assert len(cni_network.allocated()) == 1
    pods.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert cni_network.allocated() == set()
    pods.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60)
    assert pods.listed() == []


def test_pods_made_and_removed_side_by_side(pods: Sandboxes, cni_network: CNINetwork) -> None:
    with ThreadPoolExecutor(10) as pool:
        made = list(pool.map(lambda index: pods.run(pods.config(f"p{index}")), range(10)))
        addresses = {pods.status(sandbox_id).status.network.ip for sandbox_id in made}
        assert len(addresses) == 10 and cni_network.allocated() == addresses
        assert len(cni_network.veths()) == 10
        list(pool.map(lambda sandbox_id: pods.runtime.RemovePodSandbox(
            api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60), made))
    assert cni_network.allocated() == set() and cni_network.veths() == []
    assert not list(cni_network.cache_dir.glob("results/*"))


def test_a_pod_stopped_and_removed_at_once_is_torn_down_once_without_an_error(
        pods: Sandboxes, cni_network: CNINetwork) -> None:
    """Two DELs of one pod side by side: one answered the plugin's 'no such device' (CNI audit)."""
    made = [pods.run(pods.config(f"twice{index}")) for index in range(4)]
    calls = [(pods.runtime.StopPodSandbox, api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)) for sandbox_id in made]
    calls += [(pods.runtime.RemovePodSandbox, api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
              for sandbox_id in made]
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda call: _code_of(call[0], call[1]), calls))
    assert outcomes == [grpc.StatusCode.OK] * 8, outcomes
    assert cni_network.allocated() == set() and cni_network.veths() == []


def _code_of(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=60)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK

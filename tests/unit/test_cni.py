"""CNI's pure parts: network config files, plugin requests and results, the cache record."""

from __future__ import annotations

import base64
import json
import time

import pytest

from dockershim_py import cni
from dockershim_py.checkpoint import PortMapping

POD = cni.PodIdentity(namespace="default", name="web", uid="uid-1", sandbox_id="a" * 64)


def conflist(**fields: object) -> bytes:
    document = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}
    document.update(fields)
    return json.dumps(document).encode()


def test_a_conflist_keeps_its_plugins_in_order() -> None:
    network = cni.parse_network_config("/etc/cni/net.d/10-pod.conflist", conflist())
    assert (network.name, network.cni_version, network.plugin_types) == ("podnet", "1.0.0", ["bridge", "portmap"])
    assert network.raw == conflist()


def test_a_single_plugin_conf_is_a_list_of_one() -> None:
    raw = json.dumps({"cniVersion": "0.4.0", "name": "one", "type": "ptp", "ipam": {"type": "host-local"}}).encode()
    network = cni.parse_network_config("10-one.conf", raw)
    assert (network.name, network.cni_version, network.plugin_types) == ("one", "0.4.0", ["ptp"])
    assert "name" not in network.plugins[0] and "cniVersion" not in network.plugins[0]


@pytest.mark.parametrize("raw, words", [
    (b"{not json", "not JSON"),
    (b"[]", "JSON object"),
    (conflist(plugins=[]), "non-empty"),
    (conflist(name=""), "name"),
    (conflist(name="../x"), "name"),
    (conflist(cniVersion=1), "cniVersion"),
    (conflist(plugins=[{"ipam": {}}]), "type"),
    (conflist(plugins=[{"type": "../../bin/sh"}]), "type"),
    (conflist(plugins=["bridge"]), "plugin 0"),
])
def test_bad_configs_say_what_is_wrong(raw: bytes, words: str) -> None:
    with pytest.raises(cni.NetworkConfigError, match=words) as raised:
        cni.parse_network_config("/etc/cni/net.d/bad.conflist", raw)
    assert "/etc/cni/net.d/bad.conflist" in str(raised.value)


def test_config_files_in_libcni_order() -> None:
    names = ["99-last.conflist", "10-first.conf", "README", "20-mid.json", ".10-hidden.conf", "05-old.conf.bak"]
    assert cni.config_files(names) == ["10-first.conf", "20-mid.json", "99-last.conflist"]


def test_cni_args_name_the_pod() -> None:
    assert POD.cni_args() == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                              f"K8S_POD_INFRA_CONTAINER_ID={'a' * 64};K8S_POD_UID=uid-1")


def test_only_declared_capabilities_reach_a_plugin() -> None:
    network = cni.parse_network_config("x.conflist", conflist())
    capabilities = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]}
    bridge = json.loads(cni.plugin_stdin(network, network.plugins[0], capabilities, None))
    portmap = json.loads(cni.plugin_stdin(network, network.plugins[1], capabilities, {"cniVersion": "1.0.0"}))
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge
    assert (bridge["name"], bridge["cniVersion"], bridge["type"]) == ("podnet", "1.0.0", "bridge")
    assert portmap["runtimeConfig"] == capabilities
    assert portmap["prevResult"] == {"cniVersion": "1.0.0"}


def test_port_mappings_without_a_host_port_are_not_mapped() -> None:
    mappings = [PortMapping("TCP", 80, 8080, "127.0.0.1"), PortMapping("UDP", 53, 0, "")]
    assert cni.port_mapping_capability(mappings) == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]


def test_the_environment_of_a_plugin() -> None:
    """The shim's own, as libcni passes it, with the CNI variables of this call in place of any it had."""
    inherited = {"PATH": "/usr/bin", "HTTPS_PROXY": "http://127.0.0.1:3128", "CNI_NETNS": "/stale", "CNI_ARGS": "x"}
    environment = cni.plugin_environment("DEL", POD, "", ["/opt/cni/bin", "/usr/lib/cni"], inherited)
    assert environment == {
        "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "a" * 64, "CNI_NETNS": "", "CNI_IFNAME": "eth0",
        "CNI_ARGS": POD.cni_args(), "CNI_PATH": "/opt/cni/bin:/usr/lib/cni", "PATH": "/usr/bin",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
    }
    assert cni.plugin_environment("ADD", POD, "/n", ["/b"], {})["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"


def test_a_failure_says_what_the_plugin_said() -> None:
    error = json.dumps({"code": 999, "msg": "no IP addresses available in range set", "details": "10.1.0.0/30"})
    assert cni.plugin_failure("bridge", "ADD", 1, error.encode(), b"") == (
        "CNI plugin bridge ADD failed: no IP addresses available in range set: 10.1.0.0/30 (CNI error code 999)")
    assert cni.plugin_failure("bridge", "ADD", 2, b"", b"panic: oops\n") == "CNI plugin bridge ADD failed: panic: oops"
    assert cni.plugin_failure("bridge", "DEL", 3, b"", b"") == "CNI plugin bridge DEL failed: exit status 3"


def test_result_addresses_of_every_version() -> None:
    assert cni.result_ips({"ips": [{"address": "10.1.0.5/24", "interface": 2},
                                   {"address": "fd00::5/64"}]}) == ["10.1.0.5", "fd00::5"]
    assert cni.result_ips({"ip4": {"ip": "10.1.0.6/24"}}) == ["10.1.0.6"]
    # IPv4 first, as the kubelet takes the first for the pod IP, whatever the plugin's order.
    assert cni.result_ips({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24"}]}) == ["10.1.0.5", "fd00::5"]
    assert cni.result_ips(None) == [] and cni.result_ips({"dns": {}}) == []
    assert cni.result_ips({"ips": {"address": "10.1.0.5/24"}}) == []  # a plugin's malformed result: no addresses
    assert cni.result_ips({"ips": ["10.1.0.5", None, {"address": 5}]}) == [] and cni.result_ips([]) == []


def test_the_cache_record_gives_back_the_config_and_result() -> None:
    network = cni.parse_network_config("x.conflist", conflist())
    result = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}
    entry = cni.cache_entry(network, POD, {"portMappings": []}, result)
    assert entry["kind"] == "cniCacheV1" and entry["networkName"] == "podnet" and entry["ifName"] == "eth0"
    assert base64.b64decode(entry["config"]) == conflist()
    assert ["K8S_POD_NAME", "web"] in entry["cniArgs"]
    cached, cached_result = cni.cached_network(json.loads(json.dumps(entry)), "record")
    assert cached is not None and cached.plugin_types == ["bridge", "portmap"] and cached_result == result


def test_a_cache_record_without_a_config_still_gives_its_result() -> None:
    cached, result = cni.cached_network({"kind": "cniCacheV1", "config": "!!", "result": {"ips": []}}, "record")
    assert cached is None and result == {"ips": []}


def test_the_network_config_follows_the_directory(tmp_path) -> None:
    network = cni.CNINetwork(str(tmp_path), [str(tmp_path / "bin")], str(tmp_path / "cache"), 5)
    assert not network.readiness().ready
    assert "cni config uninitialized" in network.readiness().message
    (tmp_path / "20-broken.conflist").write_bytes(b"{")
    assert "not JSON" in network.readiness().message
    (tmp_path / "30-pod.conflist").write_bytes(conflist())
    readiness = network.readiness()
    assert not readiness.ready and "bridge, portmap" in readiness.message and str(tmp_path / "bin") in readiness.message
    (tmp_path / "bin").mkdir()
    for name in ("bridge", "portmap"):
        (tmp_path / "bin" / name).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / name).chmod(0o755)
    assert network.readiness().ready
    assert network.config().source == str(tmp_path / "30-pod.conflist")


def test_plugins_run_in_order_and_delete_in_reverse(tmp_path) -> None:
    """Fake plugins (shell scripts) that log their calls: ADD feeds each the one before's result."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, answer in (("first", '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.2/24"}]}'),
                         ("second", '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.3/24"}]}')):
        (bin_dir / name).write_text(
            f'#!/bin/sh\necho "{name} $CNI_COMMAND $CNI_NETNS" >> {calls}\n'
            f"cat > {tmp_path}/stdin-{name}-$CNI_COMMAND\necho '{answer}'\n")
        (bin_dir / name).chmod(0o755)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "10.conflist").write_bytes(json.dumps(
        {"cniVersion": "1.0.0", "name": "fake", "plugins": [{"type": "first"}, {"type": "second"}]}).encode())
    network = cni.CNINetwork(str(conf), [str(bin_dir)], str(tmp_path / "cache"), 5)
    assert network.add(POD, "/proc/1/ns/net", {}) == ["10.9.0.3"]  # the last plugin's result is the result
    assert network.has_cache(POD.sandbox_id)
    (conf / "10.conflist").unlink()  # DEL runs with the config ADD used, from the cache
    network.delete(POD, "", {})
    assert not network.has_cache(POD.sandbox_id)
    lines = [line.split() for line in calls.read_text().splitlines()]
    assert lines == [["first", "ADD", "/proc/1/ns/net"], ["second", "ADD", "/proc/1/ns/net"],
                     ["second", "DEL"], ["first", "DEL"]]  # DEL with no namespace left
    assert "prevResult" not in json.loads((tmp_path / "stdin-first-ADD").read_text())
    assert json.loads((tmp_path / "stdin-second-ADD").read_text())["prevResult"]["ips"] == [{"address": "10.9.0.2/24"}]
    assert json.loads((tmp_path / "stdin-first-DEL").read_text())["prevResult"]["ips"] == [{"address": "10.9.0.3/24"}]


def test_a_failed_add_is_taken_back(tmp_path) -> None:
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "good").write_text(f"#!/bin/sh\necho \"good $CNI_COMMAND\" >> {calls}\necho '{{}}'\n")
    (bin_dir / "bad").write_text(
        f"#!/bin/sh\necho \"bad $CNI_COMMAND\" >> {calls}\n"
        "[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"code\":11,\"msg\":\"try again\"}'; exit 1\n")
    for name in ("good", "bad"):
        (bin_dir / name).chmod(0o755)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "10.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "fake", "plugins": [{"type": "good"}, {"type": "bad"}]}))
    network = cni.CNINetwork(str(conf), [str(bin_dir)], str(tmp_path / "cache"), 5)
    with pytest.raises(cni.PluginError, match="CNI plugin bad ADD failed: try again"):
        network.add(POD, "/proc/1/ns/net", {})
    assert calls.read_text().split("\n")[:4] == ["good ADD", "bad ADD", "bad DEL", "good DEL"]
    assert not network.has_cache(POD.sandbox_id)


def test_a_failed_add_whose_undoing_fails_keeps_its_record_for_a_later_del(tmp_path) -> None:
    """An address a plugin holds after a failed DEL is released by the next DEL, not held for good."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "holds").write_text(
        f"#!/bin/sh\necho \"holds $CNI_COMMAND\" >> {calls}\n"
        f"[ \"$CNI_COMMAND\" = ADD ] && {{ echo '{{\"ips\":[{{\"address\":\"10.9.0.7/24\"}}]}}'; exit 0; }}\n"
        f"[ -e {tmp_path}/failed-once ] && exit 0\ntouch {tmp_path}/failed-once\n"
        "echo '{\"code\":11,\"msg\":\"agent busy\"}'; exit 1\n")
    (bin_dir / "bad").write_text(
        "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\necho '{\"code\":11,\"msg\":\"try again\"}'; exit 1\n")
    for name in ("holds", "bad"):
        (bin_dir / name).chmod(0o755)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "10.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "fake", "plugins": [{"type": "holds"}, {"type": "bad"}]}))
    network = cni.CNINetwork(str(conf), [str(bin_dir)], str(tmp_path / "cache"), 5)
    with pytest.raises(cni.PluginError, match=r"try again \(CNI error code 11\); undoing it failed too") as raised:
        network.add(POD, "/proc/1/ns/net", {"portMappings": [{"hostPort": 8080}]})
    assert "StopPodSandbox or RemovePodSandbox" in raised.value.message
    assert network.has_cache(POD.sandbox_id)
    kept = network.cached_result(POD.sandbox_id)
    assert kept == {"network": "fake", "result": {"ips": [{"address": "10.9.0.7/24"}]}, "namespaceHolder": ""}
    network.delete(POD, "", {})  # the sandbox's StopPodSandbox: DEL again, with ADD's capabilities
    assert not network.has_cache(POD.sandbox_id)
    assert calls.read_text().split() == ["holds", "ADD", "holds", "DEL", "holds", "DEL"]


def test_a_plugin_that_hangs_times_out(tmp_path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "slow").write_text("#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\nexec sleep 30\n")
    (bin_dir / "slow").chmod(0o755)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "10.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "slow"}]}))
    network = cni.CNINetwork(str(conf), [str(bin_dir)], str(tmp_path / "cache"), 0.5)
    with pytest.raises(cni.PluginError, match="did not finish in 0.5 s") as raised:
        network.add(POD, "/proc/1/ns/net", {})
    assert raised.value.timed_out


@pytest.mark.parametrize("text, value", [
    ("10M", 10_000_000), ("1.5Gi", 1_610_612_736), ("500k", 500_000), ("1e6", 1_000_000), ("2048", 2048),
    ("100Ki", 102_400), ("1500m", 2), ("+3k", 3000), (".5M", 500_000),
])
def test_quantities(text: str, value: int) -> None:
    assert cni.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "10 M", "M", "10Mb", "-5M", "1e", "0x10", "1e999999999", "1e-999999999",
                                  "1" * 5000])
def test_not_quantities(text: str) -> None:
    """Refused at once: 1e999999999 took the shim's CPU for minutes, 5,000 digits Python's int limit."""
    started = time.monotonic()
    with pytest.raises(ValueError) as refused:
        cni.parse_quantity(text)
    assert time.monotonic() - started < 0.1 and len(str(refused.value)) < 200


def test_bandwidth_annotations_become_the_bandwidth_capability() -> None:
    assert cni.bandwidth_capability({}) is None
    assert cni.bandwidth_capability({"kubernetes.io/ingress-bandwidth": "10M"}) == {
        "ingressRate": 10_000_000, "ingressBurst": 2**31 - 1}
    both = cni.bandwidth_capability({"kubernetes.io/ingress-bandwidth": "1M", "kubernetes.io/egress-bandwidth": "2M"})
    assert (both["ingressRate"], both["egressRate"], both["egressBurst"]) == (1_000_000, 2_000_000, 2**31 - 1)
    for bad, words in (("fast", "not a quantity"), ("10", "outside"), ("2P", "outside")):
        with pytest.raises(ValueError, match=words) as raised:
            cni.bandwidth_capability({"kubernetes.io/egress-bandwidth": bad})
        assert "kubernetes.io/egress-bandwidth" in str(raised.value)


def test_runtime_capabilities_offer_what_the_pod_has() -> None:
    assert cni.runtime_capabilities([], {}, "", None) == {}
    offered = cni.runtime_capabilities(
        [PortMapping("TCP", 80, 8080, "")], {"kubernetes.io/ingress-bandwidth": "1M"}, "10.244.1.0/24,fd00:1::/64",
        {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]})
    assert offered["portMappings"] == [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}]
    assert offered["bandwidth"]["ingressRate"] == 1_000_000
    assert offered["ipRanges"] == [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:1::/64"}]]
    assert offered["dns"]["servers"] == ["10.96.0.10"]

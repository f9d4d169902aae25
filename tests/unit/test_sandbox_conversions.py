"""Pod sandbox conversions: request to Docker create body, Docker list/inspect to CRI, pod networking;
and how a pod's containers are stopped side by side."""

from __future__ import annotations

import json
import threading
from concurrent import futures

import grpc
import pytest

from dockershim_py import network, sandbox, sandbox_convert
from dockershim_py.api import api_pb2 as api
from dockershim_py.checkpoint import PortMapping, SandboxCheckpoint
from dockershim_py.errors import CRIError

SANDBOX_ID = "c" * 64


def _config(**fields) -> api.PodSandboxConfig:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="web-0", namespace="shop", uid="uid-1", attempt=2),
        hostname="web-0",
        labels={"app": "web"},
        annotations={"seen": "now"},
    )
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(config, key).extend(value)
        else:
            getattr(config, key).CopyFrom(value)
    return config


def _body(config: api.PodSandboxConfig, **overrides) -> dict:
    arguments = dict(image="pause:3.10", runtime_handler="", docker_runtime_name="", cgroup_driver="cgroupfs",
                     oom_score_adj=-998)
    arguments.update(overrides)
    return sandbox_convert.sandbox_create_body(config, **arguments)


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(CRIError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value.message


# --- RunPodSandbox --------------------------------------------------------------------------------


def test_create_body_is_dockershims_pause_container() -> None:
    body = _body(_config())
    assert body == {
        "Image": "pause:3.10",
        "Hostname": "web-0",
        "Labels": {
            "app": "web",
            "annotation.seen": "now",
            "io.kubernetes.docker.type": "podsandbox",
            "io.kubernetes.container.name": "POD",
            "io.kubernetes.dockershim-py.runtime-handler": "",
            "io.kubernetes.sandbox.id": "",
            "io.kubernetes.container.logpath": "",
            "io.kubernetes.dockershim-py.user-specified-image": "",
            "io.kubernetes.dockershim-py.pid-namespace": "POD",  # the CRI's default mode
        },
        "HostConfig": {
            "Privileged": False,
            "ReadonlyRootfs": False,
            "SecurityOpt": ["no-new-privileges"],
            "NetworkMode": "default",
            "IpcMode": "shareable",
            "CpuShares": 2,
            "OomScoreAdj": -998,
            "ShmSize": 64 * 1024 * 1024,
        },
    }


def test_create_body_ports_cgroup_runtime() -> None:
    config = _config(
        port_mappings=[
            api.PortMapping(protocol=api.TCP, container_port=80, host_port=8080),
            api.PortMapping(protocol=api.TCP, container_port=80, host_port=8081, host_ip="127.0.0.1"),
            api.PortMapping(protocol=api.UDP, container_port=53, host_port=5353),
            api.PortMapping(protocol=api.SCTP, container_port=9, host_port=9999),
            api.PortMapping(protocol=api.TCP, container_port=443),  # no host port: not published
        ],
        linux=api.LinuxPodSandboxConfig(cgroup_parent="/kubepods/besteffort/poduid-1"),
    )
    body = _body(config, cgroup_driver="systemd", runtime_handler="kata", docker_runtime_name="kata")
    assert body["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "9/sctp": {}}
    assert body["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "8081"}],
        "53/udp": [{"HostIp": "", "HostPort": "5353"}],
        "9/sctp": [{"HostIp": "", "HostPort": "9999"}],
    }
    assert body["HostConfig"]["CgroupParent"] == "kubepods-besteffort-poduid_1.slice"
    assert body["HostConfig"]["Runtime"] == "kata"
    assert body["Labels"]["io.kubernetes.dockershim-py.runtime-handler"] == "kata"


def test_a_cni_pod_has_no_docker_network_and_no_docker_ports() -> None:
    config = _config(port_mappings=[api.PortMapping(container_port=80, host_port=8080, host_ip="127.0.0.1")])
    body = _body(config, pod_network_mode="none")
    assert body["HostConfig"]["NetworkMode"] == "none"
    assert "PortBindings" not in body["HostConfig"] and "ExposedPorts" not in body
    assert sandbox_convert.cni_capabilities(config, "10.244.0.0/24") == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}],
        "ipRanges": [[{"subnet": "10.244.0.0/24"}]],
    }


def test_a_cni_pod_offers_its_dns_and_refuses_bad_bandwidth() -> None:
    config = _config(dns_config=api.DNSConfig(servers=["10.96.0.10"], options=["ndots:5"]))
    assert sandbox_convert.cni_capabilities(config, "")["dns"] == {"servers": ["10.96.0.10"], "searches": [],
                                                            "options": ["ndots:5"]}
    config.annotations["kubernetes.io/egress-bandwidth"] = "1T"
    assert sandbox_convert.cni_capabilities(config, "")["bandwidth"]["egressRate"] == 10**12
    config.annotations["kubernetes.io/egress-bandwidth"] = "lots"
    assert "kubernetes.io/egress-bandwidth" in _refused(sandbox_convert.cni_capabilities, config, "")


def test_host_network_publishes_no_ports() -> None:
    config = _config(
        port_mappings=[api.PortMapping(container_port=80, host_port=80)],
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(namespace_options=api.NamespaceOption(network=api.NODE))
        ),
    )
    body = _body(config)
    assert body["HostConfig"]["NetworkMode"] == "host"
    assert "PortBindings" not in body["HostConfig"] and "ExposedPorts" not in body
    assert sandbox_convert.checkpoint_of(config, True) == SandboxCheckpoint(
        "web-0", "shop", (PortMapping("TCP", 80, 80),), host_network=True, uid="uid-1"
    )


@pytest.mark.parametrize(
    "mapping, words",
    [
        (api.PortMapping(container_port=0, host_port=80), "container_port"),
        (api.PortMapping(container_port=70000, host_port=80), "container_port"),
        (api.PortMapping(container_port=80, host_port=-1), "host_port"),
        (api.PortMapping(container_port=80, host_port=80, host_ip="localhost"), "host_ip"),
        (api.PortMapping(protocol=7, container_port=80, host_port=80), "protocol"),
    ],
)
def test_bad_port_mappings_are_refused(mapping: api.PortMapping, words: str) -> None:
    assert words in _refused(_body, _config(port_mappings=[mapping]))


def test_a_host_port_mapped_twice_in_a_pod_is_refused() -> None:
    """Docker took both and failed the start (UNKNOWN), after making the pause container."""
    twice = [api.PortMapping(container_port=80, host_port=8080, host_ip="127.0.0.1"),
             api.PortMapping(container_port=81, host_port=8080)]
    assert "mapped twice" in _refused(_body, _config(port_mappings=twice))
    apart = [api.PortMapping(container_port=80, host_port=8080, host_ip="127.0.0.1"),
             api.PortMapping(container_port=81, host_port=8080, host_ip="127.0.0.2"),
             api.PortMapping(protocol=api.UDP, container_port=81, host_port=8080),
             api.PortMapping(container_port=82, host_port=0), api.PortMapping(container_port=83, host_port=0)]
    assert _body(_config(port_mappings=apart))
    # What the kubelet sends for a dual-stack hostPort: one mapping on each family's wildcard.
    dual_stack = [api.PortMapping(container_port=80, host_port=8080, host_ip="0.0.0.0"),
                  api.PortMapping(container_port=80, host_port=8080, host_ip="::")]
    assert _body(_config(port_mappings=dual_stack))
    assert "mapped twice" in _refused(_body, _config(port_mappings=[
        api.PortMapping(container_port=80, host_port=8080, host_ip="::"),
        api.PortMapping(container_port=81, host_port=8080, host_ip="fd00::1")]))


def test_runtime_handlers() -> None:
    assert sandbox_convert.docker_runtime("", ["runc"]) == ""
    assert sandbox_convert.docker_runtime("docker", ["runc"]) == ""
    assert sandbox_convert.docker_runtime("runc", ["runc", "kata"]) == "runc"
    message = _refused(sandbox_convert.docker_runtime, "gvisor", ["runc", "io.containerd.runc.v2"])
    assert "'gvisor'" in message and "'io.containerd.runc.v2', 'runc'" in message


# --- DNS ------------------------------------------------------------------------------------------


def test_resolv_conf() -> None:
    dns = api.DNSConfig(servers=["10.96.0.10", "fd00::10"], searches=["ns.svc.cluster.local", "svc.cluster.local"],
                        options=["ndots:5", "edns0"])
    assert network.resolv_conf(dns) == (
        "nameserver 10.96.0.10\nnameserver fd00::10\nsearch ns.svc.cluster.local svc.cluster.local\n"
        "options ndots:5 edns0\n"
    )
    assert network.resolv_conf(api.DNSConfig()) == ""


@pytest.mark.parametrize(
    "dns",
    [
        api.DNSConfig(servers=["dns.example"]),
        api.DNSConfig(searches=["a\nnameserver 6.6.6.6"]),
        api.DNSConfig(options=["ndots:5 rotate"]),
        api.DNSConfig(searches=[""]),
    ],
)
def test_dns_entries_that_could_add_lines_are_refused(dns: api.DNSConfig) -> None:
    _refused(network.resolv_conf, dns)


# --- pod IPs --------------------------------------------------------------------------------------

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     +-- 172.17.0.0/16 2 0 2
        +-- 172.17.0.0/30 2 0 2
           |-- 172.17.0.0
              /16 link UNICAST
           |-- 172.17.0.2
              /32 host LOCAL
        |-- 172.17.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 172.17.0.2
              /32 host LOCAL
"""
IF_INET6 = """00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000004242fffeac1102 02 40 20 80     eth0
fd000000000000000000000000000005 02 40 00 80     eth0
"""


def test_ips_from_proc_files() -> None:
    assert network.ipv4_from_fib_trie(FIB_TRIE) == ["172.17.0.2"]
    assert network.ipv6_from_if_inet6(IF_INET6) == ["fd00::5"]
    assert network.ipv4_from_fib_trie("") == [] and network.ipv6_from_if_inet6("garbage line\n") == []


def test_ips_from_network_settings_every_family_ipv4_first() -> None:
    settings = {
        "IPAddress": "172.17.0.3",
        "GlobalIPv6Address": "fd00::3",
        "Networks": {"bridge": {"IPAddress": "172.17.0.3", "GlobalIPv6Address": "fd00::3"},
                     "other": {"IPAddress": "10.1.0.4", "GlobalIPv6Address": ""}},
    }
    assert network.ips_from_network_settings(settings) == ["172.17.0.3", "10.1.0.4", "fd00::3"]
    assert network.ips_from_network_settings({"Networks": {"none": {"IPAddress": ""}}}) == []
    assert network.ips_from_network_settings(None) == []


# --- reading sandboxes back -----------------------------------------------------------------------

LIST_ENTRY = {
    "Id": SANDBOX_ID,
    "Names": ["/k8s_POD_web-0_shop_uid-1_2"],
    "Created": 1714558830,
    "State": "running",
    "Status": "Up 3 minutes",
    "Labels": {"app": "web", "annotation.seen": "now", "io.kubernetes.docker.type": "podsandbox",
               "io.kubernetes.container.name": "POD", "io.kubernetes.dockershim-py.runtime-handler": "runc"},
}


def test_sandbox_from_list_entry() -> None:
    assert sandbox_convert.sandbox_from_list_entry(LIST_ENTRY) == api.PodSandbox(
        id=SANDBOX_ID,
        metadata=api.PodSandboxMetadata(name="web-0", namespace="shop", uid="uid-1", attempt=2),
        state=api.SANDBOX_READY,
        created_at=1714558830 * 10**9,
        labels={"app": "web"},
        annotations={"seen": "now"},
        runtime_handler="runc",
    )


def test_list_entries_of_other_shapes() -> None:
    exited = dict(LIST_ENTRY, State="exited", Status="Exited (0) 1 second ago")
    assert sandbox_convert.sandbox_from_list_entry(exited).state == api.SANDBOX_NOTREADY
    paused = dict(LIST_ENTRY, State="paused", Status="Up 2 seconds (Paused)")  # as PodSandboxStatus says
    assert sandbox_convert.sandbox_from_list_entry(paused).state == api.SANDBOX_READY
    old_docker = {key: value for key, value in LIST_ENTRY.items() if key != "State"}
    assert sandbox_convert.sandbox_from_list_entry(old_docker).state == api.SANDBOX_READY
    assert sandbox_convert.sandbox_from_list_entry(dict(LIST_ENTRY, Names=["/someone-elses"])) is None
    assert sandbox_convert.sandbox_from_list_entry(dict(LIST_ENTRY, Names=[])) is None


def test_orphan_checkpoint_is_a_notready_sandbox() -> None:
    orphan = sandbox_convert.sandbox_from_checkpoint(SANDBOX_ID, SandboxCheckpoint("web-0", "shop"))
    assert orphan.state == api.SANDBOX_NOTREADY
    assert (orphan.metadata.name, orphan.metadata.namespace) == ("web-0", "shop")
    kept = SandboxCheckpoint("web-0", "shop", uid="u-1", created_at=7_000_000_042)
    status = sandbox_convert.status_from_checkpoint(SANDBOX_ID, kept)
    assert (status.metadata.uid, status.created_at, status.state) == ("u-1", 7_000_000_042, api.SANDBOX_NOTREADY)
    listed = sandbox_convert.sandbox_from_checkpoint(SANDBOX_ID, kept)  # whole seconds, as Docker lists the others
    assert (listed.metadata.uid, listed.created_at, listed.state) == ("u-1", 7_000_000_000, api.SANDBOX_NOTREADY)


def test_a_checkpoint_keeps_the_pods_uid() -> None:
    config = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="web-0", namespace="shop", uid="u-1"))
    assert sandbox_convert.checkpoint_of(config, False).uid == "u-1"


@pytest.mark.parametrize(
    "sandbox_filter, expected",
    [
        (None, True),
        (api.PodSandboxFilter(), True),
        (api.PodSandboxFilter(id="ccc"), True),
        (api.PodSandboxFilter(id="cd"), False),
        (api.PodSandboxFilter(state=api.PodSandboxStateValue(state=api.SANDBOX_READY)), True),
        (api.PodSandboxFilter(state=api.PodSandboxStateValue(state=api.SANDBOX_NOTREADY)), False),
        (api.PodSandboxFilter(label_selector={"app": "web"}), True),
        (api.PodSandboxFilter(label_selector={"io.kubernetes.docker.type": "podsandbox"}), False),
    ],
)
def test_matches_filter(sandbox_filter, expected: bool) -> None:
    assert sandbox_convert.matches_filter(sandbox_convert.sandbox_from_list_entry(LIST_ENTRY), sandbox_filter) is expected


INSPECT = {
    "Id": SANDBOX_ID,
    "Name": "/k8s_POD_web-0_shop_uid-1_2",
    "Created": "2024-05-01T10:20:30.123456789Z",
    "State": {"Running": True, "Pid": 42, "Status": "running"},
    "Config": {"Image": "pause:3.10", "Labels": LIST_ENTRY["Labels"]},
    "HostConfig": {"NetworkMode": "default", "IpcMode": "shareable", "PidMode": "", "Runtime": "runc"},
    "ResolvConfPath": "/var/lib/docker/containers/x/resolv.conf",
}


def test_status_from_inspect() -> None:
    status = sandbox_convert.status_from_inspect(INSPECT, ["172.17.0.2", "fd00::2"])
    assert status.id == SANDBOX_ID
    assert status.state == api.SANDBOX_READY
    assert status.created_at == 1714558830123456789
    assert status.metadata.attempt == 2
    assert status.network.ip == "172.17.0.2"
    assert [ip.ip for ip in status.network.additional_ips] == ["fd00::2"]
    assert status.linux.namespaces.options == api.NamespaceOption(network=api.POD, pid=api.CONTAINER, ipc=api.POD)
    assert dict(status.labels) == {"app": "web"} and dict(status.annotations) == {"seen": "now"}
    assert status.runtime_handler == "runc"


def test_verbose_info_is_json() -> None:
    info = json.loads(sandbox_convert.verbose_info(INSPECT, ["172.17.0.2"], SandboxCheckpoint("web-0", "shop"))["info"])
    assert info["pid"] == 42 and info["ips"] == ["172.17.0.2"] and info["checkpoint"]["name"] == "web-0"


def test_a_pods_containers_are_stopped_side_by_side_the_first_by_the_caller() -> None:
    ids = ["c1", "c2", "c3"]
    together = threading.Barrier(len(ids), timeout=5)  # broken unless all three wait at once
    ran_on: dict[str, str] = {}

    def stop(container_id: str) -> None:
        ran_on[container_id] = threading.current_thread().name
        together.wait()

    with futures.ThreadPoolExecutor(4, "kept") as pool:
        sandbox.side_by_side(pool, stop, ids)
    assert ran_on["c1"] == threading.current_thread().name
    assert sorted(ran_on) == ids


def test_a_failure_stopping_one_container_waits_for_the_others_then_raises() -> None:
    finished = threading.Event()

    def stop(container_id: str) -> None:
        if container_id == "bad":
            raise CRIError(grpc.StatusCode.UNKNOWN, "stop bad: Docker failed")
        finished.wait(0.2)
        finished.set()

    with futures.ThreadPoolExecutor(2) as pool:
        with pytest.raises(CRIError, match="stop bad"):
            sandbox.side_by_side(pool, stop, ["bad", "slow"])
        assert finished.is_set()  # before the pool's own shutdown could wait for it


def test_a_hostname_longer_than_the_kernels_is_refused() -> None:
    long_name = _config()
    long_name.hostname = "h" * 65
    assert "longer than the kernel's 64 bytes" in _refused(_body, long_name)
    long_name.hostname = "h" * 64
    assert _body(long_name)["Hostname"] == "h" * 64
    long_name.hostname = "h" * 65  # a host-network pause container gets it set too: runc would fail
    long_name.linux.security_context.namespace_options.network = api.NODE
    assert "longer than the kernel's 64 bytes" in _refused(_body, long_name)


# --- host ports on a CNI network -----------------------------------------------------------------


def _pod(*mappings: PortMapping, host_network: bool = False) -> SandboxCheckpoint:
    return SandboxCheckpoint("web", "shop", tuple(mappings), host_network)


def test_a_host_port_a_running_pod_holds_clashes_on_any_address_it_shares() -> None:
    held = {"a" * 64: _pod(PortMapping("TCP", 80, 8080, "127.0.0.1"), PortMapping("UDP", 53, 5353))}
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 81, 8080, "127.0.0.1")), held) == (
        PortMapping("TCP", 81, 8080, "127.0.0.1"), "a" * 64)
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 81, 8080)), held) is not None  # every address
    assert sandbox_convert.host_port_clash(_pod(PortMapping("udp", 53, 5353, "10.0.0.1")), held) is not None
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 81, 8080, "127.0.0.2")), held) is None
    assert sandbox_convert.host_port_clash(_pod(PortMapping("UDP", 80, 8080, "127.0.0.1")), held) is None
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 80, 8081)), held) is None
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 80, 0)), {"b" * 64: _pod(PortMapping("TCP", 80, 0))}) is None
    # 0.0.0.0 and :: are every address of their own family only.
    ipv4 = {"d" * 64: _pod(PortMapping("TCP", 80, 8080, "0.0.0.0"))}
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 80, 8080, "::")), ipv4) is None
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 80, 8080, "10.0.0.1")), ipv4) is not None
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 80, 8080, "")), ipv4) is not None
    # A host-network pod's mappings are not rules of portmap's.
    assert sandbox_convert.host_port_clash(_pod(PortMapping("TCP", 80, 8080)),
                                   {"c" * 64: _pod(PortMapping("TCP", 80, 8080), host_network=True)}) is None


def test_a_removed_sandbox_is_described_from_its_events_attributes() -> None:
    """The kubelet's evented PLEG skips an event without the pod's metadata."""
    attributes = {"name": "k8s_POD_web-0_shop_uid-1_2", "image": "pause:3.10", "app": "web",
                  "annotation.seen": "now", "io.kubernetes.docker.type": "podsandbox",
                  "io.kubernetes.container.name": "POD"}
    status = sandbox_convert.status_of_removed("a" * 64, attributes)
    assert status == api.PodSandboxStatus(
        id="a" * 64, metadata=api.PodSandboxMetadata(name="web-0", namespace="shop", uid="uid-1", attempt=2),
        state=api.SANDBOX_NOTREADY, labels={"app": "web"}, annotations={"seen": "now"})
    assert sandbox_convert.status_of_removed("a" * 64, {"name": "not-a-sandbox"}) is None

"""Pod networking: which networks pods get, and whether the node's pod network is ready.

Without a network plugin a pod sandbox sits on Docker's default bridge, as dockershim's
`--network-plugin=""` did; the network is then ready whenever Docker is. With
`--network-plugin=cni` the pause container gets Docker's `none` network and the node's CNI
plugins (cni.py) put it on the pod network; the network is ready when their config is.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .api import api_pb2 as api
from .cni import CNINetwork
from .errors import invalid_argument
from .files import write_atomically

log = logging.getLogger(__name__)

# The Docker network of a pod sandbox that has its own network namespace: the default bridge,
# or, where CNI plugins set up the pod network, none (a namespace with loopback alone).
POD_NETWORK_MODE = "default"
CNI_POD_NETWORK_MODE = "none"
_PROTOCOLS: dict[int, str] = {api.TCP: "tcp", api.UDP: "udp", api.SCTP: "sctp"}


@dataclass(frozen=True)
class NetworkStatus:
    ready: bool
    reason: str = ""
    message: str = ""


def normalised_pod_cidr(pod_cidr: str) -> str:
    """The kubelet's comma-separated ranges ("10.0.0.0/24,fd00::/64"), each checked and trimmed."""
    ranges = [part.strip() for part in pod_cidr.split(",") if part.strip()]
    for cidr in ranges:
        try:
            if "/" not in cidr:
                raise ValueError("no prefix length")  # a bare address would give IPAM one address
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise invalid_argument(f"pod_cidr {pod_cidr!r}: {cidr!r} is not a CIDR such as 10.244.1.0/24") from exc
    return ",".join(ranges)


class Network:
    def __init__(self, cni: CNINetwork | None = None, pod_cidr_path: str = "") -> None:
        """`pod_cidr_path`: where the pod CIDR is kept across restarts. The kubelet tells it only
        when it changes, and a CNI config whose IPAM takes its ranges from the runtime needs it."""
        self._lock = threading.Lock()
        self._pod_cidr_path = pod_cidr_path
        self._pod_cidr = self._saved_pod_cidr()
        self.cni = cni

    def _saved_pod_cidr(self) -> str:
        if not self._pod_cidr_path:
            return ""
        try:
            with open(self._pod_cidr_path, encoding="utf-8") as saved:
                pod_cidr = saved.read().strip()
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            log.error("cannot read the saved pod CIDR %s: %s; it is unknown until the kubelet sets it",
                      self._pod_cidr_path, exc)
            return ""
        if pod_cidr:
            log.info("pod CIDR %r, as the kubelet last set it", pod_cidr)
        return pod_cidr

    @property
    def pod_network_mode(self) -> str:
        return CNI_POD_NETWORK_MODE if self.cni is not None else POD_NETWORK_MODE

    @property
    def pod_cidr(self) -> str:
        return self._pod_cidr

    def update_pod_cidr(self, pod_cidr: str) -> None:
        """Kept and given to CNI plugins whose IPAM takes the runtime's ranges (Docker's bridge
        allocates on its own); refused, not stored, when a range is not a CIDR."""
        pod_cidr = normalised_pod_cidr(pod_cidr)
        if not pod_cidr:  # the kubelet never clears it; containerd and cri-dockerd ignore an empty one too
            log.info("UpdateRuntimeConfig without a pod CIDR: keeping %r", self._pod_cidr)
            return
        with self._lock:
            if pod_cidr == self._pod_cidr:
                return
            log.info("pod CIDR set to %r", pod_cidr)
            self._pod_cidr = pod_cidr
            if not self._pod_cidr_path:
                return
            try:
                write_atomically(self._pod_cidr_path, pod_cidr.encode())
            except OSError as exc:
                log.error("cannot save the pod CIDR in %s (a restart forgets it until the kubelet sets it "
                          "again): %s", self._pod_cidr_path, exc)

    def status(self, docker_ready: bool) -> NetworkStatus:
        if self.cni is not None:
            readiness = self.cni.readiness()
            return NetworkStatus(True) if readiness.ready else NetworkStatus(
                False, "NetworkPluginNotReady", readiness.message)
        if not docker_ready:
            return NetworkStatus(False, "DockerDaemonNotReady", "Docker's bridge network needs a running Docker daemon")
        return NetworkStatus(True)


# --- port mappings (pure) -----------------------------------------------------------------------


def protocol_name(protocol: int) -> str:
    """`tcp`, `udp` or `sctp`; an unknown protocol is the caller's error."""
    try:
        return _PROTOCOLS[protocol]
    except KeyError:
        raise invalid_argument(f"port mapping protocol {protocol} is unknown (TCP, UDP or SCTP)") from None


def host_addresses_overlap(first: str, second: str) -> bool:
    """Whether a host port on `first` and on `second` would clash: no host IP is every address, and
    `0.0.0.0` and `::` every address of their own family only (the kubelet maps a dual-stack
    hostPort once on each, and the API server allows it)."""
    if first == second or not first or not second:
        return True
    wildcards = {"0.0.0.0", "::"}
    if first in wildcards or second in wildcards:
        return ipaddress.ip_address(first).version == ipaddress.ip_address(second).version
    return False


def validate_port_mappings(mappings: Iterable[api.PortMapping]) -> list[api.PortMapping]:
    """The mappings, after refusing ports out of range and host IPs that are not addresses."""
    valid: list[api.PortMapping] = []
    for mapping in mappings:
        protocol_name(mapping.protocol)
        if not 0 < mapping.container_port <= 65535:
            raise invalid_argument(f"port mapping container_port {mapping.container_port} is not in 1-65535")
        if not 0 <= mapping.host_port <= 65535:
            raise invalid_argument(f"port mapping host_port {mapping.host_port} is not in 0-65535")
        if mapping.host_ip:
            try:
                ipaddress.ip_address(mapping.host_ip)
            except ValueError:
                raise invalid_argument(f"port mapping host_ip {mapping.host_ip!r} is not an IP address") from None
        if mapping.host_port and any(_same_host_port(mapping, other) for other in valid if other.host_port):
            raise invalid_argument(f"host port {protocol_name(mapping.protocol)}/{mapping.host_port} on "
                                   f"{mapping.host_ip or 'every address'} is mapped twice in the pod")
        valid.append(mapping)
    return valid


def _same_host_port(first: api.PortMapping, second: api.PortMapping) -> bool:
    return (first.protocol, first.host_port) == (second.protocol, second.host_port) and (
        host_addresses_overlap(first.host_ip, second.host_ip))


def docker_ports(mappings: Iterable[api.PortMapping]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, str]]]]:
    """Docker's (ExposedPorts, PortBindings) for the mappings that name a host port.

    One container port may be published on several host ports (or host IPs); a mapping without
    a host port publishes nothing, as in dockershim.
    """
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for mapping in mappings:
        if mapping.host_port == 0:
            continue
        port = f"{mapping.container_port}/{protocol_name(mapping.protocol)}"
        exposed[port] = {}
        binding = {"HostIp": mapping.host_ip, "HostPort": str(mapping.host_port)}
        if binding not in bindings.setdefault(port, []):
            bindings[port].append(binding)
    return exposed, bindings


# --- DNS (pure, and the one file write) ---------------------------------------------------------

_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def resolv_conf(dns: api.DNSConfig) -> str:
    """The resolv.conf for a pod's DNS config; entries that could add lines of their own are refused."""
    for server in dns.servers:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise invalid_argument(f"dns_config server {server!r} is not an IP address") from None
    for kind, entries in (("search", dns.searches), ("option", dns.options)):
        for entry in entries:
            if not entry or _WHITESPACE_OR_CONTROL.search(entry):
                raise invalid_argument(f"dns_config {kind} {entry!r} is empty or contains whitespace")
    lines = [f"nameserver {server}" for server in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "".join(line + "\n" for line in lines)


def rewrite_resolv_conf(path: str, content: str) -> None:
    """Overwrite Docker's resolv.conf of a sandbox in place: it is bind-mounted by inode."""
    if not path:
        raise FileNotFoundError("Docker reported no resolv.conf path for the sandbox")
    descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(descriptor, content.encode())
    finally:
        os.close(descriptor)


# --- pod IPs ------------------------------------------------------------------------------------


def _unique_by_family(addresses: Iterable[str]) -> list[str]:
    """Addresses without duplicates, IPv4 ones first (the kubelet takes the first as the pod IP)."""
    seen: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for address in addresses:
        if not address or address in seen:
            continue
        try:
            seen[address] = ipaddress.ip_address(address)
        except ValueError:
            continue
    return sorted(seen, key=lambda text: seen[text].version)


def ips_from_network_settings(settings: dict[str, Any] | None) -> list[str]:
    """Every global address Docker gave the container, on any of its networks."""
    settings = settings or {}
    candidates = [settings.get("IPAddress"), settings.get("GlobalIPv6Address")]
    for network in (settings.get("Networks") or {}).values():
        candidates += [(network or {}).get("IPAddress"), (network or {}).get("GlobalIPv6Address")]
    return _unique_by_family(address for address in candidates if address)


def ipv4_from_fib_trie(text: str) -> list[str]:
    """The local IPv4 addresses in /proc/<pid>/net/fib_trie, loopback left out."""
    found, last = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:]
        elif stripped == "/32 host LOCAL" and last and not last.startswith("127."):
            found.append(last)
    return _unique_by_family(found)


def ipv6_from_if_inet6(text: str) -> list[str]:
    """The global-scope IPv6 addresses in /proc/<pid>/net/if_inet6."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[3] != "00" or fields[5] == "lo" or len(fields[0]) != 32:
            continue
        found.append(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return _unique_by_family(found)


def ips_from_network_namespace(pid: int) -> list[str]:
    """The addresses inside the network namespace of process `pid`, both families.

    Read from /proc/<pid>/net, which shows that process's namespace: no `nsenter ip` fork, no
    setns, and it works for addresses a network plugin (not Docker) configured.
    """
    addresses: list[str] = []
    for name, parse in (("fib_trie", ipv4_from_fib_trie), ("if_inet6", ipv6_from_if_inet6)):
        try:
            with open(f"/proc/{pid}/net/{name}", encoding="ascii", errors="replace") as handle:
                addresses += parse(handle.read())
        except OSError:  # the process is gone, or the kernel has no IPv6
            continue
    return addresses

"""Pod networks from CNI plugins, as dockershim's `--network-plugin=cni` gave them.

The pause container starts with Docker's `none` network (its own namespace, loopback only);
the plugins of the node's network config then add an `eth0` to that namespace (ADD) and take
it away, releasing the address, before the pause container stops (DEL). The plugins are run
the way the CNI spec says a runtime runs them: one executable per plugin of the list, the
network config on stdin, the request in `CNI_*` variables, each plugin given the result of the
one before.

Why ADD results are kept on disk, in libcni's cache (`<cache dir>/results/<network>-<sandbox
id>-eth0`, the `cniCacheV1` shape): DEL must release what ADD set up even after the shim was
restarted or the network config was changed meanwhile, and a node moving from dockershim or
cri-dockerd (both used libcni) keeps the cache of the pods they set up. The cached config is the
one a DEL runs with; a sandbox with no cache entry is torn down with the current config.

Pure parts first (config files, plugin requests, results), then `CNINetwork`, which runs plugins.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .files import remove_if_present, write_atomically

log = logging.getLogger(__name__)

CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")
INTERFACE_NAME = "eth0"
CACHE_KIND = "cniCacheV1"
# Versions whose DEL receives the ADD result as prevResult (0.4.0 brought it).
_VERSIONS_WITHOUT_PREV_RESULT_ON_DEL = ("", "0.1.0", "0.2.0", "0.3.0", "0.3.1")
# What the CNI spec allows in a network name, and what a plugin's file name may be.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SANDBOX_ID = re.compile(r"[0-9a-f]{64}")
# The pod annotations the kubelet's CNI driver turned into the bandwidth plugin's capability.
INGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/egress-bandwidth"
# Bursts the kubelet passed with a rate: 2 Gbit, which in practice is no limit.
UNLIMITED_BURST_BITS = 2**31 - 1
_BANDWIDTH_RANGE = (10**3, 10**15)  # 1 kbit/s to 1 Pbit/s, the kubelet's bounds
_QUANTITY = re.compile(r"(\+?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:([KMGTPE]i)|([numkMGTPE])|[eE]([+-]?[0-9]+))?")
_DECIMAL_SUFFIXES: dict[str, int | Fraction] = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6),
                                                "m": Fraction(1, 1000), "k": 10**3, "M": 10**6, "G": 10**9,
                                                "T": 10**12, "P": 10**15, "E": 10**18}


class NetworkConfigError(Exception):
    """No usable network config: the node's pod network is not ready."""


class PluginError(Exception):
    """A plugin failed; `message` says which and what it said."""

    def __init__(self, message: str, timed_out: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out
        self.missing = missing


# --- network config files (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """One network config list: what every plugin of it gets, in order."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str
    raw: bytes = field(repr=False, default=b"")

    @property
    def plugin_types(self) -> list[str]:
        return [plugin["type"] for plugin in self.plugins]


def parse_network_config(source: str, raw: bytes) -> NetworkConfig:
    """A `.conflist` (name, cniVersion, plugins) or a single-plugin `.conf`, as libcni reads them."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise NetworkConfigError(f"{source}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise NetworkConfigError(f"{source}: a network config is a JSON object")
    is_list = "plugins" in document
    plugins = document.get("plugins") if is_list else [document]
    if not isinstance(plugins, list) or not plugins:
        raise NetworkConfigError(f"{source}: \"plugins\" must be a non-empty list")
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NetworkConfigError(f"{source}: the network has no valid \"name\" (letters, digits, '.', '_', '-')")
    version = document.get("cniVersion", "")
    if not isinstance(version, str):
        raise NetworkConfigError(f"{source}: \"cniVersion\" must be a string")
    checked = []
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, dict):
            raise NetworkConfigError(f"{source}: plugin {index} is not a JSON object")
        plugin_type = plugin.get("type")
        if not isinstance(plugin_type, str) or not _NAME.fullmatch(plugin_type):
            raise NetworkConfigError(f"{source}: plugin {index} has no valid \"type\" (a plugin's file name)")
        checked.append(dict(plugin))
    if not is_list:
        checked[0].pop("cniVersion", None)
        checked[0].pop("name", None)
    return NetworkConfig(name, version, tuple(checked), source, raw)


def config_files(names: Iterable[str]) -> list[str]:
    """The names that are network configs, in the order libcni tries them (by name)."""
    return sorted(name for name in names if name.endswith(CONFIG_EXTENSIONS) and not name.startswith("."))


# --- plugin requests (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class PodIdentity:
    namespace: str
    name: str
    uid: str
    sandbox_id: str

    def cni_arg_pairs(self) -> list[tuple[str, str]]:
        """CNI_ARGS as dockershim and the kubelet's plugins expect them."""
        pairs = [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", self.namespace), ("K8S_POD_NAME", self.name),
                 ("K8S_POD_INFRA_CONTAINER_ID", self.sandbox_id)]
        if self.uid:
            pairs.append(("K8S_POD_UID", self.uid))
        return pairs

    def cni_args(self) -> str:
        return ";".join(f"{key}={value}" for key, value in self.cni_arg_pairs())


def port_mapping_capability(mappings: Iterable[Any]) -> list[dict[str, Any]]:
    """The `portMappings` runtime config (portmap plugin) of checkpoint port mappings with a host port."""
    return [
        {"hostPort": mapping.host_port, "containerPort": mapping.container_port,
         "protocol": mapping.protocol.lower(), "hostIP": mapping.host_ip}
        for mapping in mappings if mapping.host_port
    ]


# A quantity's text, and its exponent, at the most: an int64's range needs no more.
MAX_QUANTITY_CHARACTERS = 64
MAX_QUANTITY_EXPONENT = 30


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity (`10M`, `1.5Gi`, `100k`, `1e6`) as a whole number, rounded up.

    Bounded before any arithmetic: `1e999999999` took the shim's CPU for minutes (a pod's
    annotation, which anyone who can make a pod writes)."""
    match = _QUANTITY.fullmatch(text.strip()) if len(text) <= MAX_QUANTITY_CHARACTERS else None
    if match is None:
        raise ValueError(f"{text[:MAX_QUANTITY_CHARACTERS]!r} is not a quantity (like 10M, 1.5Gi or 500k)")
    _, number, binary, decimal, exponent = match.groups()
    if exponent and abs(int(exponent)) > MAX_QUANTITY_EXPONENT:
        raise ValueError(f"{text!r} is out of any quantity's range")
    value = Fraction(number)
    if binary:
        value *= 2 ** (10 * ("KMGTPE".index(binary[0]) + 1))
    elif decimal:
        value *= _DECIMAL_SUFFIXES[decimal]
    elif exponent:
        value *= Fraction(10) ** int(exponent)
    return math.ceil(value)


def bandwidth_capability(annotations: Mapping[str, str]) -> dict[str, int] | None:
    """The `bandwidth` runtime config of a pod's bandwidth annotations (bits per second); None without.

    Raises ValueError, naming the annotation, for a value that is not a quantity or is out of bounds.
    """
    entry: dict[str, int] = {}
    for annotation, direction in ((INGRESS_BANDWIDTH_ANNOTATION, "ingress"), (EGRESS_BANDWIDTH_ANNOTATION, "egress")):
        if annotation not in annotations:
            continue
        try:
            rate = parse_quantity(annotations[annotation])
        except ValueError as exc:
            raise ValueError(f"annotation {annotation}: {exc}") from None
        if not _BANDWIDTH_RANGE[0] <= rate <= _BANDWIDTH_RANGE[1]:
            raise ValueError(f"annotation {annotation}: {annotations[annotation]!r} is outside 1k to 1P bits per second")
        entry[f"{direction}Rate"] = rate
        entry[f"{direction}Burst"] = UNLIMITED_BURST_BITS
    return entry or None


def runtime_capabilities(port_mappings: Iterable[Any], annotations: Mapping[str, str], pod_cidr: str,
                         dns: Mapping[str, list[str]] | None) -> dict[str, Any]:
    """Every capability a pod can offer its plugins; each plugin gets those it declares.

    As the kubelet's CNI driver gave them: host ports, bandwidth, the node's pod CIDR (ipRanges),
    and the pod's DNS config.
    """
    capabilities: dict[str, Any] = {}
    mappings = port_mapping_capability(port_mappings)
    if mappings:
        capabilities["portMappings"] = mappings
    bandwidth = bandwidth_capability(annotations)
    if bandwidth:
        capabilities["bandwidth"] = bandwidth
    if pod_cidr:
        capabilities["ipRanges"] = [[{"subnet": cidr}] for cidr in pod_cidr.split(",") if cidr]
    if dns:
        capabilities["dns"] = dict(dns)
    return capabilities


def plugin_stdin(network: NetworkConfig, plugin: Mapping[str, Any], capabilities: Mapping[str, Any],
                 prev_result: Mapping[str, Any] | None) -> bytes:
    """One plugin's config: the plugin's own keys, the list's name and version, the runtime config of
    the capabilities it declares, and the previous plugin's result."""
    config = dict(plugin)
    config["name"] = network.name
    config["cniVersion"] = network.cni_version
    declared = plugin.get("capabilities")
    if not isinstance(declared, dict):
        declared = {}
    runtime_config = {key: value for key, value in capabilities.items() if declared.get(key)}
    if runtime_config:
        config["runtimeConfig"] = runtime_config
    if prev_result is not None:
        config["prevResult"] = prev_result
    return json.dumps(config).encode()


def plugin_environment(command: str, pod: PodIdentity, netns: str, cni_path: Sequence[str],
                       inherited: Mapping[str, str]) -> dict[str, str]:
    """The shim's own environment with the CNI variables on top, as libcni gives it: plugins run
    iptables, ip and their IPAM plugin by PATH, and some read proxy settings or HOME from it."""
    return {
        **{name: value for name, value in inherited.items() if not name.startswith("CNI_")},
        "PATH": inherited.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": pod.sandbox_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": INTERFACE_NAME,
        "CNI_ARGS": pod.cni_args(),
        "CNI_PATH": os.pathsep.join(cni_path),
    }


def plugin_failure(plugin_type: str, command: str, returncode: int, stdout: bytes, stderr: bytes) -> str:
    """What a failed plugin said: the CNI error object ({code, msg, details}) when it wrote one."""
    try:
        error = json.loads(stdout or b"null")
    except ValueError:
        error = None
    if isinstance(error, dict) and error.get("msg"):
        said = f"{error['msg']}" + (f": {error['details']}" if error.get("details") else "")
        said += f" (CNI error code {error.get('code')})"
    else:
        said = (stderr or stdout).decode(errors="replace").strip()[-500:] or f"exit status {returncode}"
    return f"CNI plugin {plugin_type} {command} failed: {said}"


def result_ips(result: Mapping[str, Any] | None) -> list[str]:
    """The addresses a result gives the pod (0.3.0+ `ips`, older `ip4`/`ip6`), without prefix lengths,
    IPv4 first whatever order the plugin gave them in: the kubelet takes the first as the pod IP."""
    if not isinstance(result, Mapping):
        return []
    entries = list(result.get("ips") or []) if isinstance(result.get("ips"), list) else []
    entries += [result[key] for key in ("ip4", "ip6") if isinstance(result.get(key), dict)]
    addresses = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        address = entry.get("address") or entry.get("ip") or ""
        if isinstance(address, str) and address:
            addresses.append(address.split("/", 1)[0])
    return sorted(dict.fromkeys(addresses), key=lambda address: ":" in address)


# Marks the record of a failed ADD kept for its DEL (libcni, which ignores the key, keeps none).
FAILED_ADD_KEY = "dockershimPyFailedAdd"
# What held the network namespace the ADD set up (the pause process and its start): a pause
# container restarted behind the shim's back has a new, empty namespace, which the record's
# addresses no longer describe. (A namespace's inode is no mark: the kernel gives a freed one
# to the next namespace.)
NAMESPACE_HOLDER_KEY = "dockershimPyNamespaceHolder"


def cache_entry(network: NetworkConfig, pod: PodIdentity, capabilities: Mapping[str, Any],
                result: Mapping[str, Any]) -> dict[str, Any]:
    """libcni's cache record of an ADD, which its DEL (and this shim's) reads back."""
    return {
        "kind": CACHE_KIND,
        "containerId": pod.sandbox_id,
        "config": base64.b64encode(network.raw).decode(),
        "ifName": INTERFACE_NAME,
        "networkName": network.name,
        "cniArgs": [list(pair) for pair in pod.cni_arg_pairs()],
        "capabilityArgs": dict(capabilities),
        "result": dict(result),
    }


def cached_network(entry: Mapping[str, Any], source: str) -> tuple[NetworkConfig | None, dict[str, Any] | None]:
    """(the config the ADD ran with, its result) from a cache record; None for what it lacks."""
    network = None
    if entry.get("config"):
        try:
            network = parse_network_config(source, base64.b64decode(entry["config"]))
        except (NetworkConfigError, ValueError):
            network = None
    result = entry.get("result")
    return network, result if isinstance(result, dict) else None


# --- running plugins (I/O) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str = ""


class CNINetwork:
    """The node's CNI network: its config, found anew when the config directory changes."""

    def __init__(self, conf_dir: str, bin_dirs: Sequence[str], cache_dir: str, timeout: float) -> None:
        self._conf_dir = conf_dir
        self._bin_dirs = tuple(bin_dirs)
        self._cache_dir = os.path.join(cache_dir, "results")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._loaded_for: tuple[Any, ...] | None = None
        self._loaded: NetworkConfig | str = "not loaded yet"  # the config, or why there is none

    # --- the config -------------------------------------------------------------------------------

    def config(self) -> NetworkConfig:
        """The first usable network config of the directory; NetworkConfigError says why there is none."""
        names = self._config_names()
        key = tuple((name, self._mtime(name)) for name in names)
        with self._lock:
            if key != self._loaded_for:
                self._loaded, self._loaded_for = self._load(names), key
            loaded = self._loaded
        if isinstance(loaded, str):
            raise NetworkConfigError(loaded)
        return loaded

    def readiness(self) -> Readiness:
        """Ready when there is a network config and every plugin it names is installed."""
        try:
            network = self.config()
        except NetworkConfigError as exc:
            return Readiness(False, f"network plugin is not ready: cni config uninitialized ({exc})")
        missing = [plugin_type for plugin_type in network.plugin_types if self._find_plugin(plugin_type) is None]
        if missing:
            return Readiness(False, f"network plugin is not ready: network {network.name!r} ({network.source}) "
                                    f"needs CNI plugins {', '.join(missing)}, not found in {self._search_path()}")
        return Readiness(True)

    def _config_names(self) -> list[str]:
        try:
            return config_files(os.listdir(self._conf_dir))
        except OSError:
            return []

    def _mtime(self, name: str) -> int:
        try:
            return os.stat(os.path.join(self._conf_dir, name)).st_mtime_ns
        except OSError:
            return -1

    def _load(self, names: list[str]) -> NetworkConfig | str:
        problems = []
        for name in names:
            path = os.path.join(self._conf_dir, name)
            try:
                with open(path, "rb") as handle:
                    raw = handle.read()
                network = parse_network_config(path, raw)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror}")
                continue
            except NetworkConfigError as exc:
                problems.append(str(exc))
                continue
            for problem in problems:
                log.warning("CNI config skipped: %s", problem)
            log.info("CNI network %r from %s (plugins: %s)", network.name, path, ", ".join(network.plugin_types))
            return network
        if problems:
            return "; ".join(problems)
        return f"no network config (*.conf, *.conflist, *.json) in {self._conf_dir}"

    # --- ADD and DEL ------------------------------------------------------------------------------

    def add(self, pod: PodIdentity, netns: str, capabilities: Mapping[str, Any], holder: str = "") -> list[str]:
        """Put the pod on the network; the pod's addresses. On failure what was added is taken back.
        `holder` names what holds `netns` (kept with the result, see NAMESPACE_HOLDER_KEY)."""
        network = self.config()
        result: dict[str, Any] | None = None
        try:
            for plugin in network.plugins:
                result = self._run(network, plugin, "ADD", pod, netns, capabilities, result)
            self._write_cache(pod, {**cache_entry(network, pod, capabilities, result or {}),
                                    NAMESPACE_HOLDER_KEY: holder})
        except (PluginError, OSError) as exc:
            error = exc if isinstance(exc, PluginError) else \
                PluginError(f"cannot record the CNI result in {self._cache_dir}: {exc}")
            if self._delete(network, pod, netns, capabilities, result):
                error = self._kept_for_retry(error, network, pod, capabilities, result)
            if error is exc:
                raise
            raise error from exc
        return result_ips(result)

    def _kept_for_retry(self, error: PluginError, network: NetworkConfig, pod: PodIdentity,
                        capabilities: Mapping[str, Any], result: dict[str, Any] | None) -> PluginError:
        """A failed ADD whose undoing failed too: its record stays, so that the pod's StopPodSandbox
        or RemovePodSandbox runs DEL again instead of the address being held for good."""
        try:
            self._write_cache(pod, {**cache_entry(network, pod, capabilities, result or {}), FAILED_ADD_KEY: True})
        except OSError as exc:
            log.error("pod sandbox %s may hold CNI resources for good: its DEL failed and %s cannot "
                      "record them: %s", pod.sandbox_id[:12], self._cache_dir, exc)
            return error
        return PluginError(f"{error.message}; undoing it failed too, so StopPodSandbox or RemovePodSandbox "
                           f"of {pod.sandbox_id} runs CNI DEL again", missing=error.missing,
                           timed_out=error.timed_out)

    def delete(self, pod: PodIdentity, netns: str, capabilities: Mapping[str, Any]) -> None:
        """Take the pod off the network (every plugin, in reverse), then forget its cache record.

        The network and capabilities the ADD used, when it was cached; the current network and
        `capabilities` otherwise. An empty `netns` (the namespace is gone) still releases the address.
        """
        path, entry = self._read_cache(pod.sandbox_id)
        network, result = cached_network(entry, path) if entry else (None, None)
        if network is None:
            network = self.config()
        current_capabilities = capabilities
        if entry and isinstance(entry.get("capabilityArgs"), dict):
            capabilities = entry["capabilityArgs"]
        failures = self._delete(network, pod, netns, capabilities, result)
        if failures and entry and not any(failure.timed_out for failure in failures):
            failures = self._delete_as_configured_now(network, capabilities, pod, netns, current_capabilities,
                                                      None if entry.get(FAILED_ADD_KEY) else result, failures)
        if failures:
            raise failures[0]
        self._remove_cache(pod.sandbox_id)

    def _delete_as_configured_now(self, recorded: NetworkConfig, recorded_capabilities: Mapping[str, Any],
                                  pod: PodIdentity, netns: str, capabilities: Mapping[str, Any],
                                  result: dict[str, Any] | None, failures: list[PluginError]) -> list[PluginError]:
        """DEL with the current config of the same network (and the current capabilities), when
        the recorded config's fails: a failed ADD's typo fixed since, or a plugin that broke and
        that the operator's fixed config leaves out. Else the pod could never be removed;
        containerd and dockershim tear down with the current config only. Nothing changed, or
        another network: the DEL's own failures."""
        try:
            current = self.config()
        except NetworkConfigError:
            return failures
        if current.name != recorded.name or (current.raw == recorded.raw and capabilities == recorded_capabilities):
            return failures
        if self._delete(current, pod, netns, capabilities, result):
            return failures
        log.warning("pod sandbox %s: CNI DEL with the config of its ADD failed (%s); with the current "
                    "config it worked", pod.sandbox_id[:12], failures[0].message)
        return []

    def has_cache(self, sandbox_id: str) -> bool:
        return bool(self._cache_paths(sandbox_id))

    def cached_result(self, sandbox_id: str) -> dict[str, Any] | None:
        """The network, the result of the pod's ADD and what held the namespace it set up ("" when
        not known), as kept for its DEL; None when none is kept."""
        _, entry = self._read_cache(sandbox_id)
        if entry is None:
            return None
        holder = entry.get(NAMESPACE_HOLDER_KEY)
        return {"network": entry.get("networkName"), "result": entry.get("result"),
                "namespaceHolder": holder if isinstance(holder, str) else ""}

    def _delete(self, network: NetworkConfig, pod: PodIdentity, netns: str, capabilities: Mapping[str, Any],
                result: dict[str, Any] | None) -> list[PluginError]:
        """DEL of every plugin, in reverse, each tried whatever the others did; what failed."""
        prev_result = None if network.cni_version in _VERSIONS_WITHOUT_PREV_RESULT_ON_DEL else result
        failures = []
        for plugin in reversed(network.plugins):
            try:
                self._run(network, plugin, "DEL", pod, netns, capabilities, prev_result)
            except PluginError as exc:
                failures.append(exc)
                log.warning("%s", exc.message)
        return failures

    def _run(self, network: NetworkConfig, plugin: Mapping[str, Any], command: str, pod: PodIdentity, netns: str,
             capabilities: Mapping[str, Any], prev_result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        plugin_type = plugin["type"]
        executable = self._find_plugin(plugin_type)
        if executable is None:
            raise PluginError(f"CNI plugin {plugin_type} (network {network.name!r}) is not in {self._search_path()}",
                              missing=True)
        environment = plugin_environment(command, pod, netns, self._bin_dirs, os.environ)
        try:
            finished = subprocess.run(
                [executable], input=plugin_stdin(network, plugin, capabilities, prev_result), env=environment,
                capture_output=True, timeout=self._timeout, cwd="/", check=False,
            )
        except subprocess.TimeoutExpired:
            raise PluginError(f"CNI plugin {plugin_type} {command} did not finish in {self._timeout:g} s",
                              timed_out=True) from None
        except OSError as exc:
            raise PluginError(f"CNI plugin {plugin_type} {command} could not run: {exc.strerror}") from None
        if finished.returncode != 0:
            raise PluginError(plugin_failure(plugin_type, command, finished.returncode, finished.stdout,
                                             finished.stderr))
        if command != "ADD":
            return None
        try:
            result = json.loads(finished.stdout)
        except ValueError:
            raise PluginError(f"CNI plugin {plugin_type} ADD wrote no JSON result") from None
        if not isinstance(result, dict):
            raise PluginError(f"CNI plugin {plugin_type} ADD wrote a result that is not a JSON object")
        return result

    def _find_plugin(self, plugin_type: str) -> str | None:
        for directory in self._bin_dirs:
            candidate = os.path.join(directory, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return None

    def _search_path(self) -> str:
        return ", ".join(self._bin_dirs) or "(no --cni-bin-dir)"

    # --- the cache --------------------------------------------------------------------------------

    def _cache_paths(self, sandbox_id: str) -> list[str]:
        """Cache records of the sandbox, whatever network they were for (the config may have changed)."""
        if not _SANDBOX_ID.fullmatch(sandbox_id):
            return []
        suffix = f"-{sandbox_id}-{INTERFACE_NAME}"
        try:
            return [os.path.join(self._cache_dir, name) for name in sorted(os.listdir(self._cache_dir))
                    if name.endswith(suffix)]
        except OSError:
            return []

    def _read_cache(self, sandbox_id: str) -> tuple[str, dict[str, Any] | None]:
        for path in self._cache_paths(sandbox_id):
            try:
                with open(path, "rb") as handle:
                    entry = json.loads(handle.read())
            except (OSError, ValueError) as exc:
                log.warning("unreadable CNI cache record %s (%s): tearing down with the current config", path, exc)
                continue
            if isinstance(entry, dict):
                return path, entry
        return "", None

    def _write_cache(self, pod: PodIdentity, entry: Mapping[str, Any]) -> None:
        os.makedirs(self._cache_dir, mode=0o700, exist_ok=True)
        write_atomically(os.path.join(self._cache_dir, f"{entry['networkName']}-{pod.sandbox_id}-{INTERFACE_NAME}"),
                         json.dumps(entry).encode())

    def _remove_cache(self, sandbox_id: str) -> None:
        for path in self._cache_paths(sandbox_id):
            remove_if_present(path)

"""Pod sandbox conversions, pure: a RunPodSandbox request to the pause container's Docker create
body and checkpoint, and Docker's list entries and inspects (or a checkpoint) back to CRI
sandboxes and statuses. `sandbox.SandboxService` does the I/O.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import labels, naming, network
from .api import api_pb2 as api
from .cgroups import docker_cgroup_parent
from .checkpoint import PortMapping, SandboxCheckpoint
from .cni import runtime_capabilities
from .errors import invalid_argument, not_found
from .security_context import namespace_options_of, read_profile, sandbox_security
from .timestamps import parse_docker_time

log = logging.getLogger("dockershim_py.sandbox")

SANDBOX_CPU_SHARES = 2
SHM_SIZE_BYTES = 64 * 1024 * 1024
HOST_NAME_MAX = 64  # the kernel's; runc fails the start for a longer one
# Handler names that mean "Docker's default runtime" (cri-dockerd accepts "docker" too).
DEFAULT_HANDLERS = ("", "docker")
# What Docker's container events add to a container's labels in their attributes.
DOCKER_EVENT_ATTRIBUTES = frozenset({"name", "image", "exitCode", "signal", "execDuration"})


def docker_runtime(handler: str, docker_runtimes: Iterable[str]) -> str:
    """Docker's runtime for a RuntimeClass handler: "" for Docker's default, else the same name."""
    if handler in DEFAULT_HANDLERS:
        return ""
    known = sorted(docker_runtimes)
    if handler not in known:
        raise invalid_argument(
            f"runtime handler {handler!r} is unknown: Docker knows {', '.join(repr(name) for name in known)} "
            f"(or '' for its default runtime)"
        )
    return handler


def sandbox_create_body(
    config: api.PodSandboxConfig,
    image: str,
    runtime_handler: str,
    docker_runtime_name: str,
    cgroup_driver: str,
    oom_score_adj: int,
    load_profile: Callable[[str], str] = read_profile,
    pod_network_mode: str = network.POD_NETWORK_MODE,
    docker_privileged_runs: bool = True,
) -> dict[str, Any]:
    """Docker's create body for the pause container: every check that can refuse the pod is here.

    On a CNI pod network the host ports are the plugins' (portmap), not Docker's bindings. The
    pause process needs no privilege: where Docker's Privileged cannot run (`docker_privileged_runs`
    False) a privileged pod's pause container is made without it.
    """
    security = sandbox_security(config.linux, pod_network_mode, load_profile)
    if len(config.hostname.encode()) > HOST_NAME_MAX:  # Docker sets it on host-network pause containers too
        raise invalid_argument(f"hostname {config.hostname[:80]!r} is longer than the kernel's {HOST_NAME_MAX} bytes")
    mappings = network.validate_port_mappings(config.port_mappings)
    exposed, bindings = network.docker_ports(mappings) if pod_network_mode == network.POD_NETWORK_MODE else ({}, {})
    requested_pid = config.linux.security_context.namespace_options.pid
    pid_namespace = api.NamespaceMode.Name(requested_pid) if requested_pid in (api.POD, api.CONTAINER) else ""
    host_config: dict[str, Any] = {
        **security.host_config,
        "Privileged": security.host_config["Privileged"] and docker_privileged_runs,
        "NetworkMode": security.namespaces.network_mode,
        "IpcMode": security.namespaces.ipc_mode,
        "CpuShares": SANDBOX_CPU_SHARES,
        "OomScoreAdj": oom_score_adj,
        "ShmSize": SHM_SIZE_BYTES,
    }
    if security.namespaces.pid_mode:
        host_config["PidMode"] = security.namespaces.pid_mode
    if not security.namespaces.host_network and bindings:
        host_config["PortBindings"] = bindings
    if config.linux.cgroup_parent:
        host_config["CgroupParent"] = docker_cgroup_parent(config.linux.cgroup_parent, cgroup_driver)
    if docker_runtime_name:
        host_config["Runtime"] = docker_runtime_name
    body: dict[str, Any] = {
        "Image": image,
        "Hostname": config.hostname,
        "Labels": labels.sandbox_labels(config.labels, config.annotations, runtime_handler, pid_namespace),
        "HostConfig": host_config,
    }
    if security.user:
        body["User"] = security.user
    if exposed and not security.namespaces.host_network:
        body["ExposedPorts"] = exposed
    return body


def checkpoint_of(config: api.PodSandboxConfig, host_network: bool) -> SandboxCheckpoint:
    return SandboxCheckpoint(
        name=config.metadata.name,
        namespace=config.metadata.namespace,
        uid=config.metadata.uid,
        port_mappings=tuple(
            PortMapping(
                protocol=network.protocol_name(mapping.protocol).upper(),
                container_port=mapping.container_port,
                host_port=mapping.host_port,
                host_ip=mapping.host_ip,
            )
            for mapping in config.port_mappings
        ),
        host_network=host_network,
    )


def host_port_clash(wanted: SandboxCheckpoint, running: Mapping[str, SandboxCheckpoint]
                    ) -> tuple[PortMapping, str] | None:
    """A host port of `wanted` that a running pod holds already, and that pod's ID: portmap would
    add the second rule silently, and the first pod would keep the traffic."""
    def overlaps(first: PortMapping, second: PortMapping) -> bool:  # dockershim wrote "tcp"
        return (first.protocol.upper(), first.host_port) == (second.protocol.upper(), second.host_port) and (
            network.host_addresses_overlap(first.host_ip, second.host_ip))

    for sandbox_id, held in running.items():
        if held.host_network:
            continue
        for mapping in wanted.port_mappings:
            if mapping.host_port and any(overlaps(mapping, other) for other in held.port_mappings if other.host_port):
                return mapping, sandbox_id
    return None


def cni_capabilities(config: api.PodSandboxConfig, pod_cidr: str) -> dict[str, Any]:
    """What the pod offers its CNI plugins: host ports, bandwidth annotations, pod CIDR, DNS."""
    dns = None
    if config.HasField("dns_config"):
        dns = {"servers": list(config.dns_config.servers), "searches": list(config.dns_config.searches),
               "options": list(config.dns_config.options)}
    try:
        return runtime_capabilities(checkpoint_of(config, False).port_mappings, config.annotations, pod_cidr, dns)
    except ValueError as exc:
        raise invalid_argument(str(exc)) from None


def _metadata(parsed: naming.SandboxName) -> api.PodSandboxMetadata:
    return api.PodSandboxMetadata(
        name=parsed.name, namespace=parsed.namespace, uid=parsed.uid, attempt=parsed.attempt
    )


def sandbox_from_list_entry(entry: dict[str, Any]) -> api.PodSandbox | None:
    """A CRI sandbox from one entry of Docker's container list; None when the name is not ours."""
    names = entry.get("Names") or []
    try:
        parsed = naming.parse_sandbox_name(names[0])
    except (IndexError, ValueError) as exc:
        log.debug("skipping container %s in the sandbox list: %s", entry.get("Id"), exc)
        return None
    docker_labels = entry.get("Labels") or {}
    cri_labels, annotations = labels.extract_labels(docker_labels)
    # Paused (behind the shim's back) is READY, as PodSandboxStatus (Docker's Running) and cri-dockerd say.
    running = entry.get("State") in ("running", "paused") if "State" in entry else \
        str(entry.get("Status", "")).startswith("Up")
    return api.PodSandbox(
        id=entry["Id"],
        metadata=_metadata(parsed),
        state=api.SANDBOX_READY if running else api.SANDBOX_NOTREADY,
        created_at=int(entry.get("Created") or 0) * 1_000_000_000,
        labels=cri_labels,
        annotations=annotations,
        runtime_handler=docker_labels.get(labels.RUNTIME_HANDLER_LABEL, ""),
    )


def _metadata_of_checkpoint(checkpoint: SandboxCheckpoint) -> api.PodSandboxMetadata:
    return api.PodSandboxMetadata(name=checkpoint.name, namespace=checkpoint.namespace, uid=checkpoint.uid)


def sandbox_from_checkpoint(sandbox_id: str, checkpoint: SandboxCheckpoint) -> api.PodSandbox:
    """A sandbox whose container is gone: NOTREADY, so the kubelet stops and removes it."""
    return api.PodSandbox(
        id=sandbox_id,
        metadata=_metadata_of_checkpoint(checkpoint),
        state=api.SANDBOX_NOTREADY,
        # In whole seconds, as Docker lists the others: a pod's later attempt made in the same
        # second must not list older than this one, or the kubelet keeps this one instead.
        created_at=checkpoint.created_at // 1_000_000_000 * 1_000_000_000,
    )


def status_from_checkpoint(sandbox_id: str, checkpoint: SandboxCheckpoint) -> api.PodSandboxStatus:
    """The status of a sandbox whose container is gone: what its checkpoint tells, NOTREADY.
    crictl asks for it before it removes a pod (dockershim's NOT_FOUND left such pods to the
    kubelet), and its client refuses a status without the pod's uid or creation time, which the
    checkpoints of dockershim and cri-dockerd do not hold."""
    network_mode = api.NODE if checkpoint.host_network else api.POD
    return api.PodSandboxStatus(
        id=sandbox_id,
        metadata=_metadata_of_checkpoint(checkpoint),
        state=api.SANDBOX_NOTREADY,
        created_at=checkpoint.created_at,
        linux=api.LinuxPodSandboxStatus(namespaces=api.Namespace(options=api.NamespaceOption(network=network_mode))),
    )


def status_of_removed(sandbox_id: str, event_attributes: Mapping[str, str]) -> api.PodSandboxStatus | None:
    """What the event of a sandbox's removal still tells of it (its name and labels): the kubelet's
    evented PLEG skips an event without the pod's metadata. None when the name is not a sandbox's."""
    try:
        parsed = naming.parse_sandbox_name(event_attributes.get("name") or "")
    except ValueError:
        return None
    docker_labels = {key: value for key, value in event_attributes.items() if key not in DOCKER_EVENT_ATTRIBUTES}
    cri_labels, annotations = labels.extract_labels(docker_labels)
    return api.PodSandboxStatus(id=sandbox_id, metadata=_metadata(parsed), state=api.SANDBOX_NOTREADY,
                                labels=cri_labels, annotations=annotations)


def matches_filter(sandbox: api.PodSandbox, sandbox_filter: api.PodSandboxFilter | None) -> bool:
    if sandbox_filter is None:
        return True
    if sandbox_filter.id and not sandbox.id.startswith(sandbox_filter.id):
        return False
    if sandbox_filter.HasField("state") and sandbox.state != sandbox_filter.state.state:
        return False
    return labels.matches_selector(sandbox.labels, sandbox_filter.label_selector)


def status_from_inspect(inspect: dict[str, Any], ips: list[str]) -> api.PodSandboxStatus:
    docker_labels = (inspect.get("Config") or {}).get("Labels") or {}
    host_config = inspect.get("HostConfig") or {}
    cri_labels, annotations = labels.extract_labels(docker_labels)
    try:
        metadata = _metadata(naming.parse_sandbox_name(inspect.get("Name", "")))
    except ValueError as exc:
        raise not_found(f"container {inspect.get('Id')} is not a pod sandbox: {exc}") from exc
    return api.PodSandboxStatus(
        id=inspect["Id"],
        metadata=metadata,
        state=api.SANDBOX_READY if (inspect.get("State") or {}).get("Running") else api.SANDBOX_NOTREADY,
        created_at=parse_docker_time(inspect.get("Created")),
        network=api.PodSandboxNetworkStatus(
            ip=ips[0] if ips else "", additional_ips=[api.PodIP(ip=ip) for ip in ips[1:]]
        ),
        linux=api.LinuxPodSandboxStatus(
            namespaces=api.Namespace(
                options=namespace_options_of(
                    host_config.get("NetworkMode", ""), host_config.get("PidMode", ""), host_config.get("IpcMode", ""),
                    docker_labels.get(labels.PID_NAMESPACE_LABEL, ""),
                )
            )
        ),
        labels=cri_labels,
        annotations=annotations,
        runtime_handler=docker_labels.get(labels.RUNTIME_HANDLER_LABEL, ""),
    )


def verbose_info(inspect: dict[str, Any], ips: list[str], checkpoint: SandboxCheckpoint | None,
                 cni_result: dict[str, Any] | None = None) -> dict[str, str]:
    """What crictl inspectp shows beyond the status: the Docker side of the sandbox, and what its
    CNI plugins answered (as containerd shows it)."""
    state = inspect.get("State") or {}
    host_config = inspect.get("HostConfig") or {}
    detail = {
        "name": inspect.get("Name", "").removeprefix("/"),
        "image": (inspect.get("Config") or {}).get("Image"),
        "imageID": inspect.get("Image"),
        "pid": state.get("Pid"),
        "dockerState": {key: state.get(key) for key in ("Status", "ExitCode", "Error", "StartedAt", "FinishedAt")},
        "runtime": host_config.get("Runtime"),
        "networkMode": host_config.get("NetworkMode"),
        "ipcMode": host_config.get("IpcMode"),
        "pidMode": host_config.get("PidMode"),
        "cgroupParent": host_config.get("CgroupParent"),
        "oomScoreAdj": host_config.get("OomScoreAdj"),
        "sysctls": host_config.get("Sysctls") or {},
        "securityOpt": host_config.get("SecurityOpt") or [],
        "portBindings": host_config.get("PortBindings") or {},
        "resolvConfPath": inspect.get("ResolvConfPath"),
        "ips": ips,
        "checkpoint": None if checkpoint is None else {
            "name": checkpoint.name,
            "namespace": checkpoint.namespace,
            "hostNetwork": checkpoint.host_network,
            "portMappings": [vars(mapping) for mapping in checkpoint.port_mappings],
        },
    }
    if cni_result is not None:
        detail["cniResult"] = cni_result
    return {"info": json.dumps(detail, sort_keys=True)}

"""Containers, pure: a CRI ContainerConfig to Docker's create body, Docker's views back to CRI.

No I/O here. What must be looked up first (the sandbox's pause container, Docker's
capabilities, the node's capability bounding set, image volumes made ready on disk) comes in
as values, so every rule, and every refusal of a bad request, is table-tested without a daemon.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import labels, naming
from .api import api_pb2 as api
from .cgroups import docker_cgroup_parent, effective_oom_score_adj
from .errors import failed_precondition, invalid_argument
from .security_context import (
    DOCKER_20_10_CAPABILITIES, container_namespace_modes, container_security, is_number, privileged_runs,
    read_profile,
)
from .timestamps import parse_docker_time

# Every container gets a 64 MiB /dev/shm unless it shares the sandbox's (dockershim's default).
SHM_SIZE_BYTES = 64 * 1024 * 1024
# Docker's API version from which a read-only bind is recursively read-only unless told not to.
RECURSIVE_READ_ONLY_API = (1, 44)

_PROPAGATION_TO_DOCKER = {
    api.PROPAGATION_PRIVATE: "",
    api.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api.PROPAGATION_BIDIRECTIONAL: "rshared",
}
_PROPAGATION_FROM_DOCKER = {"rslave": api.PROPAGATION_HOST_TO_CONTAINER, "slave": api.PROPAGATION_HOST_TO_CONTAINER,
                            "rshared": api.PROPAGATION_BIDIRECTIONAL, "shared": api.PROPAGATION_BIDIRECTIONAL}
# Docker's list states of containers that no longer run.
_EXITED_STATES = ("exited", "dead", "removing")

REASON_OOM_KILLED = "OOMKilled"
REASON_COMPLETED = "Completed"
REASON_ERROR = "Error"
REASON_CANNOT_RUN = "ContainerCannotRun"


# --- CreateContainer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxView:
    """What a container takes from its pod's pause container."""

    id: str
    host_network: bool
    runtime: str = ""


@dataclass(frozen=True)
class NodeView:
    """What Docker and the node allow, looked up once and passed in."""

    cgroup_driver: str = "cgroupfs"
    api_version: str = "1.41"
    lacking_capabilities: frozenset[str] = frozenset()
    can_lower_oom_score: bool = True
    selinux_enabled: bool = False
    apparmor_enabled: bool = False
    cdi_supported: bool = False
    log_config: Mapping[str, Any] = field(default_factory=dict)
    host_devices: tuple[str, ...] = ()  # looked up for a privileged container only


@dataclass(frozen=True)
class ImageVolume:
    """An image volume made ready on the node: the directory to bind, and the image it came from."""

    host_path: str
    image_id: str


def log_path_of(config: api.ContainerConfig, sandbox_config: api.PodSandboxConfig) -> str:
    """The CRI log file: `log_directory/log_path`, "" when the kubelet asked for none."""
    if not config.log_path:
        return ""
    if not sandbox_config.log_directory:
        raise invalid_argument("log_path is set but the sandbox config has no log_directory")
    if not os.path.isabs(sandbox_config.log_directory):  # else written relative to the shim's directory
        raise invalid_argument(f"log_directory {sandbox_config.log_directory!r} must be an absolute path")
    if os.path.isabs(config.log_path) or ".." in config.log_path.split("/"):
        raise invalid_argument(f"log_path {config.log_path!r} must be relative to log_directory, without '..'")
    return os.path.join(sandbox_config.log_directory, config.log_path)


def container_name_of(config: api.ContainerConfig, sandbox_config: api.PodSandboxConfig) -> str:
    metadata = sandbox_config.metadata
    return naming.container_name(
        config.metadata.name, metadata.name, metadata.namespace, metadata.uid, config.metadata.attempt
    )


def command_line(arguments: Sequence[str], field: str) -> list[str]:
    """The arguments of a process as they are; INVALID_ARGUMENT for one holding a NUL byte, which
    execve would cut there (ExecSync ran `echo 'a'` for `echo 'a\0b'`)."""
    for argument in arguments:
        if "\x00" in argument:
            raise invalid_argument(f"{field}: argument {argument[:200]!r} holds a NUL byte")
    return list(arguments)


def environment(envs: Sequence[api.KeyValue]) -> list[str]:
    """Docker's `KEY=value` list; values arrive as bytes and must be UTF-8 (Docker speaks JSON)."""
    result = []
    for env in envs:
        if not env.key or "=" in env.key or "\x00" in env.key:
            raise invalid_argument(f"environment variable name {env.key!r} is empty or holds '=' or NUL")
        try:
            value = env.value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise invalid_argument(f"environment variable {env.key}: value is not UTF-8 ({exc.reason})") from exc
        if "\x00" in value:
            raise invalid_argument(f"environment variable {env.key}: value holds a NUL byte")
        result.append(f"{env.key}={value}")
    return result


def _api_at_least(version: str, wanted: tuple[int, int]) -> bool:
    try:
        return tuple(int(part) for part in version.split(".")[:2]) >= wanted
    except ValueError:
        return False


def docker_mounts(
    mounts: Sequence[api.Mount], image_volumes: Mapping[int, ImageVolume], node: NodeView
) -> tuple[list[dict[str, Any]], list[str]]:
    """(typed Mounts, legacy Binds): typed binds, except SELinux-relabelled ones, which only Binds can say.

    Read-only binds are read-only at the top only, as Kubernetes means (Docker 25 made them
    recursive by default for API 1.44+, which broke pods: cri-dockerd#309).
    """
    typed: list[dict[str, Any]] = []
    binds: list[str] = []
    for index, mount in enumerate(mounts):
        target = mount.container_path
        if not target or not os.path.isabs(target):
            raise invalid_argument(f"mount {index}: container_path {target!r} must be an absolute path")
        if len(mount.uidMappings) or len(mount.gidMappings):
            raise invalid_argument(
                f"mount {target}: ID-mapped mounts need a user namespace, which Docker cannot give a pod"
            )
        if mount.recursive_read_only:
            raise invalid_argument(
                f"mount {target}: recursive read-only mounts are not supported "
                f"(RuntimeHandlerFeatures.recursive_read_only_mounts is false)"
            )
        if mount.mount_options:  # dropped, a noexec or nosuid asked for would silently not hold
            raise invalid_argument(
                f"mount {target}: mount options {', '.join(mount.mount_options)} are not supported: Docker's bind "
                f"mounts take none (RuntimeFeatures.mount_options is false)"
            )
        if mount.propagation not in _PROPAGATION_TO_DOCKER:
            raise invalid_argument(f"mount {target}: unknown propagation {mount.propagation}")
        propagation = _PROPAGATION_TO_DOCKER[mount.propagation]
        if mount.HasField("image") and mount.image.image:
            source = image_volumes[index].host_path
            read_only = True
        else:
            source = mount.host_path
            read_only = mount.readonly
            if not source or not os.path.isabs(source):
                raise invalid_argument(f"mount {target}: host_path {source!r} must be an absolute path")
        if mount.selinux_relabel and node.selinux_enabled:
            if ":" in source or ":" in target or "," in source or "," in target:
                raise invalid_argument(f"mount {source}:{target}: a relabelled path cannot hold ':' or ','")
            options = ["ro" if read_only else "rw", "Z"] + ([propagation] if propagation else [])
            binds.append(f"{source}:{target}:{','.join(options)}")
            continue
        entry: dict[str, Any] = {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}
        bind_options: dict[str, Any] = {}
        if propagation:
            bind_options["Propagation"] = propagation
        if read_only and _api_at_least(node.api_version, RECURSIVE_READ_ONLY_API):
            bind_options["ReadOnlyNonRecursive"] = True
        if bind_options:
            entry["BindOptions"] = bind_options
        typed.append(entry)
    return typed, binds


def docker_devices(devices: Sequence[api.Device]) -> list[dict[str, str]]:
    result = []
    for device in devices:
        if not device.host_path or not os.path.isabs(device.host_path):
            raise invalid_argument(f"device host_path {device.host_path!r} must be an absolute path")
        if device.container_path and not os.path.isabs(device.container_path):
            raise invalid_argument(f"device {device.host_path}: container_path {device.container_path!r} "
                                   f"must be an absolute path")
        permissions = device.permissions or "rwm"
        if not permissions or set(permissions) - set("rwm"):
            raise invalid_argument(f"device {device.host_path}: permissions {permissions!r} must be made of r, w, m")
        result.append({
            "PathOnHost": device.host_path,
            "PathInContainer": device.container_path or device.host_path,
            "CgroupPermissions": permissions,
        })
    return result


def docker_resources(resources: api.LinuxContainerResources, can_lower_oom_score: bool) -> dict[str, Any]:
    """CPU, memory (swap equal to memory unless a larger swap limit is asked), OOM score, cpusets.

    Docker has no way to set hugepage limits or cgroup v2 `unified` keys; those are not applied.
    """
    for name in ("cpu_period", "cpu_shares", "memory_limit_in_bytes"):
        if getattr(resources, name) < 0:
            raise invalid_argument(f"resources.{name} {getattr(resources, name)} is negative")
    if resources.memory_swap_limit_in_bytes < -1:  # -1: unlimited swap (the kubelet's UnlimitedSwap)
        raise invalid_argument(
            f"resources.memory_swap_limit_in_bytes {resources.memory_swap_limit_in_bytes} is below -1 (unlimited)")
    if resources.cpu_shares and not 2 <= resources.cpu_shares <= 262144:  # the cgroup's range, as runc checks it
        raise invalid_argument(f"resources.cpu_shares {resources.cpu_shares} is outside 2..262144")
    if resources.cpu_quota < -1:
        raise invalid_argument(f"resources.cpu_quota {resources.cpu_quota} is below -1 (unlimited)")
    if not -1000 <= resources.oom_score_adj <= 1000:
        raise invalid_argument(f"resources.oom_score_adj {resources.oom_score_adj} is outside -1000..1000")
    result: dict[str, Any] = {}
    if resources.cpu_period:
        result["CpuPeriod"] = resources.cpu_period
    if resources.cpu_quota:  # -1 takes a quota off (the kubelet's, for a container given whole CPUs)
        result["CpuQuota"] = resources.cpu_quota
    if resources.cpu_shares:
        result["CpuShares"] = resources.cpu_shares
    memory = resources.memory_limit_in_bytes
    if memory:
        swap = resources.memory_swap_limit_in_bytes
        if swap > 0 and swap < memory:
            raise invalid_argument(
                f"resources.memory_swap_limit_in_bytes {swap} is below memory_limit_in_bytes {memory}: "
                f"Docker's swap limit counts memory and swap together"
            )
        result["Memory"] = memory
        result["MemorySwap"] = swap or memory
    if resources.cpuset_cpus:
        result["CpusetCpus"] = resources.cpuset_cpus
    if resources.cpuset_mems:
        result["CpusetMems"] = resources.cpuset_mems
    result["OomScoreAdj"] = effective_oom_score_adj(resources.oom_score_adj, can_lower_oom_score)
    return result


def update_body(resources: api.LinuxContainerResources) -> dict[str, Any]:
    """Docker's update body: what `docker update` can change of `docker_resources`."""
    body = docker_resources(resources, can_lower_oom_score=True)
    body.pop("OomScoreAdj")
    return body


def create_body(
    config: api.ContainerConfig,
    sandbox_config: api.PodSandboxConfig,
    sandbox: SandboxView,
    node: NodeView,
    image_volumes: Mapping[int, ImageVolume] | None = None,
    load_profile: Any = read_profile,
) -> dict[str, Any]:
    """Docker's create body for `config` in `sandbox`; every check that can refuse it is here.

    Kubernetes' command is Docker's entrypoint and its args Docker's cmd: args alone keep the
    image's entrypoint, a command alone drops the image's cmd (Docker's merge does both).
    """
    if not config.image.image:
        raise invalid_argument("config.image.image is empty")
    if config.working_dir and not os.path.isabs(config.working_dir):
        raise invalid_argument(f"working_dir {config.working_dir!r} must be an absolute path")
    linux = config.linux
    context = linux.security_context
    docker_knows = None if _api_at_least(node.api_version, (1, 42)) else DOCKER_20_10_CAPABILITIES
    security = container_security(context, node.lacking_capabilities, load_profile,
                                  privileged_runs(node.lacking_capabilities, sandbox.runtime), docker_knows)
    profiles = [option.removeprefix("apparmor=") for option in security.host_config["SecurityOpt"]
                if option.startswith("apparmor=") and option != "apparmor=unconfined"]
    if profiles and not node.apparmor_enabled:  # Docker would run the container unconfined, saying nothing
        raise failed_precondition(f"AppArmor profile {profiles[0]!r} asked for, but AppArmor is not enabled on "
                                  f"this node (Docker reports no apparmor security option)")
    namespaces = container_namespace_modes(
        context.namespace_options if context.HasField("namespace_options") else None,
        sandbox.id,
        sandbox.host_network,
    )
    mounts, binds = docker_mounts(config.mounts, image_volumes or {}, node)
    if config.CDI_devices and not node.cdi_supported:
        raise failed_precondition(
            "CDI devices need Docker Engine 25 or newer with CDI enabled (the `cdi` feature in daemon.json); "
            "this engine cannot inject them"
        )
    host_config: dict[str, Any] = {
        **security.host_config,
        **namespaces,
        **docker_resources(linux.resources, node.can_lower_oom_score),
        "ShmSize": SHM_SIZE_BYTES,
        "LogConfig": dict(node.log_config),
    }
    if mounts:
        host_config["Mounts"] = mounts
    if binds:
        host_config["Binds"] = binds
    devices = docker_devices(config.devices)
    if security.privileged_in_parts:  # the node's devices, as Docker's Privileged gives them
        asked = {device["PathInContainer"] for device in devices}
        devices += [{"PathOnHost": path, "PathInContainer": path, "CgroupPermissions": "rwm"}
                    for path in node.host_devices if path not in asked]
    if devices:
        host_config["Devices"] = devices
    if config.CDI_devices:
        host_config["DeviceRequests"] = [
            {"Driver": "cdi", "DeviceIDs": [device.name for device in config.CDI_devices]}
        ]
    if sandbox_config.linux.cgroup_parent:
        host_config["CgroupParent"] = docker_cgroup_parent(sandbox_config.linux.cgroup_parent, node.cgroup_driver)
    if sandbox.runtime:
        host_config["Runtime"] = sandbox.runtime

    container_labels = labels.container_labels(
        config.labels, config.annotations, sandbox.id, log_path_of(config, sandbox_config),
        config.image.user_specified_image,
    )
    if security.privileged_in_parts:
        container_labels[labels.PRIVILEGED_IN_PARTS_LABEL] = "true"
    body: dict[str, Any] = {
        "Image": config.image.image,
        "Env": environment(config.envs),
        "Labels": container_labels,
        "OpenStdin": config.stdin,
        "StdinOnce": config.stdin_once,
        "Tty": config.tty,
        "HostConfig": host_config,
    }
    if config.command:
        body["Entrypoint"] = command_line(config.command, "command")
    if config.args:
        body["Cmd"] = command_line(config.args, "args")
    if config.working_dir:
        body["WorkingDir"] = config.working_dir
    if security.user:
        body["User"] = security.user
    if config.stop_signal:
        body["StopSignal"] = docker_stop_signal(config.stop_signal)
    return body


def docker_stop_signal(value: int) -> str:
    """Docker's name of a CRI signal: the CRI's SIGRTMINPLUS1 is Docker's SIGRTMIN+1."""
    try:
        name = api.Signal.Name(value)
    except ValueError:
        raise invalid_argument(f"stop_signal {value} is not one of the CRI's signals") from None
    return name.replace("PLUS", "+").replace("MINUS", "-")


def cri_stop_signal(docker_value: str) -> api.Signal:
    """The CRI signal of a Docker StopSignal (an image's STOPSIGNAL: `SIGTERM`, `TERM`, `15`,
    `SIGRTMIN+3`); RUNTIME_DEFAULT for one the CRI has no name for."""
    text = docker_value.strip().upper()
    if text.isascii() and text.isdigit():
        number = int(text)
        if signal.SIGRTMIN <= number <= signal.SIGRTMAX:  # the CRI counts 15 up from RTMIN, 14 down from RTMAX
            offset = number - signal.SIGRTMIN
            text = "SIGRTMIN" if offset == 0 else f"SIGRTMIN+{offset}" if offset <= 15 else (
                f"SIGRTMAX-{signal.SIGRTMAX - number}" if number < signal.SIGRTMAX else "SIGRTMAX")
        else:
            try:
                text = signal.Signals(number).name
            except ValueError:
                return api.RUNTIME_DEFAULT
    if not text.startswith("SIG"):
        text = "SIG" + text
    name = text.replace("+", "PLUS").replace("-", "MINUS")
    return api.Signal.Value(name) if name in api.Signal.keys() else api.RUNTIME_DEFAULT


# --- ContainerStatus ------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    state: api.ContainerState
    reason: str = ""
    message: str = ""
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0


def state_of(docker_state: Mapping[str, Any], created_at: int) -> State:
    """dockershim's reading of Docker's state.

    Running is RUNNING. A finish time means EXITED, with reason OOMKilled, Completed (exit 0)
    or Error. No finish time but an exit code means the start failed: EXITED with
    ContainerCannotRun, started and finished at the creation time. Anything else is CREATED.
    """
    started = parse_docker_time(docker_state.get("StartedAt"))
    finished = parse_docker_time(docker_state.get("FinishedAt"))
    exit_code = int(docker_state.get("ExitCode") or 0)
    message = docker_state.get("Error") or ""
    if docker_state.get("Running"):
        return State(api.CONTAINER_RUNNING, started_at=started)
    if finished:
        finished = max(finished, started)  # Docker may stamp a very short run's start after its exit
        if docker_state.get("OOMKilled"):
            reason = REASON_OOM_KILLED
        elif exit_code == 0:
            reason = REASON_COMPLETED
        else:
            reason = REASON_ERROR
        return State(api.CONTAINER_EXITED, reason, message, started, finished, exit_code)
    if exit_code:
        return State(api.CONTAINER_EXITED, REASON_CANNOT_RUN, message, created_at, created_at, exit_code)
    return State(api.CONTAINER_CREATED)


def mounts_of(docker_mounts_: Sequence[Mapping[str, Any]], image_volume_root: str) -> list[api.Mount]:
    """The container's bind mounts as CRI reports them; image volumes name their image."""
    result = []
    for mount in docker_mounts_:
        if mount.get("Type") != "bind":
            continue
        source = mount.get("Source", "")
        entry = api.Mount(
            container_path=mount.get("Destination", ""),
            host_path=source,
            readonly=not mount.get("RW", True),
            selinux_relabel="z" in (mount.get("Mode") or "").lower(),
            propagation=_PROPAGATION_FROM_DOCKER.get(mount.get("Propagation") or "", api.PROPAGATION_PRIVATE),
        )
        image_id = image_volume_id(source, image_volume_root)
        if image_id:
            entry.host_path = ""
            entry.image.CopyFrom(api.ImageSpec(image=image_id, image_ref=image_id))
        result.append(entry)
    return result


def image_volume_id(host_path: str, image_volume_root: str) -> str:
    """`sha256:<hex>` when `host_path` lies in an image volume under `image_volume_root`, else ""."""
    if not image_volume_root or not host_path.startswith(image_volume_root.rstrip("/") + "/"):
        return ""
    digest = host_path[len(image_volume_root.rstrip("/")) + 1:].split("/", 1)[0]
    return f"sha256:{digest}" if len(digest) == 64 else ""


def resources_of(host_config: Mapping[str, Any]) -> api.ContainerResources:
    swap = int(host_config.get("MemorySwap") or 0)
    return api.ContainerResources(linux=api.LinuxContainerResources(
        cpu_period=int(host_config.get("CpuPeriod") or 0),
        cpu_quota=int(host_config.get("CpuQuota") or 0),
        cpu_shares=int(host_config.get("CpuShares") or 0),
        memory_limit_in_bytes=int(host_config.get("Memory") or 0),
        memory_swap_limit_in_bytes=max(swap, -1),  # -1: unlimited
        oom_score_adj=int(host_config.get("OomScoreAdj") or 0),
        cpuset_cpus=host_config.get("CpusetCpus") or "",
        cpuset_mems=host_config.get("CpusetMems") or "",
    ))


def initial_user_of(label: str) -> api.ContainerUser | None:
    """The identity CreateContainer labelled (`uid:gid:groups`); None without one."""
    try:
        uid_text, gid_text, groups_text = label.split(":")
        groups = [int(group) for group in groups_text.split(",") if group]
        return api.ContainerUser(linux=api.LinuxContainerUser(uid=int(uid_text), gid=int(gid_text),
                                                              supplemental_groups=groups))
    except ValueError:
        return None


def user_of(process_status: str | None, config_user: str, group_add: Sequence[str] | None) -> api.ContainerUser | None:
    """The identity of a container made without the initial-user label (by an older shim,
    dockershim or cri-dockerd).

    A running container's /proc/<pid>/status says it exactly; otherwise only a numeric Docker
    user (`uid[:gid]`, with numeric supplemental groups) can be told without the image's files.
    """
    if process_status:
        fields = dict(line.split(":", 1) for line in process_status.splitlines() if ":" in line)
        try:
            uid = int(fields["Uid"].split()[0])
            gid = int(fields["Gid"].split()[0])
            groups = [int(group) for group in fields.get("Groups", "").split()]
        except (KeyError, IndexError, ValueError):
            return None
        return api.ContainerUser(linux=api.LinuxContainerUser(uid=uid, gid=gid, supplemental_groups=groups))
    uid_text, _, gid_text = (config_user or "0").partition(":")
    if not is_number(uid_text) or (gid_text and not is_number(gid_text)):
        return None
    extra = [int(group) for group in group_add or [] if is_number(group)]
    if not gid_text and uid_text != "0":
        return None  # the primary group is in the image's /etc/passwd
    gid = int(gid_text) if gid_text else 0
    return api.ContainerUser(linux=api.LinuxContainerUser(uid=int(uid_text), gid=gid, supplemental_groups=extra))


def image_ref_of(image_inspect: Mapping[str, Any] | None, image_id: str) -> str:
    """dockershim's image_ref: `docker-pullable://repo@digest` when pulled by digest, else `docker://ID`."""
    digests = [digest for digest in (image_inspect or {}).get("RepoDigests") or [] if "@" in digest]
    if digests:
        return f"docker-pullable://{digests[0]}"
    return f"docker://{image_id}"


def image_name_of(config_image: str, image_inspect: Mapping[str, Any] | None) -> str:
    """The image as a name: what the container was created from, or the image's first tag for an ID."""
    tags = [tag for tag in (image_inspect or {}).get("RepoTags") or [] if not tag.startswith("<none>")]
    bare = config_image.removeprefix("sha256:")
    if tags and len(bare) == 64 and all(ch in "0123456789abcdef" for ch in bare):
        return tags[0]
    return config_image


def status_of(
    inspect: Mapping[str, Any],
    image_inspect: Mapping[str, Any] | None,
    image_volume_root: str,
    process_status: str | None = None,
) -> api.ContainerStatus:
    """ContainerStatus from Docker's inspect (and the image's, for its name and digest)."""
    config = inspect.get("Config") or {}
    host_config = inspect.get("HostConfig") or {}
    docker_labels = config.get("Labels") or {}
    if not labels.is_container(docker_labels):
        raise ValueError(f"{inspect.get('Id')} is not a CRI container (no {labels.CONTAINER_TYPE_LABEL} label)")
    parsed = naming.parse_container_name(inspect.get("Name", ""))
    cri_labels, annotations = labels.extract_labels(docker_labels)
    created = parse_docker_time(inspect.get("Created"))
    state = state_of(inspect.get("State") or {}, created)
    image_id = inspect.get("Image", "")
    status = api.ContainerStatus(
        id=inspect["Id"],
        metadata=api.ContainerMetadata(name=parsed.name, attempt=parsed.attempt),
        state=state.state,
        created_at=created,
        started_at=state.started_at,
        finished_at=state.finished_at,
        exit_code=state.exit_code,
        image=api.ImageSpec(
            image=image_name_of(config.get("Image", ""), image_inspect),
            user_specified_image=docker_labels.get(labels.USER_SPECIFIED_IMAGE_LABEL, ""),
        ),
        image_ref=image_ref_of(image_inspect, image_id),
        image_id=image_id,
        reason=state.reason,
        message=state.message,
        labels=cri_labels,
        annotations=annotations,
        mounts=mounts_of(inspect.get("Mounts") or [], image_volume_root),
        log_path=docker_labels.get(labels.CONTAINER_LOG_PATH_LABEL, ""),
        resources=resources_of(host_config),
    )
    user = (initial_user_of(docker_labels.get(labels.INITIAL_USER_LABEL, ""))
            or user_of(process_status, config.get("User") or "", host_config.get("GroupAdd")))
    if user is not None:
        status.user.CopyFrom(user)
    status.stop_signal = cri_stop_signal(config.get("StopSignal") or "")
    return status


def verbose_info(inspect: Mapping[str, Any], cri_log: Mapping[str, Any] | None) -> dict[str, str]:
    """What crictl inspect shows beyond the status: the Docker side of the container."""
    state = inspect.get("State") or {}
    host_config = inspect.get("HostConfig") or {}
    config = inspect.get("Config") or {}
    config_labels = config.get("Labels") or {}
    detail = {
        "sandboxID": config_labels.get(labels.SANDBOX_ID_LABEL, ""),
        "pid": state.get("Pid"),
        "name": inspect.get("Name", "").removeprefix("/"),
        "dockerState": {key: state.get(key) for key in ("Status", "ExitCode", "Error", "OOMKilled",
                                                         "StartedAt", "FinishedAt")},
        "entrypoint": config.get("Entrypoint"),
        "cmd": config.get("Cmd"),
        "user": config.get("User"),
        "runtime": host_config.get("Runtime"),
        "namespaces": {key: host_config.get(key) for key in ("NetworkMode", "IpcMode", "PidMode", "UTSMode")},
        "privileged": bool(host_config.get("Privileged")) or labels.PRIVILEGED_IN_PARTS_LABEL in config_labels,
        "privilegedInParts": labels.PRIVILEGED_IN_PARTS_LABEL in config_labels,
        "capAdd": host_config.get("CapAdd"),
        "capDrop": host_config.get("CapDrop"),
        "securityOpt": host_config.get("SecurityOpt") or [],
        "cgroupParent": host_config.get("CgroupParent"),
        "dockerLogPath": inspect.get("LogPath"),
        "criLog": dict(cri_log) if cri_log else None,
    }
    return {"info": json.dumps(detail, sort_keys=True)}


# --- ListContainers -------------------------------------------------------------------------------


def list_state_of(docker_list_state: str, cannot_run: bool) -> api.ContainerState:
    """The CRI state from Docker's list state; a container whose start failed is EXITED, not created."""
    if docker_list_state in ("running", "paused", "restarting"):
        return api.CONTAINER_RUNNING
    if docker_list_state in _EXITED_STATES or cannot_run:
        return api.CONTAINER_EXITED
    if docker_list_state == "created":
        return api.CONTAINER_CREATED
    return api.CONTAINER_UNKNOWN


def container_from_list_entry(entry: Mapping[str, Any], cannot_run: bool = False) -> api.Container | None:
    """A CRI container from one entry of Docker's list; None for containers this shim did not name."""
    docker_labels = entry.get("Labels") or {}
    try:
        parsed = naming.parse_container_name((entry.get("Names") or [""])[0])
    except ValueError:
        return None
    cri_labels, annotations = labels.extract_labels(docker_labels)
    image_id = entry.get("ImageID", "")
    return api.Container(
        id=entry["Id"],
        pod_sandbox_id=docker_labels.get(labels.SANDBOX_ID_LABEL, ""),
        metadata=api.ContainerMetadata(name=parsed.name, attempt=parsed.attempt),
        image=api.ImageSpec(
            image=entry.get("Image", ""),
            user_specified_image=docker_labels.get(labels.USER_SPECIFIED_IMAGE_LABEL, ""),
        ),
        image_ref=image_id,
        image_id=image_id,
        state=list_state_of(entry.get("State", ""), cannot_run),
        created_at=int(entry.get("Created") or 0) * 1_000_000_000,
        labels=cri_labels,
        annotations=annotations,
    )


def matches_filter(container: api.Container, container_filter: api.ContainerFilter | None) -> bool:
    if container_filter is None:
        return True
    if container_filter.id and not container.id.startswith(container_filter.id):
        return False
    if container_filter.HasField("state") and container.state != container_filter.state.state:
        return False
    if container_filter.pod_sandbox_id and not container.pod_sandbox_id.startswith(container_filter.pod_sandbox_id):
        return False
    return labels.matches_selector(container.labels, container_filter.label_selector)

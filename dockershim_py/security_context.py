"""CRI security settings to Docker's container config: user, privileges, profiles, namespaces, sysctls.

Pure conversions, table-tested without a daemon. Every check that can refuse a request happens
here, before anything is created, so a bad pod fails with INVALID_ARGUMENT and a message that
names the field, and never leaves a half-made container behind.

The pieces (user, SELinux, seccomp, AppArmor, namespaces) are separate functions so that the
container security context reuses them; the sandbox's own assembly is `sandbox_security`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .api import api_pb2 as api
from .errors import invalid_argument, unimplemented

if TYPE_CHECKING:
    from .image_accounts import Accounts

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# --- user -------------------------------------------------------------------------------------


def is_number(text: str) -> bool:
    """ASCII digits only: "²" is a digit to str.isdigit, and int() refuses it."""
    return text.isascii() and text.isdigit()


# runc's (and the kernel's) range of user and group IDs.
MAX_ID = 2**31 - 1


def checked_id(what: str, value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise invalid_argument(f"{what} {value} is outside 0..{MAX_ID}")
    return value


def docker_user(run_as_user: api.Int64Value | None, run_as_username: str, run_as_group: api.Int64Value | None) -> str:
    """Docker's `User`: `uid`, `name`, or either with `:gid`; a group needs a user."""
    user = ""
    if run_as_user is not None:
        user = str(checked_id("run_as_user", run_as_user.value))
    if run_as_username:
        user = run_as_username
    if run_as_group is not None:
        if not user:
            raise invalid_argument("run_as_group is set without run_as_user or run_as_username")
        user = f"{user}:{checked_id('run_as_group', run_as_group.value)}"
    return user


def groups_by_policy(user: str, groups: list[str], policy: int,
                     accounts: Callable[[], Accounts]) -> tuple[str, list[str]]:
    """Docker's User and GroupAdd that give the process the groups SupplementalGroupsPolicy means.

    `user` is the user the container runs as (the request's, else the image's; '' is root) and
    `groups` the request's supplemental groups. Docker adds the image's groups of the user only
    when `user` names no group: Merge then needs nothing, Strict the primary group named (an
    unknown numeric user's is 0, as runc has it). With a group named, Merge adds the groups the
    image's /etc/group lists the user in. `accounts` (the image's users and groups, read from
    Docker) is called only in those two cases.
    """
    name_or_uid, _, group = (user or "0").partition(":")
    if policy == api.Strict and not group:
        account = accounts().user(name_or_uid)
        if account is not None:
            return f"{name_or_uid}:{account.gid}", groups
        if is_number(name_or_uid):
            return f"{name_or_uid}:0", groups
        return user, groups  # an unknown name: Docker refuses the start, naming it
    if policy != api.Strict and group:
        known = accounts()
        account = known.user(name_or_uid)
        name = account.name if account is not None else "" if is_number(name_or_uid) else name_or_uid
        if not name:
            return user, groups  # a uid the image does not know is in none of its groups
        return user, groups + [str(gid) for gid in known.groups_of(name) if str(gid) not in groups]
    return user, groups


def initial_identity(user: str, groups: list[str],
                     accounts: Callable[[], Accounts]) -> tuple[int, int, list[int]] | None:
    """(uid, gid, supplemental gids) Docker's User and GroupAdd start the process with, as runc
    resolves them in the image, the primary gid first among the supplemental ones as containerd
    reports them; None where the image does not know the user or group named (the start fails).
    `accounts` (the image's, read from Docker) is called unless both ids are numbers."""
    name_or_uid, _, group = (user or "0").partition(":")
    if is_number(name_or_uid) and is_number(group):
        uid, gid = int(name_or_uid), int(group)
        return uid, gid, list(dict.fromkeys([gid] + [int(entry) for entry in groups if is_number(entry)]))
    known = accounts()
    account = known.user(name_or_uid)
    if is_number(name_or_uid):
        uid = int(name_or_uid)
    elif account is not None:
        uid = account.uid
    else:
        return None
    memberships: list[int] = []
    if is_number(group):
        gid = int(group)
    elif group:
        named = next((entry for entry in known.groups if entry.name == group), None)
        if named is None:
            return None
        gid = named.gid
    else:
        gid = account.gid if account is not None else 0
        name = account.name if account is not None else ""
        memberships = known.groups_of(name) if name else []
    return uid, gid, list(dict.fromkeys([gid] + memberships + [int(entry) for entry in groups if is_number(entry)]))


def group_add(supplemental_groups: list[int]) -> list[str]:
    return [str(checked_id("supplemental group", group)) for group in supplemental_groups]


# --- SELinux, seccomp, AppArmor -------------------------------------------------------------------


def selinux_security_opts(options: api.SELinuxOption | None) -> list[str]:
    """Docker's `label=…` options (the level keeps its commas: `s0:c1,c2`)."""
    if options is None:
        return []
    opts = []
    for key in ("user", "role", "type", "level"):
        value = getattr(options, key)
        if not value:
            continue
        if _CONTROL.search(value):
            raise invalid_argument(f"selinux_options.{key} {value!r} contains a control character")
        opts.append(f"label={key}:{value}")
    return opts


# Docker's default profile is about 20 KiB; a larger file than this is not a profile.
MAX_PROFILE_BYTES = 4 * 1024 * 1024


def read_profile(path: str) -> str:
    """A Localhost seccomp profile from the node's filesystem: a regular file only, so that a FIFO
    or a device named by mistake neither hangs the call nor fills the shim's memory."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = handle.read(MAX_PROFILE_BYTES + 1)
    if len(data) > MAX_PROFILE_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_PROFILE_BYTES} bytes")
    return data.decode("utf-8")


def _localhost_seccomp(path: str, read: Callable[[str], str]) -> list[str]:
    if not path.startswith("/"):
        raise invalid_argument(f"seccomp localhost profile {path!r} must be an absolute path on the node")
    try:
        profile = json.loads(read(path))
    except OSError as exc:
        raise invalid_argument(f"cannot read seccomp profile {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise invalid_argument(f"seccomp profile {path} is not JSON: {exc}") from exc
    return ["seccomp=" + json.dumps(profile, separators=(",", ":"))]


def seccomp_security_opts(
    profile: api.SecurityProfile | None,
    deprecated_path: str = "",
    unset: str = "runtime/default",
    read: Callable[[str], str] = read_profile,
) -> list[str]:
    """Docker's `seccomp=…` option from the CRI profile, else the deprecated path, else `unset`.

    No option at all means Docker's default profile; Localhost profiles are read on the node
    and passed inline, as Docker's API takes the profile itself, not a path.
    """
    if profile is not None:
        if profile.profile_type == api.SecurityProfile.Unconfined:
            return ["seccomp=unconfined"]
        if profile.profile_type == api.SecurityProfile.Localhost:
            return _localhost_seccomp(profile.localhost_ref, read)
        return []
    path = deprecated_path or unset
    if path == "unconfined":
        return ["seccomp=unconfined"]
    if path in ("runtime/default", "docker/default"):
        return []
    if path.startswith("localhost/"):
        return _localhost_seccomp(path[len("localhost/"):], read)
    raise invalid_argument(
        f"seccomp profile {path!r} is unknown: use unconfined, runtime/default or localhost/<absolute path>"
    )


def apparmor_security_opts(profile: api.SecurityProfile | None, deprecated_name: str = "") -> list[str]:
    """Docker's `apparmor=…` option; nothing means Docker's own default profile."""
    if profile is not None:
        if profile.profile_type == api.SecurityProfile.Unconfined:
            return ["apparmor=unconfined"]
        if profile.profile_type == api.SecurityProfile.Localhost:
            name = profile.localhost_ref.removeprefix("localhost/")
            if not name or _CONTROL.search(name):
                raise invalid_argument(f"apparmor localhost profile {profile.localhost_ref!r} is not a profile name")
            return [f"apparmor={name}"]
        return []
    if not deprecated_name or deprecated_name == "runtime/default":
        return []
    if deprecated_name == "unconfined":
        return ["apparmor=unconfined"]
    if deprecated_name.startswith("localhost/") and len(deprecated_name) > len("localhost/"):
        return [f"apparmor={deprecated_name[len('localhost/'):]}"]
    raise invalid_argument(f"apparmor profile {deprecated_name!r} is unknown")


# --- sysctls ----------------------------------------------------------------------------------

# The namespaced sysctls: Docker and the kubelet accept exactly these (IPC ones by name or
# prefix, network ones by prefix). Anything else would change the node, not the pod.
IPC_SYSCTLS = frozenset({
    "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni",
})
IPC_SYSCTL_PREFIXES = ("fs.mqueue.",)
NETWORK_SYSCTL_PREFIXES = ("net.",)
# Kubernetes' sysctl name format: segments of [a-z0-9-_] separated by dots; an interface name
# segment may hold a slash instead of a dot (net.ipv4.conf.eth0/100.rp_filter).
_SYSCTL_SEGMENT = r"[a-z0-9]([-_a-z0-9]*[a-z0-9])?"
_SYSCTL_NAME = re.compile(rf"({_SYSCTL_SEGMENT}[./])*{_SYSCTL_SEGMENT}")
MAX_SYSCTL_NAME = 253
MAX_SYSCTL_VALUE = 4096
# A value holding one of these could smuggle a second key=value to a runtime that splits on
# them (CVE-2022-0811: CRI-O's pinns split on `+` and `=`); no namespaced sysctl takes them.
# Spaces, tabs and commas stay: net.ipv4.ip_local_port_range is "32768 60999",
# net.ipv4.ip_local_reserved_ports is "8080,9148".
_FORBIDDEN_IN_VALUE = re.compile(r"[+=\x00-\x08\x0a-\x1f\x7f]")


def normalize_sysctl_name(name: str) -> str:
    """Dotted form of a slash-separated name (`net/ipv4/ip_forward`), as the kubelet converts it."""
    first_dot, first_slash = name.find("."), name.find("/")
    if first_slash != -1 and (first_dot == -1 or first_slash < first_dot):
        return name.translate(str.maketrans("./", "/."))
    return name


def sysctl_namespace(name: str) -> str | None:
    """`ipc`, `net`, or None for a sysctl that is not namespaced."""
    if name in IPC_SYSCTLS or name.startswith(IPC_SYSCTL_PREFIXES):
        return "ipc"
    if name.startswith(NETWORK_SYSCTL_PREFIXES):
        return "net"
    return None


def validate_sysctls(sysctls: Mapping[str, str], host_network: bool, host_ipc: bool) -> dict[str, str]:
    """The pod's sysctls in dotted form, after refusing any that would reach past the pod."""
    valid: dict[str, str] = {}
    for raw_name, value in sorted(sysctls.items()):
        name = normalize_sysctl_name(raw_name)
        if len(name) > MAX_SYSCTL_NAME or not _SYSCTL_NAME.fullmatch(name):
            raise invalid_argument(f"sysctl {raw_name!r} is not a valid sysctl name")
        namespace = sysctl_namespace(name)
        if namespace is None:
            raise invalid_argument(
                f"sysctl {raw_name!r} is not namespaced: a pod may set only net.*, fs.mqueue.* and the "
                f"IPC sysctls ({', '.join(sorted(IPC_SYSCTLS))})"
            )
        if namespace == "net" and host_network:
            raise invalid_argument(f"sysctl {raw_name!r} cannot be set for a pod in the host's network namespace")
        if namespace == "ipc" and host_ipc:
            raise invalid_argument(f"sysctl {raw_name!r} cannot be set for a pod in the host's IPC namespace")
        if not value or len(value) > MAX_SYSCTL_VALUE or _FORBIDDEN_IN_VALUE.search(value):
            raise invalid_argument(
                f"sysctl {raw_name!r} value {value!r} is empty, too long, or contains '+', '=' or a "
                f"control character (a value must not carry another setting)"
            )
        valid[name] = value
    return valid


# --- namespaces -------------------------------------------------------------------------------


def check_user_namespace(options: api.NamespaceOption) -> None:
    """Docker cannot give one pod a user namespace (RuntimeHandlerFeatures says so too)."""
    if options.HasField("userns_options") and options.userns_options.mode != api.NODE:
        raise invalid_argument(
            "user namespaces are not supported by dockershim-py (Docker's user namespace remapping is "
            "daemon-wide); use hostUsers: true"
        )


@dataclass(frozen=True)
class SandboxNamespaces:
    network_mode: str
    pid_mode: str
    ipc_mode: str

    @property
    def host_network(self) -> bool:
        return self.network_mode == "host"


def sandbox_namespaces(options: api.NamespaceOption | None, pod_network_mode: str) -> SandboxNamespaces:
    """The pause container's namespaces: the node's when asked for, else its own (which the pod shares).

    `pod_network_mode` is the Docker network mode of a pod that has its own network.
    """
    options = options or api.NamespaceOption()
    for kind in ("network", "pid", "ipc"):
        if getattr(options, kind) == api.TARGET:
            raise invalid_argument(f"namespace_options.{kind}: TARGET is for containers, not pod sandboxes")
    check_user_namespace(options)
    return SandboxNamespaces(
        network_mode="host" if options.network == api.NODE else pod_network_mode,
        pid_mode="host" if options.pid == api.NODE else "",
        ipc_mode="host" if options.ipc == api.NODE else "shareable",
    )


def namespace_options_of(network_mode: str, pid_mode: str, ipc_mode: str, pid_namespace: str = ""
                         ) -> api.NamespaceOption:
    """The CRI namespace options a sandbox's Docker modes stand for, with the PID namespace it
    was asked for (`pid_namespace`, POD or CONTAINER) where recorded; dockershim read CONTAINER."""
    shared_pid = pid_mode != "host" and pid_namespace == "POD"
    return api.NamespaceOption(
        network=api.NODE if network_mode == "host" else api.POD,
        pid=api.NODE if pid_mode == "host" else api.POD if shared_pid else api.CONTAINER,
        ipc=api.NODE if ipc_mode == "host" else api.POD,
    )


# --- the sandbox --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxSecurity:
    """What the pod sandbox's security context sets in Docker's create request."""

    user: str
    namespaces: SandboxNamespaces
    host_config: dict[str, Any] = field(default_factory=dict)


def sandbox_security(
    linux: api.LinuxPodSandboxConfig | None,
    pod_network_mode: str,
    load_profile: Callable[[str], str] = read_profile,
) -> SandboxSecurity:
    """User, namespaces, privileges, profiles and sysctls of a pause container.

    The pause container always runs with `no-new-privileges`; with no seccomp profile asked
    for it gets Docker's default one (dockershim did the same).
    """
    linux = linux or api.LinuxPodSandboxConfig()
    context = linux.security_context
    namespaces = sandbox_namespaces(
        context.namespace_options if context.HasField("namespace_options") else None, pod_network_mode
    )
    security_opts = ["no-new-privileges"]
    security_opts += selinux_security_opts(context.selinux_options if context.HasField("selinux_options") else None)
    security_opts += seccomp_security_opts(
        context.seccomp if context.HasField("seccomp") else None,
        context.seccomp_profile_path,
        read=load_profile,
    )
    security_opts += apparmor_security_opts(context.apparmor if context.HasField("apparmor") else None)
    host_config: dict[str, Any] = {
        "Privileged": context.privileged,
        "ReadonlyRootfs": context.readonly_rootfs,
        "SecurityOpt": security_opts,
    }
    groups = group_add(list(context.supplemental_groups))
    if groups:
        host_config["GroupAdd"] = groups
    sysctls = validate_sysctls(
        linux.sysctls, host_network=namespaces.host_network, host_ipc=namespaces.ipc_mode == "host"
    )
    if sysctls:
        host_config["Sysctls"] = sysctls
    user = docker_user(
        context.run_as_user if context.HasField("run_as_user") else None,
        "",
        context.run_as_group if context.HasField("run_as_group") else None,
    )
    return SandboxSecurity(user=user, namespaces=namespaces, host_config=host_config)


# --- containers -----------------------------------------------------------------------------------

# Linux capability names by number (include/uapi/linux/capability.h), without their CAP_ prefix.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)


# What Docker gives a container that asks for no capabilities (moby's oci/caps defaults).
DOCKER_DEFAULT_CAPABILITIES = frozenset("CAP_" + name for name in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
))


def capability_name(name: str) -> str:
    """Docker's spelling of a CRI capability (`net_admin`, `CAP_NET_ADMIN`): `CAP_NET_ADMIN`, or `ALL`."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    bare = upper.removeprefix("CAP_")
    if bare not in CAPABILITIES:
        raise invalid_argument(f"capability {name!r} is unknown: use a Linux capability name such as NET_ADMIN, or ALL")
    return "CAP_" + bare


def missing_capabilities(bounding_set: int, last_capability: int) -> frozenset[str]:
    """The capabilities the kernel has but the node's bounding set lacks (runc cannot grant them)."""
    known = min(last_capability, len(CAPABILITIES) - 1)
    return frozenset("CAP_" + CAPABILITIES[number] for number in range(known + 1) if not bounding_set >> number & 1)


def node_lacking_capabilities() -> frozenset[str]:
    """The capabilities this node's bounding set lacks (a VM may lack CAP_SYS_RESOURCE)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            bounding = next(int(line.split()[1], 16) for line in handle if line.startswith("CapBnd:"))
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
            last = int(handle.read())
    except (OSError, StopIteration, ValueError):
        return frozenset()  # cannot tell: let Docker decide
    return missing_capabilities(bounding, last)


# Where runc's own list of the host's devices (Docker's Privileged) does not look.
_NOT_HOST_DEVICES = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def host_devices(root: str = "/dev") -> tuple[str, ...]:
    """Every character and block device node under /dev, as Docker's Privileged gives a container
    (less /dev/console and /dev/ptmx, which runc makes itself)."""
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [name for name in subdirectories if name not in _NOT_HOST_DEVICES]
        for name in files:
            path = os.path.join(directory, name)
            if directory == root and name in ("console", "ptmx"):
                continue
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                found.append(path)
    return tuple(sorted(found))


@dataclass(frozen=True)
class ContainerSecurity:
    """What an application container's security context sets in Docker's create request."""

    user: str
    host_config: dict[str, Any] = field(default_factory=dict)
    # Privileged asked for, but made of its parts (see container_security): the node's devices go in too.
    privileged_in_parts: bool = False


def privileged_runs(node_lacks: frozenset[str], docker_runtime: str) -> bool:
    """Whether Docker's Privileged can run: plain runc ("" is taken for it) cannot grant every
    capability where the node's bounding set lacks one; another runtime (a wrapper) may."""
    return not node_lacks or docker_runtime not in ("", "runc")


# What a privileged container is made of where Docker's own Privileged cannot run.
UNCONFINED_SECURITY_OPTS = ["seccomp=unconfined", "apparmor=unconfined", "label=disable"]
EVERY_DEVICE_RULE = "a *:* rwm"


def container_security(
    context: api.LinuxContainerSecurityContext,
    node_lacks: frozenset[str] = frozenset(),
    load_profile: Callable[[str], str] = read_profile,
    docker_privileged_runs: bool = True,
    docker_knows: frozenset[str] | None = None,
) -> ContainerSecurity:
    """User, privileges, capabilities, profiles and proc masks of an application container.

    `node_lacks` are the capabilities missing from the node's bounding set: `ALL` then means
    every capability the node can grant. Docker gives a privileged container every capability
    whatever it drops, which plain runc cannot apply on such a node (`docker_privileged_runs` False):
    there it is made of its parts instead, every capability the node has, no seccomp, AppArmor or
    SELinux confinement, no masked or read-only /proc paths, and every device, so that a CNI or CSI daemon
    still runs; /sys stays read-only. A runtime that copes (a runc wrapper such as critest-env's)
    gets Docker's own Privileged.
    Masked and read-only paths apply only to unprivileged containers; none asked for keeps
    Docker's defaults. With no seccomp profile asked for the container is unconfined, as
    dockershim did (the kubelet always asks for one).
    """
    if context.privileged and not docker_privileged_runs:
        unprivileged = api.LinuxContainerSecurityContext()
        unprivileged.CopyFrom(context)
        unprivileged.privileged = False
        unprivileged.ClearField("seccomp")
        unprivileged.ClearField("apparmor")
        unprivileged.seccomp_profile_path = unprivileged.apparmor_profile = ""
        del unprivileged.capabilities.add_capabilities[:], unprivileged.capabilities.drop_capabilities[:]
        unprivileged.capabilities.add_capabilities.append("ALL")
        del unprivileged.masked_paths[:], unprivileged.readonly_paths[:]
        security = container_security(unprivileged, node_lacks, load_profile, docker_knows=docker_knows)
        security.host_config["SecurityOpt"] = [option for option in security.host_config["SecurityOpt"]
                                               if not option.startswith(("seccomp=", "apparmor=", "label="))]
        security.host_config["SecurityOpt"] += UNCONFINED_SECURITY_OPTS
        # Empty lists, not left out: Docker fills in its defaults for those it is not given.
        security.host_config.update(MaskedPaths=[], ReadonlyPaths=[], DeviceCgroupRules=[EVERY_DEVICE_RULE])
        return replace(security, privileged_in_parts=True)
    if context.capabilities.add_ambient_capabilities:
        raise unimplemented("ambient capabilities cannot be set through Docker Engine")
    security_opts = ["no-new-privileges"] if context.no_new_privs else []
    security_opts += selinux_security_opts(context.selinux_options if context.HasField("selinux_options") else None)
    security_opts += seccomp_security_opts(
        context.seccomp if context.HasField("seccomp") else None,
        context.seccomp_profile_path,
        unset="unconfined",
        read=load_profile,
    )
    security_opts += apparmor_security_opts(
        context.apparmor if context.HasField("apparmor") else None, context.apparmor_profile
    )
    host_config: dict[str, Any] = {
        "Privileged": context.privileged,
        "ReadonlyRootfs": context.readonly_rootfs,
        "SecurityOpt": security_opts,
    }
    if not context.privileged:
        added, dropped = docker_capabilities(
            [capability_name(name) for name in context.capabilities.add_capabilities],
            [capability_name(name) for name in context.capabilities.drop_capabilities],
            node_lacks,
            docker_knows,
        )
        if added:
            host_config["CapAdd"] = added
        if dropped:
            host_config["CapDrop"] = dropped
        if context.masked_paths:
            host_config["MaskedPaths"] = list(context.masked_paths)
        if context.readonly_paths:
            host_config["ReadonlyPaths"] = list(context.readonly_paths)
    groups = group_add(list(context.supplemental_groups))
    if groups:
        host_config["GroupAdd"] = groups
    user = docker_user(
        context.run_as_user if context.HasField("run_as_user") else None,
        context.run_as_username,
        context.run_as_group if context.HasField("run_as_group") else None,
    )
    return ContainerSecurity(user=user, host_config=host_config)


# The capabilities Docker 20.10 (API 1.41) knows: it refuses others by name, in CapDrop too, and never gives them.
DOCKER_20_10_CAPABILITIES = frozenset("CAP_" + name for name in CAPABILITIES[:CAPABILITIES.index("AUDIT_READ") + 1])


def docker_capabilities(added: list[str], dropped: list[str], node_lacks: frozenset[str],
                        docker_knows: frozenset[str] | None = None) -> tuple[list[str], list[str]]:
    """(CapAdd, CapDrop) giving what containerd and CRI-O give: ALL added, then ALL dropped, then
    the named ones added, then the named ones dropped. Docker lets an added ALL win over a dropped
    one, and a named add over the same drop.

    A named drop of a capability Docker would not give anyway is left out: Docker 20.10 refuses
    names it does not know (PERFMON, BPF, CHECKPOINT_RESTORE), though it never grants them.
    """
    named_added = [name for name in added if name != "ALL" and name not in dropped]
    if "ALL" in dropped:
        return named_added, ["ALL"]
    if "ALL" in added:
        drops = dropped + sorted(node_lacks - set(dropped))
        return ["ALL"], [name for name in drops if docker_knows is None or name in docker_knows]
    return named_added, [name for name in dropped if name in DOCKER_DEFAULT_CAPABILITIES]


_CONTAINER_ID = re.compile(r"[0-9a-f]{1,64}")


def container_namespace_modes(
    options: api.NamespaceOption | None, sandbox_id: str, sandbox_host_network: bool
) -> dict[str, str]:
    """Docker's namespace modes of a container in sandbox `sandbox_id`.

    Network and IPC are always the sandbox's (on the host network the container also takes the
    host's UTS namespace, so its hostname is the node's); PID follows the options: POD joins
    the sandbox, CONTAINER gets its own, NODE the host's, TARGET another container's.
    """
    options = options or api.NamespaceOption()
    check_user_namespace(options)
    join = f"container:{sandbox_id}"
    modes = {"NetworkMode": join, "IpcMode": join}
    if options.pid == api.NODE:
        modes["PidMode"] = "host"
    elif options.pid == api.POD:
        modes["PidMode"] = join
    elif options.pid == api.TARGET:
        if not _CONTAINER_ID.fullmatch(options.target_id):
            raise invalid_argument(
                f"namespace_options.pid is TARGET, so target_id must be a container ID, not {options.target_id!r}"
            )
        modes["PidMode"] = f"container:{options.target_id}"
    if sandbox_host_network:
        modes["UTSMode"] = "host"
    return modes

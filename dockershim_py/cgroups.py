"""What the node's cgroups and kernel allow: cgroup parent names per driver, OOM score limits.

Pure conversions plus one read of /proc at start-up; shared by sandboxes and containers.
"""

from __future__ import annotations

import posixpath

from .errors import invalid_argument

CAP_SYS_RESOURCE = 24


def _systemd_escape(part: str) -> str:
    """systemd uses '-' for nesting in slice names, so the kubelet turns it into '_' in parts."""
    return part.replace("-", "_")


def docker_cgroup_parent(cgroup_parent: str, driver: str) -> str:
    """The CgroupParent Docker expects for the kubelet's `cgroup_parent` under Docker's driver.

    With systemd Docker wants a slice name: a systemd-style path (`/kubepods.slice/…/x.slice`)
    gives its last element, as dockershim did; a cgroupfs-style path (`/kubepods/burstable/podX`)
    is converted the kubelet's way (`kubepods-burstable-podX.slice`), instead of failing in runc.
    With cgroupfs any path works as it is.
    """
    if not cgroup_parent:
        return ""
    parts = [part for part in cgroup_parent.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise invalid_argument(f"cgroup_parent {cgroup_parent!r} must not contain '.' or '..' elements")
    if driver != "systemd":
        return cgroup_parent
    last = posixpath.basename(cgroup_parent.rstrip("/"))
    if last.endswith(".slice"):
        return last
    return "-".join(_systemd_escape(part) for part in parts) + ".slice"


def capability_in_bounding_set(proc_status: str, capability: int) -> bool:
    """Whether `CapBnd` in a /proc/<pid>/status text holds `capability`."""
    for line in proc_status.splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> capability & 1)
    return False


def can_lower_oom_score() -> bool:
    """Lowering an OOM score adjustment below 0 takes CAP_SYS_RESOURCE; runc fails without it."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            return capability_in_bounding_set(handle.read(), CAP_SYS_RESOURCE)
    except OSError:
        return True  # cannot tell: let Docker decide


def effective_oom_score_adj(requested: int, lowering_allowed: bool) -> int:
    """`requested`, or 0 in its place when it is negative and the host cannot lower OOM scores."""
    if requested < 0 and not lowering_allowed:
        return 0
    return requested

"""Containers in pod sandboxes: CreateContainer, StartContainer, StopContainer, RemoveContainer,
ListContainers, ContainerStatus, UpdateContainerResources and ReopenContainerLog.

Each method reads top to bottom as the steps the CRI asks for; the conversions are pure, in
`container_convert`. Containers are Docker containers named and labelled exactly as dockershim
named them, logging to Docker's json-file driver, from which `logs` writes the CRI log file.
Stop and Remove of a container that is already gone succeed, as the kubelet retries them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc

from . import labels, naming
from .api import api_pb2 as api
from .cgroup_stats import read_kernel_file
from .cgroups import can_lower_oom_score
from .config import Config
from .container_convert import (
    REASON_CANNOT_RUN,
    ImageVolume,
    NodeView,
    SandboxView,
    container_from_list_entry,
    container_name_of,
    create_body,
    matches_filter,
    state_of,
    status_of,
    update_body,
    verbose_info,
)
from .docker_client import DockerClient
from .events import ConvertedEntries
from .errors import CRIError, failed_precondition, invalid_argument, not_found
from .image_accounts import ACCOUNT_FILES_LABEL, Accounts, ImageAccounts
from .image_volume import EXPORT_LABEL, ImageVolumes
from .logs import LogManager
from .security_context import (
    groups_by_policy, host_devices, initial_identity, node_lacking_capabilities, privileged_runs,
)

log = logging.getLogger(__name__)

RECOVERY_RETRY_SECONDS = 5.0
LOG_RESUME_TRIES = 60  # a started container's log copy, when Docker did not answer right after the start
# The longest grace StopContainer asks Docker for (68 years): a pod's terminationGracePeriodSeconds
# is any int64, but Docker's stop time and the wait for its answer overflow past about 9e9 s.
STOP_GRACE_MAX_SECONDS = 2**31 - 1
_CONTAINER_ID = re.compile(r"[0-9a-f]{1,64}")


def _cri_log_path(inspect: dict[str, Any]) -> str:
    """Where the kubelet wants the container's CRI log ('' for none), as CreateContainer labelled it."""
    return ((inspect.get("Config") or {}).get("Labels") or {}).get(labels.CONTAINER_LOG_PATH_LABEL, "")


# The accounts of an image that could not be read: none known, and no identity worked out from them.
UNREAD = Accounts()


class ContainerService:
    def __init__(self, docker: DockerClient, config: Config, logs: LogManager, image_volumes: ImageVolumes) -> None:
        self._docker = docker
        self._config = config
        self._logs = logs
        self._image_volumes = image_volumes
        self._accounts = ImageAccounts(docker)
        self._names = naming.NameReservations()
        self._lacking_capabilities = node_lacking_capabilities()
        self._started_at = int(time.time())  # helpers made since are this process's own, maybe in use
        self._can_lower_oom_score = can_lower_oom_score()
        # Containers whose start failed: Docker lists them as "created", CRI calls them exited.
        self._cannot_run: set[str] = set()
        self._converted: ConvertedEntries[api.Container | None] = ConvertedEntries(container_from_list_entry)
        # ContainerStatus by inspect: the kubelet asks for every running container every 10 s.
        self._statuses: ConvertedEntries[api.ContainerStatus] = ConvertedEntries(
            lambda inspect, image_and_process: status_of(inspect, image_and_process[0], self._image_volumes.root,
                                                         image_and_process[1])
        )
        if self._lacking_capabilities:
            log.warning("this node's capability bounding set lacks %s: containers asking for ALL capabilities "
                        "get all the others; on plain runc, which cannot apply every capability here, a "
                        "privileged container gets all the others, unconfined, with the node's devices, but "
                        "not Docker's Privileged (its /sys stays read-only)",
                        ", ".join(sorted(self._lacking_capabilities)))

    # --- CreateContainer --------------------------------------------------------------------------

    def create(self, sandbox_id: str, config: api.ContainerConfig, sandbox_config: api.PodSandboxConfig) -> str:
        """Create (not start) the container; nothing is left behind when it is refused."""
        # 1. Check the request and name the container as dockershim did; one call at a time per name.
        name = container_name_of(config, sandbox_config)
        with self._names.reserved(name, "CreateContainer"):
            # 2. The sandbox must exist and run: the container joins its namespaces.
            sandbox = self._sandbox(sandbox_id)
            namespaces = config.linux.security_context.namespace_options
            if namespaces.pid == api.TARGET and namespaces.target_id:
                self._check_pid_target(namespaces.target_id, sandbox.id)

            # 3. The image must be on the node (the kubelet pulls first).
            try:
                image = self._docker.inspect_image(config.image.image)
            except CRIError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    raise not_found(f"image {config.image.image!r} is not on the node; pull it first") from exc
                raise

            # 4. Image volumes, materialised on the node (once the rest of the request is known to be
            #    good: an export copies a whole image), then Docker's create body.
            node = self._node_view(privileged=config.linux.security_context.privileged)
            image_mounts = [index for index, mount in enumerate(config.mounts)
                            if mount.HasField("image") and mount.image.image]
            if image_mounts:
                create_body(config, sandbox_config, sandbox, node,
                            {index: ImageVolume(host_path="/", image_id="") for index in image_mounts})
            image_volumes = {index: self._image_volumes.prepare(config.mounts[index]) for index in image_mounts}
            body = create_body(config, sandbox_config, sandbox, node, image_volumes)
            if config.linux.security_context.privileged and not privileged_runs(node.lacking_capabilities, sandbox.runtime):
                log.warning("container %s asks to be privileged, which runc cannot run on this node: it gets "
                            "every capability but %s, no seccomp or AppArmor profile and the node's devices "
                            "instead", name, ", ".join(sorted(node.lacking_capabilities)))
            labels.hide_image_labels(body["Labels"], (image.get("Config") or {}).get("Labels"))
            self._apply_groups_policy(body, config.linux.security_context.supplemental_groups_policy, image)
            resources = config.linux.resources
            if any(limit.limit for limit in resources.hugepage_limits) or resources.unified:
                log.warning("container %s: Docker cannot set hugepage limits or cgroup v2 unified keys; "
                            "they are not applied", name)

            # 5. Host paths that do not exist are created as directories, as dockershim's binds did.
            self._make_missing_host_paths(config.mounts, image_volumes)

            # 6. Create, recovering from a name left by an earlier attempt.
            gone = not_found(f"pod sandbox {sandbox.id} was removed while container {name} was created")
            try:
                container_id = self._docker.create_container_replacing(name, body, "container", self._logs.forget)
            except CRIError as exc:  # Docker's "No such container" for the namespaces' holder
                if exc.code == grpc.StatusCode.INVALID_ARGUMENT and self._sandbox_state(sandbox.id) is None:
                    raise gone from exc
                raise

            # 7. A RemovePodSandbox may have taken the pod meanwhile, its list of the pod's
            #    containers made before this one: the container must not outlive its pod.
            if self._sandbox_state(sandbox.id) is None:
                self._remove_refused(container_id)
                raise gone
            log.info("created container %s (%s) in sandbox %s", container_id[:12], name, sandbox.id[:12])
            return container_id

    def _sandbox_state(self, sandbox_id: str) -> dict[str, Any] | None:
        """Docker's State of the pause container; None once it is gone."""
        try:
            return self._docker.inspect_container(sandbox_id).get("State") or {}
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    def _remove_refused(self, container_id: str) -> None:
        try:
            self._docker.remove_container(container_id, force=True)
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    def _apply_groups_policy(self, body: dict[str, Any], policy: int, image: dict[str, Any]) -> None:
        """The user and groups SupplementalGroupsPolicy means, where Docker alone would give others,
        and the identity the process will start with, labelled for ContainerStatus."""
        user = body.get("User") or (image.get("Config") or {}).get("User") or ""
        groups = body["HostConfig"].get("GroupAdd") or []
        read: list[Accounts] = []

        def accounts() -> Accounts:
            if read:
                return read[0]
            try:
                read.append(self._accounts.of(image["Id"]))
            except CRIError as exc:
                if policy == api.Strict:
                    raise CRIError(exc.code, f"supplemental_groups_policy Strict needs the users of image "
                                             f"{image['Id']}: {exc.message}") from exc
                log.warning("cannot read the users of image %s (%s): a container of it gets Docker's groups, "
                            "without the image's memberships of its user", image["Id"][:19], exc.message)
                read.append(UNREAD)
            return read[0]

        user, groups = groups_by_policy(user, groups, policy, accounts)
        if user:
            body["User"] = user
        if groups:
            body["HostConfig"]["GroupAdd"] = groups
        identity = initial_identity(user, groups, accounts)
        if identity is not None and not (read and read[0] is UNREAD):  # unread: /proc tells while it runs
            uid, gid, supplemental = identity
            body["Labels"][labels.INITIAL_USER_LABEL] = f"{uid}:{gid}:{','.join(map(str, supplemental))}"

    def _sandbox(self, sandbox_id: str) -> SandboxView:
        if not sandbox_id:
            raise invalid_argument("pod_sandbox_id is empty")
        try:
            inspect = self._docker.inspect_container(self._docker.full_id(sandbox_id, labels.SANDBOXES_FILTER,
                                                                          "pod sandbox"))
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"pod sandbox {sandbox_id[:200]!r} not found") from exc
            raise
        if not labels.is_sandbox((inspect.get("Config") or {}).get("Labels")):
            raise not_found(f"{sandbox_id} is not a pod sandbox")
        if not (inspect.get("State") or {}).get("Running"):
            raise failed_precondition(f"pod sandbox {sandbox_id} is not running: its containers cannot join it")
        host_config = inspect.get("HostConfig") or {}
        runtime = host_config.get("Runtime") or ""
        return SandboxView(
            id=inspect["Id"],
            host_network=host_config.get("NetworkMode") == "host",
            # Named where it decides whether Docker's Privileged can run, as for the pause container.
            runtime=self._docker.runtime_name(runtime) if self._lacking_capabilities else runtime,
        )

    def _check_pid_target(self, target_id: str, sandbox_id: str) -> None:
        """A container may join the PID namespace of a running container of its own pod only, as
        containerd has it: one of another pod's would see and signal that pod's processes."""
        try:
            inspect = self._docker.inspect_container(self._docker.full_id(target_id, labels.CONTAINERS_FILTER, "container"))
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"namespace_options.target_id {target_id!r}: no such container") from exc
            raise
        container_labels = (inspect.get("Config") or {}).get("Labels") or {}
        if labels.is_sandbox(container_labels) or container_labels.get(labels.SANDBOX_ID_LABEL) != sandbox_id:
            raise invalid_argument(f"namespace_options.target_id {target_id!r} is not a container of pod sandbox "
                                   f"{sandbox_id}: a container can join the PID namespace of its own pod's only")
        if not (inspect.get("State") or {}).get("Running"):
            raise failed_precondition(f"namespace_options.target_id {target_id!r} is not running: "
                                      f"there is no PID namespace to join")

    def _node_view(self, privileged: bool = False) -> NodeView:
        info = self._docker.info()
        return NodeView(
            cgroup_driver=info.get("CgroupDriver") or "cgroupfs",
            api_version=self._docker.api_version,
            lacking_capabilities=self._lacking_capabilities,
            can_lower_oom_score=self._can_lower_oom_score,
            selinux_enabled=any("name=selinux" in option for option in info.get("SecurityOptions") or []),
            apparmor_enabled=any("name=apparmor" in option for option in info.get("SecurityOptions") or []),
            cdi_supported=bool(info.get("CDISpecDirs")),
            log_config={"Type": "json-file", "Config": {
                "max-size": self._config.docker_log_max_size,
                "max-file": str(self._config.docker_log_max_files),
                "compress": "false",
            }},
            host_devices=host_devices() if privileged and self._lacking_capabilities else (),
        )

    @staticmethod
    def _make_missing_host_paths(mounts: Sequence[api.Mount], image_volumes: dict[int, ImageVolume]) -> None:
        for index, mount in enumerate(mounts):
            if index in image_volumes or os.path.lexists(mount.host_path):
                continue
            try:
                os.makedirs(mount.host_path, mode=0o755, exist_ok=True)
            except OSError as exc:  # a file on the way, a read-only or virtual filesystem
                raise failed_precondition(f"mount {mount.container_path}: cannot create host path "
                                          f"{mount.host_path}: {exc.strerror or exc}") from exc
            log.info("created missing host path %s for mount %s", mount.host_path, mount.container_path)

    # --- StartContainer ---------------------------------------------------------------------------

    def start(self, container_id: str) -> None:
        """Start a created container, with its CRI log file ready before its first line."""
        inspect = self._inspect(container_id)
        full_id = inspect["Id"]
        state = inspect.get("State") or {}
        if state_of(state, 0).state != api.CONTAINER_CREATED:
            raise failed_precondition(
                f"container {full_id} is not in the created state (Docker: {state.get('Status')}): "
                f"a CRI container starts once"
            )
        log_path = _cri_log_path(inspect)
        if log_path:
            self._logs.prepare(full_id, log_path)
        try:
            self._docker.start_container(full_id)
        except CRIError as exc:
            self._cannot_run.add(full_id)
            self._logs.forget(full_id)
            sandbox_id = ((inspect.get("Config") or {}).get("Labels") or {}).get(labels.SANDBOX_ID_LABEL, "")
            if exc.code == grpc.StatusCode.FAILED_PRECONDITION and sandbox_id and not (
                    self._sandbox_state(sandbox_id) or {}).get("Running"):
                # Docker's 400 for namespaces that went with a pod stopped meanwhile ("lstat /proc/N/ns/ipc")
                raise failed_precondition(f"container {full_id} failed to start: its pod sandbox {sandbox_id} "
                                          f"is not running: {exc.message}") from exc
            raise CRIError(exc.code, f"container {full_id} failed to start: {exc.message}") from exc
        if log_path:
            try:
                started = self._docker.inspect_container(full_id)
            except CRIError as exc:  # it runs: a retried start could only be refused, so copy its log later
                log.warning("container %s started, but Docker did not say where its log is (%s): copying it "
                            "once Docker answers", full_id[:12], exc.message)
                self._resume_log_later(full_id)
            else:
                self._logs.follow(full_id, started.get("LogPath") or "", log_path,
                                  (started.get("State") or {}).get("Pid") or 0)
        log.info("started container %s", full_id[:12])

    def _resume_log_later(self, container_id: str) -> None:
        def run() -> None:
            for _ in range(LOG_RESUME_TRIES):
                time.sleep(RECOVERY_RETRY_SECONDS)
                try:
                    self._resume_log(container_id)
                    return
                except CRIError as exc:
                    log.info("container %s: its log copy waits for Docker: %s", container_id[:12], exc.message)
            log.error("container %s: Docker did not answer for %.0fs: its log is copied at the next shim start",
                      container_id[:12], LOG_RESUME_TRIES * RECOVERY_RETRY_SECONDS)

        threading.Thread(target=run, name=f"log-resume-{container_id[:12]}", daemon=True).start()

    # --- StopContainer ----------------------------------------------------------------------------

    def stop(self, container_id: str, timeout: int) -> None:
        """Stop signal, then SIGKILL after `timeout` seconds; a container already stopped or gone is done."""
        inspect = self._inspect_or_none(container_id)
        if inspect is None:
            log.info("StopContainer %s: no such container, nothing to stop", container_id)
            return
        full_id = inspect["Id"]
        try:
            self._docker.stop_container(full_id, min(max(int(timeout), 0), STOP_GRACE_MAX_SECONDS))
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return
        self._logs.finish(full_id, inspect.get("LogPath") or "")
        log.info("stopped container %s", full_id[:12])

    # --- RemoveContainer --------------------------------------------------------------------------

    def remove(self, container_id: str) -> None:
        """Force-remove (killing it if it runs); a container already gone is done. Its CRI log stays."""
        inspect = self._inspect_or_none(container_id)
        if inspect is None:
            log.info("RemoveContainer %s: no such container, nothing to remove", container_id)
            return
        full_id = inspect["Id"]
        try:
            self._docker.remove_container(full_id, force=True)
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND and "already in progress" not in exc.message:
                raise
        self._forget(full_id)
        if self._binds_image_volume(inspect):
            self._prune_image_volumes()
        log.info("removed container %s", full_id[:12])

    def removed_with_pod(self, removed: list[dict[str, Any]]) -> None:
        """RemovePodSandbox removed these (Docker list entries): what is kept of them goes too."""
        for entry in removed:
            self._forget(entry["Id"])
        if any(self._binds_image_volume(entry) for entry in removed):
            self._prune_image_volumes()

    def _forget(self, container_id: str) -> None:
        self._logs.forget(container_id)
        self._cannot_run.discard(container_id)
        self._converted.forget(container_id)
        self._statuses.forget(container_id)

    def _binds_image_volume(self, container: dict[str, Any]) -> bool:
        """Whether an inspect or list entry mounts a materialised image volume."""
        return any(mount.get("Source", "").startswith(self._image_volumes.root + "/")
                   for mount in container.get("Mounts") or [])

    def _prune_image_volumes(self) -> None:
        images = [image["Id"] for image in self._docker.images()]
        entries = self._docker.list_containers({})
        sources = [mount.get("Source", "") for entry in entries for mount in entry.get("Mounts") or []]
        self._image_volumes.prune(images, sources)

    # --- ListContainers ---------------------------------------------------------------------------

    def list_containers(self, container_filter: api.ContainerFilter | None) -> list[api.Container]:
        """One Docker list call, no inspect: the kubelet asks every second."""
        docker_filters = labels.container_list_filters(
            *((container_filter.id, container_filter.pod_sandbox_id, container_filter.label_selector)
              if container_filter is not None else ("", "", {}))
        )
        if docker_filters is None:
            return []
        entries = self._docker.list_containers(docker_filters)
        if container_filter is None:  # forget failed starts of containers removed with their pod
            listed = {entry["Id"] for entry in entries}
            self._cannot_run &= listed
            self._converted.keep_only(listed)
            self._statuses.keep_only(listed)
            self._logs.keep_only(listed)
        containers = []
        for entry in entries:
            cannot_run = entry["Id"] in self._cannot_run
            container = self._converted.get(entry, cannot_run)
            if container is not None and matches_filter(container, container_filter):
                containers.append(container)
        return containers

    def statuses_of_pod(self, sandbox_id: str) -> list[api.ContainerStatus]:
        """The statuses of the pod's containers, newest first, as the kubelet's own listing sorts
        them (it takes the first of a name). One removed meanwhile is left out; any other failure
        fails the whole: a member left out is one a kubelet with EventedPLEG would make again."""
        statuses = []
        for member in self.list_containers(api.ContainerFilter(pod_sandbox_id=sandbox_id)):
            try:
                statuses.append(self.status(member.id, verbose=False)[0])
            except CRIError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:
                    raise
        statuses.sort(key=lambda status: status.created_at, reverse=True)
        return statuses

    # --- ContainerStatus --------------------------------------------------------------------------

    def status(self, container_id: str, verbose: bool) -> tuple[api.ContainerStatus, dict[str, str]]:
        """The container's state as the kubelet reads it; an exited container's CRI log is complete first."""
        inspect = self._inspect(container_id)
        full_id = inspect["Id"]
        state = inspect.get("State") or {}
        labelled = labels.INITIAL_USER_LABEL in ((inspect.get("Config") or {}).get("Labels") or {})
        identity = self._process_identity(state.get("Pid")) if state.get("Running") and not labelled else None
        try:
            status = self._statuses.get(inspect, (self._image(inspect.get("Image", "")), identity))
        except ValueError as exc:
            raise not_found(f"container {container_id!r} is not a CRI container: {exc}") from exc
        if status.state == api.CONTAINER_EXITED:
            self._logs.finish(full_id, inspect.get("LogPath") or "")
            if status.reason == REASON_CANNOT_RUN:
                self._cannot_run.add(full_id)
        info = verbose_info(inspect, self._logs.describe(full_id)) if verbose else {}
        return status, info

    def _image(self, image_id: str) -> dict[str, Any] | None:
        """The image's inspect for its tags and digests (the index keeps it); None once it is removed."""
        try:
            return self._docker.inspect_image(image_id)
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    @staticmethod
    def _process_identity(pid: int | None) -> str | None:
        """The Uid, Gid and Groups lines of the process's status: all the conversion reads, so the
        converted status is kept while they hold (the rest of the file changes all the time)."""
        if not pid:
            return None
        try:
            status = read_kernel_file(f"/proc/{pid}/status")
        except OSError:
            return None
        return "\n".join(line for line in status.splitlines() if line.startswith(("Uid:", "Gid:", "Groups:")))

    # --- UpdateContainerResources -----------------------------------------------------------------

    def update_resources(self, container_id: str, resources: api.LinuxContainerResources) -> None:
        """CPU, memory and cpusets of a container; Docker cannot change its OOM score or hugepages."""
        inspect = self._inspect(container_id)
        body = update_body(resources)
        if not body:
            return
        try:
            self._docker.update_container(inspect["Id"], body)
        except CRIError as exc:  # Docker's 500 for a container being removed: gone, a moment later
            if exc.code == grpc.StatusCode.UNKNOWN and "marked for removal" in exc.message:
                raise not_found(f"container {inspect['Id']} is being removed") from exc
            raise

    # --- ReopenContainerLog -----------------------------------------------------------------------

    def reopen_log(self, container_id: str) -> None:
        """Start writing a new CRI log file at the container's log path (the kubelet renamed the old one)."""
        inspect = self._inspect(container_id)
        state = inspect.get("State") or {}
        if not state.get("Running"):
            raise failed_precondition(f"container {inspect['Id']} is not running: its log is closed")
        log_path = _cri_log_path(inspect)
        if not log_path:
            raise failed_precondition(f"container {inspect['Id']} has no log_path: there is no log to reopen")
        self._logs.reopen(inspect["Id"], inspect.get("LogPath") or "", log_path, state.get("Pid") or 0)

    # --- after a restart --------------------------------------------------------------------------

    def _remove_leftover_helpers(self) -> None:
        """The helper containers a crash left behind. Recovery runs while calls are served: one
        made since this process started is a CreateContainer's now, not a leftover."""
        for label in (EXPORT_LABEL, ACCOUNT_FILES_LABEL):
            for entry in self._docker.list_containers({"label": [f"{label}=true"]}):
                if labels.is_helper(entry.get("Labels"), label) and int(entry.get("Created") or 0) < self._started_at:
                    self._docker.remove_container(entry["Id"], force=True)

    def recover(self) -> None:
        """Resume the log copies of running containers, finish those that exited meanwhile, drop leftovers."""
        self._remove_leftover_helpers()
        saved = set(self._logs.saved_containers())
        listed = self._docker.list_containers(
            {"label": [f"{labels.CONTAINER_TYPE_LABEL}={labels.CONTAINER_TYPE_CONTAINER}"]})
        existing = {entry["Id"] for entry in listed}
        for entry in listed:  # Docker lists a failed start as created: EXITED, as before the restart
            if entry.get("State") == "created" and self._start_failed(entry["Id"]):
                self._cannot_run.add(entry["Id"])
        for container_id in sorted(saved):
            state = self._logs.saved_state(container_id)
            if container_id not in existing:
                self._logs.forget(container_id)
            elif state is None or not state.finished:  # None: unreadable, so copied again from the start
                try:
                    self._resume_log(container_id)
                except CRIError as exc:  # one container's log (a path gone bad) is not every container's
                    if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    log.error("container %s: its log copy cannot be resumed: %s", container_id[:12], exc.message)
        if self._image_volumes.materialised():
            self._prune_image_volumes()

    def _start_failed(self, container_id: str) -> bool:
        inspect = self._inspect_or_none(container_id)
        return inspect is not None and state_of(inspect.get("State") or {}, 0).reason == REASON_CANNOT_RUN

    def _resume_log(self, container_id: str) -> None:
        try:
            inspect = self._docker.inspect_container(container_id)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                self._logs.forget(container_id)
                return
            raise
        state = inspect.get("State") or {}
        if not state.get("Running"):
            self._logs.finish(container_id, inspect.get("LogPath") or "")
        elif log_path := _cri_log_path(inspect):
            self._logs.follow(container_id, inspect.get("LogPath") or "", log_path, state.get("Pid") or 0)
            log.info("container %s: resumed copying its log", container_id[:12])

    # --- helpers ----------------------------------------------------------------------------------

    def _inspect_or_none(self, container_id: str) -> dict[str, Any] | None:
        """Docker's inspect of a CRI container; None when there is no such container."""
        if not container_id:
            raise invalid_argument("container_id is empty")
        if not _CONTAINER_ID.fullmatch(container_id):
            return None
        container_id = self._docker.full_id(container_id, labels.CONTAINERS_FILTER, "container")  # crictl's prefix
        try:
            inspect = self._docker.inspect_container(container_id)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        if labels.is_sandbox((inspect.get("Config") or {}).get("Labels")):
            raise invalid_argument(f"{container_id} is a pod sandbox, not a container: use the PodSandbox calls")
        if not labels.is_container((inspect.get("Config") or {}).get("Labels")):
            return None
        return inspect

    def _inspect(self, container_id: str) -> dict[str, Any]:
        inspect = self._inspect_or_none(container_id)
        if inspect is None:
            raise not_found(f"container {container_id!r} not found")
        return inspect

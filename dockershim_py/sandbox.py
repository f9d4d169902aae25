"""Pod sandboxes: one pause container per pod, holding the namespaces the pod's containers join.

RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and ListPodSandbox, each
reading top to bottom as the steps the CRI asks for. The conversions (request to Docker create
body, Docker list entry or inspect to CRI) are pure functions in `sandbox_convert`; this module
does the I/O. Sandboxes are Docker containers named and labelled exactly as dockershim and
cri-dockerd did, so a node switching from them keeps its pods.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any

import grpc

from . import labels, naming, network
from .api import api_pb2 as api
from .cgroups import can_lower_oom_score, effective_oom_score_adj
from .checkpoint import CheckpointStore, SandboxCheckpoint
from .cni import (
    CNINetwork, NetworkConfigError, PluginError, PodIdentity, result_ips, runtime_capabilities,
)
from .config import Config
from .docker_client import DockerClient
from .events import ConvertedEntries
from .errors import CRIError, deadline_exceeded, failed_precondition, invalid_argument, not_found, unavailable
from .files import remove_if_present
from .image import ImageService
from .sandbox_convert import (
    DEFAULT_HANDLERS, checkpoint_of, cni_capabilities, docker_runtime, host_port_clash, matches_filter,
    sandbox_create_body, sandbox_from_checkpoint, sandbox_from_list_entry, status_from_checkpoint,
    status_from_inspect, status_of_removed, verbose_info,
)
from .security_context import node_lacking_capabilities, privileged_runs

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 10
# Threads kept for stopping and removing a pod's containers side by side, across all pods (made
# as needed): as deep as the stops' own pool, since a drain stops every pod at once, each of
# whose containers may wait out its grace period.
CONTAINER_CALL_THREADS = 256
# Under the root directory, a file per sandbox whose CNI ADD is running: one a killed shim left
# names a pod that would list READY without its network.
ADDS_IN_PROGRESS_DIRECTORY = "cni-adds-in-progress"

_SANDBOX_ID = re.compile(r"[0-9a-f]{1,64}")


class SandboxService:
    def __init__(
        self, docker: DockerClient, config: Config, images: ImageService, checkpoints: CheckpointStore,
        members_removed: Callable[[list[dict[str, Any]]], None], pod_network: network.Network | None = None,
    ) -> None:
        """`members_removed`: told which of a pod's containers RemovePodSandbox removed, so their log
        copy positions and caches go with them."""
        self._docker = docker
        self._members_removed = members_removed
        self._config = config
        self._network = pod_network or network.Network()
        self._images = images
        self._checkpoints = checkpoints
        self._converted: ConvertedEntries[api.PodSandbox | None] = ConvertedEntries(
            lambda entry, _: sandbox_from_list_entry(entry))
        self._newest_first_kept: tuple[tuple[int, ...], list[api.PodSandbox]] = ((), [])
        self._oom_score_adj = effective_oom_score_adj(config.sandbox_oom_score_adj, can_lower_oom_score())
        self._lacking_capabilities = node_lacking_capabilities()
        if self._oom_score_adj != config.sandbox_oom_score_adj:
            log.warning(
                "this host cannot lower OOM scores (CAP_SYS_RESOURCE is not in the capability bounding set), "
                "so runc would fail every sandbox with oom_score_adj %d: pause containers get 0 instead",
                config.sandbox_oom_score_adj,
            )
        self._pull_lock = threading.Lock()
        self._host_ports_lock = threading.Lock()
        self._names = naming.NameReservations()
        self._teardowns = _KeyedLocks()
        # By sandbox name: a StopPodSandbox or RemovePodSandbox that finds a sandbox RunPodSandbox has
        # made and not yet started waits for it, or the start would undo the stop.
        self._runs = _KeyedLocks()
        self._container_calls = futures.ThreadPoolExecutor(CONTAINER_CALL_THREADS, "pod-containers")

    # --- RunPodSandbox ----------------------------------------------------------------------------

    def run(
        self,
        config: api.PodSandboxConfig,
        runtime_handler: str,
        register_cancel: Callable[[Callable[[], None]], bool],
    ) -> str:
        """Create and start the pause container; on any failure nothing is left behind but, when the
        CNI DEL that undid a failed ADD failed too, the checkpoint through which a stop retries it."""
        # 1. Check the whole request and build the Docker request before touching anything.
        name = naming.sandbox_name(
            config.metadata.name, config.metadata.namespace, config.metadata.uid, config.metadata.attempt
        )
        runtime = self._docker_runtime(runtime_handler)
        body = sandbox_create_body(
            config,
            self._config.pod_infra_container_image,
            runtime_handler if runtime else "",
            runtime,
            self._cgroup_driver() if config.linux.cgroup_parent else "",
            self._oom_score_adj,
            pod_network_mode=self._network.pod_network_mode,
            docker_privileged_runs=not self._lacking_capabilities or privileged_runs(
                self._lacking_capabilities, self._docker.runtime_name(runtime)),
        )
        host_network = body["HostConfig"]["NetworkMode"] == "host"
        on_cni = self._network.cni is not None and not host_network
        if on_cni:
            capabilities = cni_capabilities(config, self._network.pod_cidr)
            self._check_cni_ready()
        resolv_conf = network.resolv_conf(config.dns_config) if config.HasField("dns_config") else ""
        if config.log_directory and not os.path.isabs(config.log_directory):
            raise invalid_argument(f"log_directory {config.log_directory!r} must be an absolute path")

        # One call at a time per pod and attempt: a retried call must not make a second sandbox.
        with self._names.reserved(name, "RunPodSandbox"):
            # 2. The pause image, pulled with the node's Docker credentials when missing.
            image = self._ensure_sandbox_image(register_cancel)
            labels.hide_image_labels(body["Labels"], (image.get("Config") or {}).get("Labels"))

            # 3. The log directory the kubelet puts container logs under.
            created_log_directory = self._make_log_directory(config.log_directory)

            # 4. Create, checkpoint, start, point the pod's resolv.conf at the cluster DNS, and last
            #    (a failed ADD takes back what it added) put the pod on the CNI network.
            checkpoint = checkpoint_of(config, host_network)
            sandbox_id = marker = ""
            with self._runs.held(name):
                try:
                    with self._host_ports_claimed(checkpoint if on_cni else None):
                        sandbox_id = self._docker.create_container_replacing(name, body, "pod sandbox",
                                                                             self._forget_replaced)
                        self._checkpoints.write(sandbox_id,
                                                dataclasses.replace(checkpoint, created_at=time.time_ns()))
                    if on_cni:  # from before the start: a shim killed from here to the ADD's end leaves it
                        marker = self._mark_add_in_progress(sandbox_id)  # for the next start to undo
                    self._docker.start_container(sandbox_id)
                    if resolv_conf:  # an empty DNS config keeps Docker's file, as dockershim did
                        self._rewrite_resolv_conf(sandbox_id, resolv_conf)
                    if on_cni:
                        self._add_to_cni_network(sandbox_id, config.metadata, capabilities)
                except BaseException as exc:
                    self._undo_run(name, sandbox_id, created_log_directory, exc)
                    raise
                finally:  # after an undo: a shim killed during one leaves it to the next start too
                    if marker:
                        remove_if_present(marker)
            log.info("started pod sandbox %s (%s)", sandbox_id[:12], name)
            return sandbox_id

    @contextlib.contextmanager
    def _host_ports_claimed(self, checkpoint: SandboxCheckpoint | None) -> Iterator[None]:
        """Refuse a CNI pod whose host port a running pod holds (Docker refuses it on its bridge),
        and keep another pod from claiming the same port until this one is checkpointed."""
        if checkpoint is None or not any(mapping.host_port for mapping in checkpoint.port_mappings):
            yield
            return
        with self._host_ports_lock:
            running = self._docker.list_containers({  # created: another RunPodSandbox's, starting
                "label": [f"{labels.CONTAINER_TYPE_LABEL}={labels.CONTAINER_TYPE_SANDBOX}"],
                "status": ["created", "running"]})
            listed = {entry["Id"] for entry in running}
            cni = self._network.cni
            assert cni is not None  # (a CNI pod's ports only)
            # Not the pod's own earlier attempts (a crash may leave one created); and a pod whose
            # container is gone holds its port rules too, until its StopPodSandbox runs DEL.
            held = {sandbox_id: found for sandbox_id, found in self._checkpoints.all().items()
                    if (found.namespace, found.name) != (checkpoint.namespace, checkpoint.name)
                    and (sandbox_id in listed or (any(mapping.host_port for mapping in found.port_mappings)
                                                  and cni.has_cache(sandbox_id)))}
            clash = host_port_clash(checkpoint, held)
            if clash is not None:
                mapping, holder = clash
                raise failed_precondition(
                    f"host port {mapping.host_ip or '*'}:{mapping.host_port}/{mapping.protocol} is held by "
                    f"pod sandbox {holder[:12]} ({held[holder].namespace}/{held[holder].name})")
            yield

    def _docker_runtime(self, handler: str) -> str:
        if handler in DEFAULT_HANDLERS:
            return ""
        runtimes = (self._docker.info().get("Runtimes") or {}).keys()
        if handler not in runtimes:  # maybe added since the kept answer: ask again once
            runtimes = (self._docker.info(max_age=0).get("Runtimes") or {}).keys()
        return docker_runtime(handler, runtimes)

    def _cgroup_driver(self) -> str:
        return self._docker.info().get("CgroupDriver") or "cgroupfs"

    def _ensure_sandbox_image(self, register_cancel: Callable[[Callable[[], None]], bool]) -> dict[str, Any]:
        """The pause image's inspect, pulled first when missing."""
        image = self._config.pod_infra_container_image
        present = self._image_inspect(image)
        if present is not None:
            return present
        with self._pull_lock:  # one pull for a burst of new pods
            present = self._image_inspect(image)
            if present is None:
                self._images.pull_image(image, None, register_cancel)
                present = self._docker.inspect_image(image)
        return present

    def _image_inspect(self, image: str) -> dict[str, Any] | None:
        try:
            return self._docker.inspect_image(image)
        except CRIError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    @staticmethod
    def _make_log_directory(path: str) -> str:
        """Create `path`; returns it when this call created it (so a failure can take it back)."""
        if not path or os.path.isdir(path):
            return ""
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as exc:  # a file there, a read-only or virtual filesystem: the node's state, not ours
            raise failed_precondition(f"cannot create log directory {path}: {exc.strerror or exc}") from exc
        return path

    def _rewrite_resolv_conf(self, sandbox_id: str, content: str) -> None:
        path = self._docker.inspect_container(sandbox_id).get("ResolvConfPath", "")
        try:
            network.rewrite_resolv_conf(path, content)
        except OSError as exc:
            raise CRIError(
                grpc.StatusCode.INTERNAL, f"cannot write the DNS config into {path or 'resolv.conf'}: {exc}"
            ) from exc

    def _forget_replaced(self, sandbox_id: str) -> None:
        """An earlier attempt's stopped pause container was removed to take its name: its address goes too."""
        try:
            self._remove_from_cni_network(sandbox_id, None)
        except CRIError as exc:
            log.warning("replaced pod sandbox %s kept its CNI address: %s", sandbox_id[:12], exc.message)
        self._checkpoints.remove(sandbox_id)

    def _check_cni_ready(self) -> None:
        cni = self._network.cni
        assert cni is not None  # (a CNI pod's only)
        readiness = cni.readiness()
        if not readiness.ready:
            raise failed_precondition(f"cannot put a pod on the pod network: {readiness.message}")

    def _add_to_cni_network(self, sandbox_id: str, metadata: api.PodSandboxMetadata,
                            capabilities: dict[str, Any]) -> None:
        state = self._docker.inspect_container(sandbox_id).get("State") or {}
        pid = state.get("Pid") or 0
        if not pid:
            raise unavailable(f"pod sandbox {sandbox_id} exited as it started: no network namespace to set up")
        cni = self._network.cni
        assert cni is not None  # (a CNI pod's only)
        pod = PodIdentity(metadata.namespace, metadata.name, metadata.uid, sandbox_id)
        with _cni_errors(sandbox_id, "set up"):
            ips = cni.add(pod, f"/proc/{pid}/ns/net", capabilities, namespace_holder(state))
        log.info("pod sandbox %s is on the CNI network (%s)", sandbox_id[:12], ", ".join(ips) or "no address")

    def _remove_from_cni_network(self, sandbox_id: str, inspect: dict[str, Any] | None) -> None:
        """CNI DEL for a pod the plugins set up: while its namespace exists, or while ADD's record is
        kept (the namespace is gone but the address is still held). Idempotent: the record goes with it."""
        cni = self._network.cni
        if cni is None:
            return
        host_config = (inspect or {}).get("HostConfig") or {}
        state = (inspect or {}).get("State") or {}
        running_on_cni = host_config.get("NetworkMode") == network.CNI_POD_NETWORK_MODE and state.get("Running") \
            and state.get("Pid")
        if not running_on_cni and not cni.has_cache(sandbox_id):
            return
        self._cni_delete(sandbox_id, inspect, f"/proc/{state['Pid']}/ns/net" if running_on_cni else "")

    def _cni_delete(self, sandbox_id: str, inspect: dict[str, Any] | None, netns: str) -> None:
        cni = self._network.cni
        assert cni is not None
        checkpoint = self._checkpoints.get(sandbox_id)
        pod = self._pod_identity(sandbox_id, inspect, checkpoint)
        # Without ADD's cached record, what a plugin needs to undo: the host ports and the pod CIDR.
        capabilities = runtime_capabilities(checkpoint.port_mappings if checkpoint else (), {},
                                            self._network.pod_cidr, None)
        with self._teardowns.held(sandbox_id), _cni_errors(sandbox_id, "tear down"):
            cni.delete(pod, netns, capabilities)  # one at a time: two at once failed ("no such device")
        log.info("pod sandbox %s is off the CNI network", sandbox_id[:12])

    @staticmethod
    def _pod_identity(sandbox_id: str, inspect: dict[str, Any] | None,
                      checkpoint: SandboxCheckpoint | None) -> PodIdentity:
        """The pod's CNI_ARGS from the sandbox's name, else (its container gone) from the checkpoint."""
        try:
            parsed = naming.parse_sandbox_name((inspect or {}).get("Name") or "")
            return PodIdentity(parsed.namespace, parsed.name, parsed.uid, sandbox_id)
        except ValueError:
            return PodIdentity(checkpoint.namespace if checkpoint else "", checkpoint.name if checkpoint else "",
                               "", sandbox_id)

    def _undo_run(self, name: str, sandbox_id: str, log_directory: str, cause: BaseException) -> None:
        log.warning("RunPodSandbox %s failed, removing what it made: %s", name, cause)
        if sandbox_id:
            try:
                self._remove_if_present(sandbox_id)
            except CRIError as exc:
                log.error("could not remove the failed sandbox container %s: %s", sandbox_id, exc)
            if self._network.cni is not None and self._network.cni.has_cache(sandbox_id):
                # The CNI DEL that undid the ADD failed: the checkpoint lists the sandbox NOTREADY, so
                # the kubelet's StopPodSandbox or RemovePodSandbox runs DEL again, then removes it.
                log.warning("pod sandbox %s is kept as a checkpoint until its CNI resources are released",
                            sandbox_id[:12])
            else:
                self._checkpoints.remove(sandbox_id)
        if log_directory:
            try:
                os.rmdir(log_directory)
            except OSError:
                pass

    # --- StopPodSandbox -----------------------------------------------------------------------------

    def stop(self, sandbox_id: str) -> None:
        """Stop the pod's containers, then the pause container; a sandbox already gone is success."""
        found = self._find(sandbox_id)
        if found is None:
            log.info("StopPodSandbox %s: no such sandbox, nothing to stop", sandbox_id)
            return
        with self._run_finished(found[1]) as waited:
            if waited:
                found = self._find(found[0])  # as it is now: the run waited for has started it since
            if found is not None:
                self._stop(*found)

    def _stop(self, full_id: str, inspect: dict[str, Any] | None) -> None:
        self._docker.catch_up()  # a member started behind the shim's back just now would be left running
        running = self._docker.list_containers(
            {"label": [f"{labels.SANDBOX_ID_LABEL}={full_id}"], "status": ["running"]}
        )
        self._for_each(self._stop_if_present, [entry["Id"] for entry in running])
        # The CNI plugins release the pod's address while its namespace is there; Docker's bridge
        # (or the host's network) needs nothing more than stopping the container. A DEL that fails
        # (its plugins may have released the address already) still stops the pause container, so
        # the pod lists NOTREADY and the kubelet's next StopPodSandbox runs DEL again (its record stays).
        try:
            self._remove_from_cni_network(full_id, inspect)
        finally:
            self._stop_if_present(full_id)
        log.info("stopped pod sandbox %s", full_id[:12])

    # --- RemovePodSandbox ---------------------------------------------------------------------------

    def remove(self, sandbox_id: str) -> None:
        """Force-remove the pod's containers, the pause container and the checkpoint; idempotent."""
        found = self._find(sandbox_id)
        if found is None:
            if len(sandbox_id) == 64 and _SANDBOX_ID.fullmatch(sandbox_id):  # members an earlier removal missed
                self._remove_members(sandbox_id)
            log.info("RemovePodSandbox %s: no such sandbox, nothing to remove", sandbox_id)
            return
        with self._run_finished(found[1]) as waited:
            if waited:
                found = self._find(found[0])  # as it is now: the run waited for has started it since
            if found is not None:
                self._remove(*found)

    def _remove(self, full_id: str, inspect: dict[str, Any] | None) -> None:
        self._docker.catch_up()  # a member made behind the shim's back just now would be left behind
        self._remove_members(full_id)
        self._remove_from_cni_network(full_id, inspect)  # removed without a stop, it may still hold its address
        self._remove_if_present(full_id)
        # A CreateContainer that found the pod before it went may have made a member since the
        # list above; one that finishes after this second list finds the pod gone and takes its own.
        self._remove_members(full_id)
        self._checkpoints.remove(full_id)
        log.info("removed pod sandbox %s", full_id[:12])

    def _remove_members(self, sandbox_id: str) -> None:
        members = {entry["Id"]: entry for entry in
                   self._docker.list_containers({"label": [f"{labels.SANDBOX_ID_LABEL}={sandbox_id}"]})}
        removed: list[str] = []

        def remove_member(container_id: str) -> None:
            self._remove_if_present(container_id)
            removed.append(container_id)

        try:
            self._for_each(remove_member, list(members))
        finally:  # those removed before one failed are forgotten too: a retry no longer lists them
            self._members_removed([members[container_id] for container_id in removed])

    # --- PodSandboxStatus ---------------------------------------------------------------------------

    def status(self, sandbox_id: str, verbose: bool) -> tuple[api.PodSandboxStatus, dict[str, str]]:
        found = self._find(sandbox_id)
        if found is None:
            raise not_found(f"pod sandbox {sandbox_id!r} not found")
        full_id, inspect = found
        if inspect is None:
            checkpoint = self._checkpoints.get(full_id)
            if checkpoint is None:  # removed meanwhile
                raise not_found(f"pod sandbox {sandbox_id!r} not found")
            info = {"info": json.dumps({"checkpointOnly": True, "note": "its container is gone; StopPodSandbox and "
                                        "RemovePodSandbox clean it up"})} if verbose else {}
            return status_from_checkpoint(full_id, checkpoint), info
        ips = self._pod_ips(inspect)
        status = status_from_inspect(inspect, ips)
        cni_result = self._network.cni.cached_result(full_id) if verbose and self._network.cni is not None else None
        info = verbose_info(inspect, ips, self._checkpoints.get(full_id), cni_result) if verbose else {}
        return status, info

    def _pod_ips(self, inspect: dict[str, Any]) -> list[str]:
        """Docker's addresses for the sandbox; on CNI, its ADD result's (a container may add an
        address of its own in the pod's namespace, a VIP on lo, which is not the pod's IP), else those
        in its network namespace; none on the host's."""
        if (inspect.get("HostConfig") or {}).get("NetworkMode") == "host":
            return []
        ips = network.ips_from_network_settings(inspect.get("NetworkSettings"))
        state = inspect.get("State") or {}
        if not ips and state.get("Running") and state.get("Pid"):
            cached = self._network.cni.cached_result(inspect["Id"]) if self._network.cni is not None else None
            if cached and cached["namespaceHolder"] and cached["namespaceHolder"] != namespace_holder(state):
                # Restarted behind the shim's back: a new namespace, without the pod's address. None
                # is reported, so the kubelet makes the pod again (its StopPodSandbox releases the old).
                cached = None
            ips = result_ips((cached or {}).get("result")) or network.ips_from_network_namespace(state["Pid"])
        return ips

    # --- ListPodSandbox -----------------------------------------------------------------------------

    def list_sandboxes(self, sandbox_filter: api.PodSandboxFilter | None) -> list[api.PodSandbox]:
        """One Docker list call, no inspect: the kubelet asks every second.

        Checkpoints are read (from memory) before Docker is asked, so a sandbox created in
        between is never mistaken for one whose container vanished.
        """
        prefix = sandbox_filter.id if sandbox_filter is not None else ""
        selector = dict(sandbox_filter.label_selector) if sandbox_filter is not None else {}
        if prefix and not _SANDBOX_ID.fullmatch(prefix):
            return []
        checkpoints = {} if selector else self._checkpoints.all()
        docker_filters: dict[str, Any] = {
            "label": [f"{labels.CONTAINER_TYPE_LABEL}={labels.CONTAINER_TYPE_SANDBOX}",
                      *labels.docker_label_filters(selector)],
        }
        if prefix:
            docker_filters["id"] = [prefix]  # Docker matches anywhere in the ID; the prefix rule is ours
        entries = self._docker.list_containers(docker_filters)
        listed = {entry["Id"] for entry in entries}
        if sandbox_filter is None:
            self._converted.keep_only(listed)
        sandboxes = [sandbox for sandbox in map(self._converted.get, entries) if sandbox is not None]
        sandboxes += [
            sandbox_from_checkpoint(sandbox_id, checkpoint)
            for sandbox_id, checkpoint in sorted(checkpoints.items())
            if sandbox_id not in listed
        ]
        return [sandbox for sandbox in self._newest_first(sandboxes) if matches_filter(sandbox, sandbox_filter)]

    def _newest_first(self, sandboxes: list[api.PodSandbox]) -> list[api.PodSandbox]:
        """As Docker lists them. Docker's list times are whole seconds: a pod's later attempt breaks
        the tie, or the kubelet, which takes a pod's first newest sandbox, may take a stopped one
        made in the same second as its replacement. Kept while the converted sandboxes are the
        same objects (the kept list holds them, so their ids cannot be reused): a relist of 220
        sorted anew cost 65 us."""
        identities = tuple(map(id, sandboxes))
        kept_identities, kept = self._newest_first_kept
        if identities != kept_identities:
            kept = sorted(sandboxes, key=lambda sandbox: (sandbox.created_at, sandbox.metadata.attempt), reverse=True)
            self._newest_first_kept = (identities, kept)
        return kept

    @staticmethod
    def removed_status(sandbox_id: str, event_attributes: Mapping[str, str]) -> api.PodSandboxStatus | None:
        """The status GetContainerEvents gives a sandbox's own deletion (see `status_of_removed`)."""
        return status_of_removed(sandbox_id, event_attributes)

    # --- after a restart ------------------------------------------------------------------------------

    def interrupted_network_setups(self) -> list[str]:
        """Sandboxes whose CNI ADD an earlier shim process did not finish (it was killed); read
        before this one serves, so that no ADD of its own is taken for one."""
        try:
            return sorted(name for name in os.listdir(self._add_in_progress_marker(""))
                          if _SANDBOX_ID.fullmatch(name))
        except OSError:
            return []

    def recover_pod_networks(self, interrupted: list[str]) -> None:
        """Take pods whose ADD was cut short off the network and stop them, so that they list
        NOTREADY and the kubelet makes them again (they would list READY with half a network);
        warn of pods on a CNI network when this shim has none. Raises when Docker does not answer."""
        if self._network.cni is None:
            self._warn_of_pods_on_cni()
            if interrupted:
                log.warning("pod sandboxes %s were being put on the CNI network when the shim was killed, but "
                            "--network-plugin is not cni now: they are left as they are", ", ".join(interrupted))
            return
        for sandbox_id in interrupted:
            self._undo_interrupted_add(self._network.cni, sandbox_id)

    def _undo_interrupted_add(self, cni: CNINetwork, sandbox_id: str) -> None:
        marker = self._add_in_progress_marker(sandbox_id)
        if cni.has_cache(sandbox_id):
            remove_if_present(marker)  # the ADD was done: only the marker's removal was cut short
            return
        found = self._find(sandbox_id)
        inspect = found[1] if found else None
        state = (inspect or {}).get("State") or {}
        running = bool(state.get("Running") and state.get("Pid"))
        log.warning("pod sandbox %s: the shim was killed while putting it on the CNI network; taking it off the "
                    "network and stopping it, so that the kubelet makes it again", sandbox_id[:12])
        try:
            self._cni_delete(sandbox_id, inspect, f"/proc/{state['Pid']}/ns/net" if running else "")
            released = True
        except CRIError as exc:
            log.error("%s; tried again at the next start", exc.message)
            released = False
        if running:
            self._stop_if_present(sandbox_id)
        if released:
            remove_if_present(marker)

    def _mark_add_in_progress(self, sandbox_id: str) -> str:
        marker = self._add_in_progress_marker(sandbox_id)
        try:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker, "wb"):
                pass
        except OSError as exc:
            raise CRIError(grpc.StatusCode.INTERNAL, f"cannot record the CNI setup of sandbox {sandbox_id}: {exc}"
                           ) from exc
        return marker

    def _add_in_progress_marker(self, sandbox_id: str) -> str:
        return os.path.join(self._config.root_directory, ADDS_IN_PROGRESS_DIRECTORY, sandbox_id)

    def _warn_of_pods_on_cni(self) -> None:
        """Warn when pods the node's CNI plugins set up are running but this shim has no CNI network:
        their addresses would never be given back (a node moved from cri-dockerd, whose default is cni)."""
        try:
            entries = self._docker.list_containers({  # Docker's "none" network: a plugin's pod, or an empty one
                "label": [f"{labels.CONTAINER_TYPE_LABEL}={labels.CONTAINER_TYPE_SANDBOX}"], "status": ["running"],
                "network": [network.CNI_POD_NETWORK_MODE]})
        except CRIError as exc:
            log.info("could not check the pods' networks: %s", exc.message)
            return
        on_cni = [entry["Id"][:12] for entry in entries]
        if on_cni:
            log.warning(
                "%d running pod sandboxes (%s) are on a network a CNI plugin set up, but --network-plugin is not "
                "cni: their networks will not be torn down when they stop; restart with --network-plugin=cni",
                len(on_cni), ", ".join(on_cni[:5]) + (", ..." if len(on_cni) > 5 else ""))

    # --- helpers ------------------------------------------------------------------------------------

    def _find(self, sandbox_id: str) -> tuple[str, dict[str, Any] | None] | None:
        """(full ID, Docker's inspect or None when only the checkpoint is left), None when unknown.

        A full ID costs one inspect; a unique prefix (as crictl passes) one list call.
        """
        if not sandbox_id:
            raise invalid_argument("pod_sandbox_id is empty")
        if not _SANDBOX_ID.fullmatch(sandbox_id):
            return None
        full_id = sandbox_id if len(sandbox_id) == 64 else self._resolve_prefix(sandbox_id)
        if full_id is None:
            return None
        try:
            inspect = self._docker.inspect_container(full_id)
        except CRIError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            return (full_id, None) if self._checkpoints.get(full_id) is not None else None
        if not labels.is_sandbox((inspect.get("Config") or {}).get("Labels")):
            raise invalid_argument(f"{sandbox_id} is a container, not a pod sandbox")
        return full_id, inspect

    def _run_finished(self, inspect: dict[str, Any] | None) -> contextlib.AbstractContextManager[bool | None]:
        """Held while no RunPodSandbox of this sandbox is between its create and its end (by the
        name the run asked for: one made after a conflict has a random seventh part); true when
        it waited for one."""
        asked = naming.unrandomized((inspect or {}).get("Name") or "")
        return self._runs.held(asked) if asked else contextlib.nullcontext()

    def _resolve_prefix(self, prefix: str) -> str | None:
        entries = self._docker.list_containers(
            {"label": [f"{labels.CONTAINER_TYPE_LABEL}={labels.CONTAINER_TYPE_SANDBOX}"], "id": [prefix]}
        )
        candidates = {entry["Id"] for entry in entries if entry["Id"].startswith(prefix)}
        candidates |= {sandbox_id for sandbox_id in self._checkpoints.all() if sandbox_id.startswith(prefix)}
        if len(candidates) > 1:
            shown = ", ".join(sorted(candidate[:12] for candidate in candidates))
            raise invalid_argument(f"pod sandbox id prefix {prefix!r} is ambiguous: it matches {shown}")
        return candidates.pop() if candidates else None

    def _stop_if_present(self, container_id: str) -> None:
        try:
            self._docker.stop_container(container_id, STOP_GRACE_SECONDS)
        except CRIError as exc:
            if not _already_gone(exc):
                raise

    def _remove_if_present(self, container_id: str) -> None:
        try:
            self._docker.remove_container(container_id, force=True)
        except CRIError as exc:
            if not _already_gone(exc):
                raise

    def _for_each(self, action: Callable[[str], None], container_ids: list[str]) -> None:
        """Run `action` on every container side by side: each stop may wait out a grace period."""
        side_by_side(self._container_calls, action, container_ids)


@contextlib.contextmanager
def _cni_errors(sandbox_id: str, what: str) -> Iterator[None]:
    """A plugin's failure as the gRPC status a person can act on."""
    try:
        yield
    except NetworkConfigError as exc:
        raise failed_precondition(f"cannot {what} the pod network of sandbox {sandbox_id}: {exc}") from None
    except PluginError as exc:
        message = f"cannot {what} the pod network of sandbox {sandbox_id}: {exc.message}"
        if exc.missing:
            raise failed_precondition(message) from None
        raise (deadline_exceeded if exc.timed_out else unavailable)(message) from None


class _KeyedLocks:
    """A lock per key (a sandbox's ID or name), kept only while a call holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def held(self, key: str) -> Iterator[bool]:
        """Holds `key`'s lock; yields whether another holder had to be waited for."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            waited = not lock.acquire(blocking=False)
            if waited:
                lock.acquire()
            try:
                yield waited
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def namespace_holder(state: Mapping[str, Any]) -> str:
    """The pause process of one start of a sandbox, from Docker's State: what holds its namespace."""
    return f"{state.get('Pid') or 0} {state.get('StartedAt') or ''}"


def side_by_side(pool: futures.Executor, action: Callable[[str], None], items: list[str]) -> None:
    """`action` on every item at once, the first in the calling thread and the others on `pool`'s
    kept threads (a pool made per call started two threads for every pod); the first failure raises
    once all are done."""
    others = [pool.submit(action, item) for item in items[1:]]
    try:
        for item in items[:1]:
            action(item)
    finally:
        futures.wait(others)
    for result in others:
        result.result()


def _already_gone(error: CRIError) -> bool:
    """A container Docker no longer has, or is removing right now: a stop or remove is done."""
    return error.code == grpc.StatusCode.NOT_FOUND or "already in progress" in error.message

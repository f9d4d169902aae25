"""Command-line entry point: build the services from the flags, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable

import grpc

from . import __version__, config as config_module, telemetry
from .checkpoint import CheckpointStore
from .cni import CNINetwork
from .container import RECOVERY_RETRY_SECONDS, ContainerService
from .cri.image_service import ImageServiceAdapter
from .cri.runtime_service import RuntimeServiceAdapter
from .events import ContainerEvents, IndexedDockerClient
from .errors import CRIError
from .exec import ExecService
from .image import ImageService
from .image_volume import ImageVolumes
from .logs import LogManager, docker_size_bytes
from .network import Network
from .runtime import RuntimeInfo
from .sandbox import SandboxService
from .server import CRIServer
from .stats import StatsService
from .streaming.runtime import StreamingRuntime
from .streaming.server import StreamingServer

log = logging.getLogger("dockershim_py")


def main(argv: list[str] | None = None) -> int:
    config = config_module.from_args(argv)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("docker", "urllib3"):  # their debug lines repeat every request
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    raise_open_files_limit()
    docker = IndexedDockerClient(
        config.docker_endpoint, config.runtime_request_timeout, pool_size=config.grpc_workers
    )
    network = Network(CNINetwork(config.cni_conf_dir, config.cni_bin_dirs, config.cni_cache_dir,
                                 config.runtime_request_timeout) if config.network_plugin == "cni" else None,
                      os.path.join(config.root_directory, "pod-cidr"))
    stats = StatsService(docker, config)
    # Without the writable-layer worker, ImageFsInfo asks Docker to measure the layers (docker system df).
    measured_layers = stats.writable_layers_bytes if config.writable_layer_scan_period > 0 else None
    images = ImageService(docker, config, measured_layers)
    try:
        checkpoints = CheckpointStore(os.path.join(config.root_directory, "sandbox"))
        container_logs = LogManager(
            os.path.join(config.root_directory, "logs"), docker_size_bytes(config.docker_log_max_size)
        )
    except OSError as exc:
        log.error("cannot use the root directory %s: %s", config.root_directory, exc)
        return 2
    containers = ContainerService(docker, config, container_logs, ImageVolumes(docker, config.root_directory))
    sandboxes = SandboxService(docker, config, images, checkpoints, containers.removed_with_pod, network)
    streaming = StreamingServer(config, StreamingRuntime(docker))
    adapters = [
        RuntimeServiceAdapter(
            RuntimeInfo(docker, config, network), sandboxes, containers, ExecService(docker), stats=stats,
            streaming=streaming, events=ContainerEvents(docker.events, sandboxes, containers,
                                   max_subscribers=max(1, config.grpc_workers // 4)),
        ),
        ImageServiceAdapter(images),
    ]
    server = CRIServer(config.container_runtime_endpoint, adapters, config.grpc_workers, config.grpc_transport)
    metrics_server = (telemetry.MetricsServer(*config_module.parse_bind_address(config.metrics_address))
                      if config.metrics_address else None)
    telemetry.watch_index(lambda: docker.fresh)
    stopping = threading.Event()
    interrupted_network_setups = sandboxes.interrupted_network_setups()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        os.makedirs(config.root_directory, exist_ok=True)
        if metrics_server is not None:
            metrics_server.start()
        streaming.start()
        server.start()
    except (CRIError, OSError) as exc:  # ssl.SSLError is an OSError too
        streaming.stop()
        if metrics_server is not None:
            metrics_server.stop()
        log.error("cannot start: %s", exc)
        return 2
    log.info("dockershim-py %s, Docker at %s", __version__, config.docker_endpoint)
    try:
        docker.ping()
    except CRIError as exc:
        log.warning("Docker is not reachable yet; RuntimeReady stays false until it is: %s", exc.message)
    docker.start_index()
    recover_in_background([containers.recover, lambda: sandboxes.recover_pod_networks(interrupted_network_setups)],
                          stopping)
    # What exists by now (modules, protobuf descriptors, the servers) lives as long as the process:
    # kept out of the collector's reach, a full collection walks only what requests made, and the
    # pause it puts on every call in flight (tens of ms at 110 pods) shrinks with it.
    gc.freeze()
    stopping.wait()
    log.info("shutting down: finishing in-flight calls for up to %.0fs", config.shutdown_grace)
    docker.events.close_all()  # GetContainerEvents streams would otherwise hold the shutdown open
    server.stop(config.shutdown_grace)
    docker.stop_index()
    streaming.stop()
    stats.close()
    container_logs.stop()
    if metrics_server is not None:
        metrics_server.stop()
    return 0


def run() -> None:
    """The process: main, then its exit without waiting for a worker thread that a call holds past
    the shutdown grace (a Docker stop may last minutes): the node must not go without its CRI
    socket for longer than the operator allowed."""
    code = main()
    # What atexit holds runs (the logging flush among it); threading's own exit hooks, which join
    # every worker thread, do not: they wait on threads that a hung Docker call holds.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one, as Go's runtime does for cri-dockerd and
    containerd: the log copy of every running container holds three descriptors, and a soft limit
    of 1024 (a root shell's, a systemd service's) ran out at about 330 containers, after which
    every Docker call failed too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
        return
    log.info("open files limit raised from %d to %d", soft, hard)


def recover_in_background(steps: list[Callable[[], None]], stopping: threading.Event) -> threading.Thread:
    """Each step in turn, each tried again while Docker does not answer (it may start after the shim);
    a step that fails otherwise is logged and the next one runs."""

    def recover() -> None:
        for step in steps:
            while not stopping.is_set():
                try:
                    step()
                    break
                except CRIError as exc:
                    if exc.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        log.error("recovery: %s", exc.message)
                        break
                    log.info("recovery: %s; trying again in %.0fs", exc.message, RECOVERY_RETRY_SECONDS)
                stopping.wait(RECOVERY_RETRY_SECONDS)

    thread = threading.Thread(target=recover, name="recovery", daemon=True)
    thread.start()
    return thread

"""Settings of one shim process, filled once from the command line and passed down."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from dataclasses import dataclass

from . import image_reference
from .errors import CRIError, invalid_argument

DEFAULT_ENDPOINT = "unix:///var/run/dockershim.sock"
DEFAULT_DOCKER_ENDPOINT = "unix:///var/run/docker.sock"
DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.10"
DEFAULT_ROOT_DIRECTORY = "/var/lib/dockershim-py"
# The kubelet keeps pause containers the last to be OOM-killed on the node, as dockershim did.
DEFAULT_SANDBOX_OOM_SCORE_ADJ = -998
# Docker's json-file log of each container, which the shim copies into the CRI log file: what
# Docker keeps is what survives while the shim is down, and costs this much disk per container.
DEFAULT_DOCKER_LOG_MAX_SIZE = "10m"
DEFAULT_DOCKER_LOG_MAX_FILES = 3

# How often each container's writable layer is measured, and how many directory entries a
# second the one background walker may visit (cri-dockerd had dockerd `du` every layer each minute).
DEFAULT_WRITABLE_LAYER_SCAN_PERIOD = 60.0
DEFAULT_WRITABLE_LAYER_SCAN_RATE = 10_000

# The streaming server (exec, attach, port-forward): loopback on an ephemeral port, as dockershim
# and containerd bind it (cri-dockerd listened on every interface); the kubelet's idle timeout;
# how long a client may take to open a session's streams.
DEFAULT_STREAMING_BIND_ADDR = "127.0.0.1:0"
DEFAULT_STREAMING_IDLE_TIMEOUT = 4 * 3600.0
DEFAULT_STREAMING_CREATION_TIMEOUT = 30.0

# CNI, as dockershim's --network-plugin=cni found it; Debian's containernetworking-plugins
# installs the plugins in /usr/lib/cni. libcni keeps its results under the cache directory.
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_CNI_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_CNI_CACHE_DIR = "/var/lib/cni"

# The places the kubelet's credential keyring searched for Docker config.json files.
DEFAULT_DOCKER_CONFIG_PATHS = (
    "~/.docker/config.json",
    "/var/lib/kubelet/config.json",
    "/.docker/config.json",
)


@dataclass(frozen=True)
class Config:
    container_runtime_endpoint: str = DEFAULT_ENDPOINT
    docker_endpoint: str = DEFAULT_DOCKER_ENDPOINT
    runtime_request_timeout: float = 120.0
    image_pull_progress_deadline: float = 60.0
    pod_infra_container_image: str = DEFAULT_SANDBOX_IMAGE
    root_directory: str = DEFAULT_ROOT_DIRECTORY
    docker_config_paths: tuple[str, ...] = DEFAULT_DOCKER_CONFIG_PATHS
    grpc_workers: int = 32
    grpc_transport: str = "http2"
    shutdown_grace: float = 30.0
    log_level: str = "info"
    writable_layer_scan_period: float = DEFAULT_WRITABLE_LAYER_SCAN_PERIOD
    writable_layer_scan_rate: int = DEFAULT_WRITABLE_LAYER_SCAN_RATE
    sandbox_oom_score_adj: int = DEFAULT_SANDBOX_OOM_SCORE_ADJ
    docker_log_max_size: str = DEFAULT_DOCKER_LOG_MAX_SIZE
    docker_log_max_files: int = DEFAULT_DOCKER_LOG_MAX_FILES
    streaming_bind_addr: str = DEFAULT_STREAMING_BIND_ADDR
    streaming_tls_cert: str = ""
    streaming_tls_key: str = ""
    streaming_tls_client_ca: str = ""
    streaming_idle_timeout: float = DEFAULT_STREAMING_IDLE_TIMEOUT
    streaming_creation_timeout: float = DEFAULT_STREAMING_CREATION_TIMEOUT
    network_plugin: str = ""
    cni_conf_dir: str = DEFAULT_CNI_CONF_DIR
    cni_bin_dirs: tuple[str, ...] = DEFAULT_CNI_BIN_DIRS
    cni_cache_dir: str = DEFAULT_CNI_CACHE_DIR
    metrics_address: str = ""


def _duration(text: str) -> float:
    """Parse a kubelet-style duration (`2m`, `90s`, `1m30s`, `500ms`) or plain seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("empty duration: use e.g. 2m, 90s, 1m30s")
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 2m, 90s, 1m30s")
        return seconds
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in units or not number:
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 2m, 90s, 1m30s")
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    if number:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: a number needs a unit (h, m, s, ms)")
    return total


def parse_bind_address(text: str) -> tuple[str, int]:
    """(host, port) of `HOST[:PORT]` or `[V6]:PORT`; the host must be an IP address, port 0 picks one."""
    host, port = text.strip(), "0"
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or host[end + 1:end + 2] not in ("", ":"):
            raise ValueError(f"invalid address {text!r}: use HOST:PORT or [IPV6]:PORT")
        host, port = host[1:end], host[end + 2:] or "0"
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid address {text!r}: the host must be an IP address") from None
    if not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid port in {text!r}")
    return host, int(port)


def _bind_address(text: str) -> str:
    try:
        parse_bind_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def _bind_address_or_off(text: str) -> str:
    return _bind_address(text) if text.strip() else ""


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """("unix", path) or ("tcp", "host:port") from the --container-runtime-endpoint forms."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://"):]
        if not path.startswith("/"):
            raise invalid_argument(f"endpoint {endpoint!r}: a unix socket path must be absolute")
        return "unix", path
    if endpoint.startswith("tcp://"):
        address = endpoint[len("tcp://"):]
        host, sep, port = address.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not host:
            raise invalid_argument(f"endpoint {endpoint!r}: expected tcp://host:port")
        if int(port) > 65535:
            raise invalid_argument(f"endpoint {endpoint!r}: port {port} is above 65535")
        return "tcp", address
    if endpoint.startswith("/"):
        return "unix", endpoint
    raise invalid_argument(f"endpoint {endpoint!r}: expected unix:///path or tcp://host:port")


def _docker_endpoint(text: str) -> str:
    """An endpoint as parse_endpoint takes it, read as the Docker CLI reads DOCKER_HOST: a tcp address
    without a port is on 2375. Checked here, so that a wrong endpoint stops the shim at start rather
    than failing every later call."""
    endpoint = text.strip()
    if endpoint.startswith("/"):
        endpoint = f"unix://{endpoint}"
    if endpoint.startswith("tcp://"):
        endpoint = endpoint.rstrip("/")
        address = endpoint[len("tcp://"):]
        if ":" not in address or address.endswith("]"):  # `host` or `[v6]`: no port given
            endpoint += ":2375"
    try:
        parse_endpoint(endpoint)
    except CRIError as exc:
        raise argparse.ArgumentTypeError(f"invalid Docker endpoint: {exc.message}") from None
    return endpoint


def _log_size(text: str) -> str:
    """Docker's log-opt size: a number with an optional k, m or g."""
    if not re.fullmatch(r"[1-9][0-9]*[kmg]?", text.strip().lower()):
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use e.g. 10m, 512k, 1g")
    return text.strip().lower()


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dockershim-py",
        description="CRI runtime and image service for the kubelet, backed by Docker Engine.",
    )
    parser.add_argument(
        "--container-runtime-endpoint", "--listen", dest="container_runtime_endpoint",
        default=DEFAULT_ENDPOINT,
        help="where the CRI gRPC server listens: unix:///path or tcp://host:port (default %(default)s)",
    )
    parser.add_argument(
        "--docker-endpoint", type=_docker_endpoint, default=os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_ENDPOINT,
        help="Docker Engine API endpoint (default $DOCKER_HOST or %(default)s)",
    )
    parser.add_argument(
        "--runtime-request-timeout", type=_duration, default=120.0,
        help="timeout of every Docker request except pulls, logs and streams (default 2m)",
    )
    parser.add_argument(
        "--image-pull-progress-deadline", type=_duration, default=60.0,
        help="cancel an image pull that reports no progress for this long (default 1m)",
    )
    parser.add_argument(
        "--pod-infra-container-image", default=DEFAULT_SANDBOX_IMAGE,
        help="image of the pause container of every pod sandbox (default %(default)s)",
    )
    parser.add_argument(
        "--root-directory", default=DEFAULT_ROOT_DIRECTORY,
        help="where the shim keeps its state: checkpoints, log copier offsets, image volumes, the pod "
             "CIDR, CNI ADDs under way (default %(default)s)",
    )
    parser.add_argument(
        "--docker-config", action="append", dest="docker_config_paths", metavar="PATH",
        help="Docker config.json to take registry credentials from; repeat for several "
             "(default: ~/.docker/config.json, /var/lib/kubelet/config.json, /.docker/config.json)",
    )
    parser.add_argument(
        "--grpc-workers", type=int, default=32,
        help="threads serving CRI calls concurrently (default %(default)s)",
    )
    parser.add_argument(
        "--shutdown-grace-period", dest="shutdown_grace", type=_duration, default=30.0,
        help="at SIGTERM, how long calls in flight may finish; the process then exits, whatever "
             "Docker call a worker still waits on (default 30s)",
    )
    parser.add_argument(
        "--grpc-transport", choices=["http2", "grpcio"], default="http2",
        help="what carries the CRI's gRPC calls: dockershim-py's own HTTP/2 framer, about half of "
             "grpcio's CPU a call, or grpcio's server (default %(default)s)",
    )
    parser.add_argument(
        "--sandbox-oom-score-adj", type=int, default=DEFAULT_SANDBOX_OOM_SCORE_ADJ,
        help="OOM score adjustment of pause containers, -1000..1000 (default %(default)s; 0 on hosts "
             "that cannot lower OOM scores)",
    )
    parser.add_argument(
        "--docker-log-max-size", type=_log_size, default=DEFAULT_DOCKER_LOG_MAX_SIZE,
        help="size at which Docker rotates a container's json-file log, which the shim copies into the "
             "CRI log file (default %(default)s)",
    )
    parser.add_argument(
        "--docker-log-max-files", type=int, default=DEFAULT_DOCKER_LOG_MAX_FILES,
        help="json-file logs Docker keeps per container, at least 2 (default %(default)s)",
    )
    parser.add_argument(
        "--writable-layer-scan-period", type=_duration, default=DEFAULT_WRITABLE_LAYER_SCAN_PERIOD,
        help="how often the stats measure each container's writable layer, in the background; "
             "0 turns it off (default 1m)",
    )
    parser.add_argument(
        "--writable-layer-scan-rate", type=int, default=DEFAULT_WRITABLE_LAYER_SCAN_RATE,
        help="directory entries per second the writable-layer walker may visit (default %(default)s)",
    )
    parser.add_argument(
        "--streaming-bind-addr", type=_bind_address, default=DEFAULT_STREAMING_BIND_ADDR, metavar="HOST:PORT",
        help="where the exec/attach/port-forward streaming server listens; port 0 picks a free one "
             "(default %(default)s: loopback only)",
    )
    parser.add_argument(
        "--streaming-tls-cert", default="", metavar="PATH",
        help="serve the streaming server over TLS with this PEM certificate (chain); needs --streaming-tls-key",
    )
    parser.add_argument("--streaming-tls-key", default="", metavar="PATH", help="the PEM key of --streaming-tls-cert")
    parser.add_argument(
        "--streaming-tls-client-ca", default="", metavar="PATH",
        help="with --streaming-tls-cert: accept only clients whose certificate this PEM CA bundle signed "
             "(the API server's kubelet-client certificate, say); without it any client may connect",
    )
    parser.add_argument(
        "--streaming-connection-idle-timeout", dest="streaming_idle_timeout", type=_duration,
        default=DEFAULT_STREAMING_IDLE_TIMEOUT,
        help="close a streaming connection that carried nothing for this long (default 4h, the kubelet's)",
    )
    parser.add_argument(
        "--streaming-creation-timeout", type=_duration, default=DEFAULT_STREAMING_CREATION_TIMEOUT,
        help="how long a client may take to open the streams of an exec, attach or forwarded "
             "connection (default 30s)",
    )
    parser.add_argument(
        "--network-plugin", default="", choices=["", "cni"],
        help="'' puts pods on Docker's bridge; 'cni' on the network of the CNI config in "
             "--cni-conf-dir, as dockershim's flag did (default '')",
    )
    parser.add_argument(
        "--cni-conf-dir", default=DEFAULT_CNI_CONF_DIR,
        help="where the CNI network config is: the first *.conf, *.conflist or *.json by name (default %(default)s)",
    )
    parser.add_argument(
        "--cni-bin-dir", default=",".join(DEFAULT_CNI_BIN_DIRS),
        help="directories of the CNI plugin executables, comma-separated, searched in order (default %(default)s)",
    )
    parser.add_argument(
        "--cni-cache-dir", default=DEFAULT_CNI_CACHE_DIR,
        help="where each pod's CNI result is kept for its teardown, shared with libcni (default %(default)s)",
    )
    parser.add_argument(
        "--metrics-address", type=_bind_address_or_off, default="", metavar="HOST:PORT",
        help="serve the shim's own Prometheus metrics (CRI call latencies and codes, Docker requests, "
             "the event index, streaming sessions, process CPU and memory) on http://HOST:PORT/metrics; "
             "off by default, and best kept on loopback",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="log verbosity (default %(default)s)",
    )
    return parser


def from_args(argv: list[str] | None = None) -> Config:
    args = argument_parser().parse_args(argv)
    paths = tuple(args.docker_config_paths or DEFAULT_DOCKER_CONFIG_PATHS)
    if not args.docker_config_paths and os.environ.get("DOCKER_CONFIG"):
        paths = (os.path.join(os.environ["DOCKER_CONFIG"], "config.json"),) + paths
    try:
        parse_endpoint(args.container_runtime_endpoint)
    except CRIError as exc:
        argument_parser().error(f"--container-runtime-endpoint: {exc.message}")
    if not args.runtime_request_timeout > 0:
        argument_parser().error("--runtime-request-timeout must be positive")
    if not args.image_pull_progress_deadline > 0:
        argument_parser().error("--image-pull-progress-deadline must be positive")
    if args.shutdown_grace < 0:
        argument_parser().error("--shutdown-grace-period must not be negative (0 exits at once)")
    if args.grpc_workers < 1:
        argument_parser().error("--grpc-workers must be at least 1")
    if args.docker_log_max_files < 2:
        argument_parser().error("--docker-log-max-files must be at least 2 (the log copier follows rotations)")
    if args.writable_layer_scan_period < 0:
        argument_parser().error("--writable-layer-scan-period must not be negative")
    if args.writable_layer_scan_rate < 1:
        argument_parser().error("--writable-layer-scan-rate must be at least 1")
    if bool(args.streaming_tls_cert) != bool(args.streaming_tls_key):
        argument_parser().error("--streaming-tls-cert and --streaming-tls-key go together")
    if args.streaming_tls_client_ca and not args.streaming_tls_cert:
        argument_parser().error("--streaming-tls-client-ca needs --streaming-tls-cert and --streaming-tls-key")
    if args.streaming_idle_timeout <= 0 or args.streaming_creation_timeout <= 0:
        argument_parser().error("the streaming timeouts must be positive")
    if not -1000 <= args.sandbox_oom_score_adj <= 1000:
        argument_parser().error("--sandbox-oom-score-adj must be in -1000..1000")
    try:
        image_reference.parse(args.pod_infra_container_image)
    except CRIError as exc:
        argument_parser().error(f"--pod-infra-container-image: {exc.message}")
    return Config(
        container_runtime_endpoint=args.container_runtime_endpoint,
        docker_endpoint=args.docker_endpoint,
        runtime_request_timeout=args.runtime_request_timeout,
        image_pull_progress_deadline=args.image_pull_progress_deadline,
        pod_infra_container_image=args.pod_infra_container_image,
        root_directory=args.root_directory,
        docker_config_paths=paths,
        grpc_workers=args.grpc_workers,
        shutdown_grace=args.shutdown_grace,
        grpc_transport=args.grpc_transport,
        log_level=args.log_level,
        writable_layer_scan_period=args.writable_layer_scan_period,
        writable_layer_scan_rate=args.writable_layer_scan_rate,
        sandbox_oom_score_adj=args.sandbox_oom_score_adj,
        docker_log_max_size=args.docker_log_max_size,
        docker_log_max_files=args.docker_log_max_files,
        streaming_bind_addr=args.streaming_bind_addr,
        streaming_tls_cert=args.streaming_tls_cert,
        streaming_tls_key=args.streaming_tls_key,
        streaming_tls_client_ca=args.streaming_tls_client_ca,
        streaming_idle_timeout=args.streaming_idle_timeout,
        streaming_creation_timeout=args.streaming_creation_timeout,
        network_plugin=args.network_plugin,
        cni_conf_dir=args.cni_conf_dir,
        cni_bin_dirs=tuple(directory for directory in args.cni_bin_dir.split(",") if directory),
        cni_cache_dir=args.cni_cache_dir,
        metrics_address=args.metrics_address,
    )

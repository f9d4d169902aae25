"""Checks on the CRI v1 protobuf definition and its generated Python code.

* The committed bindings in dockershim_py/api/ must be exactly what
  tools/genproto.py produces from proto/api.proto (no stale generated code).
* The descriptors must match the k8s.io/cri-api v0.36 wire contract: package,
  services, RPC shapes and a set of field names/numbers/types.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
API_DIR = REPO_ROOT / "dockershim_py" / "api"
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py")

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def _load_genproto():
    spec = importlib.util.spec_from_file_location(
        "_genproto_under_test", REPO_ROOT / "tools" / "genproto.py"
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _committed_grpc_tools_version() -> str:
    text = (API_DIR / "api_pb2_grpc.py").read_text(encoding="utf-8")
    match = re.search(r"^GRPC_GENERATED_VERSION = '([^']+)'", text, re.M)
    assert match, "api_pb2_grpc.py has no GRPC_GENERATED_VERSION line"
    return match.group(1)


# ---------------------------------------------------------------------------
# (a) generated code is up to date
# ---------------------------------------------------------------------------


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed")
    from importlib.metadata import version

    installed = version("grpcio-tools")
    committed = _committed_grpc_tools_version()
    if installed != committed:
        pytest.skip(
            f"committed code was generated with grpcio-tools {committed}, "
            f"installed is {installed}; byte comparison needs the pinned version"
        )

    genproto = _load_genproto()
    written = genproto.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(GENERATED)

    stale = [
        name
        for name in GENERATED
        if (tmp_path / name).read_bytes() != (API_DIR / name).read_bytes()
    ]
    assert not stale, (
        f"generated files in dockershim_py/api/ are stale: {stale}; "
        "run `make proto` (python tools/genproto.py) and commit the result"
    )


def test_grpc_module_uses_package_relative_import() -> None:
    text = (API_DIR / "api_pb2_grpc.py").read_text(encoding="utf-8")
    assert "from . import api_pb2 as api__pb2" in text
    assert "\nimport api_pb2 as api__pb2" not in text


def test_package_init_is_hand_written() -> None:
    text = (API_DIR / "__init__.py").read_text(encoding="utf-8")
    assert text.startswith('"""') and len(text.splitlines()) == 1


# ---------------------------------------------------------------------------
# (b) wire facts from k8s.io/cri-api v0.36 (pkg/apis/runtime/v1/api.proto)
# ---------------------------------------------------------------------------

RUNTIME_METHODS = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "StreamPodSandboxes",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "StreamContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "StreamContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "StreamPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "StreamPodSandboxMetrics",
    "RuntimeConfig",
    "UpdatePodSandboxResources",
]

IMAGE_METHODS = [
    "ListImages",
    "StreamImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
]

SERVER_STREAMING = {
    "RuntimeService": {
        "StreamPodSandboxes",
        "StreamContainers",
        "StreamContainerStats",
        "StreamPodSandboxStats",
        "GetContainerEvents",
        "StreamPodSandboxMetrics",
    },
    "ImageService": {"StreamImages"},
}


@pytest.fixture(scope="module")
def pb():
    pytest.importorskip("google.protobuf")
    from dockershim_py.api import api_pb2

    return api_pb2


@pytest.fixture(scope="module")
def fdesc(pb):
    return pb.DESCRIPTOR


def _type_name(field) -> str:
    """Render a field's wire type the way it is written in the .proto file."""
    from google.protobuf.descriptor import FieldDescriptor as F

    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = field.message_type.fields_by_name["key"]
        value = field.message_type.fields_by_name["value"]
        return f"map<{_type_name(key)}, {_type_name(value)}>"
    if field.type == F.TYPE_MESSAGE:
        base = field.message_type.full_name
    elif field.type == F.TYPE_ENUM:
        base = field.enum_type.full_name
    else:
        names = {
            getattr(F, attr): attr[len("TYPE_"):].lower()
            for attr in dir(F)
            if attr.startswith("TYPE_")
        }
        base = names[field.type]
    return f"repeated {base}" if field.is_repeated else base


def _fields(fdesc, message: str) -> dict[str, tuple[int, str]]:
    msg = fdesc.message_types_by_name[message]
    return {f.name: (f.number, _type_name(f)) for f in msg.fields}


def test_file_package_and_services(fdesc) -> None:
    from google.protobuf import descriptor_pb2

    assert fdesc.package == "runtime.v1"
    proto = descriptor_pb2.FileDescriptorProto.FromString(fdesc.serialized_pb)
    assert proto.syntax == "proto3"
    assert proto.package == "runtime.v1"
    assert proto.options.go_package == "k8s.io/cri-api/pkg/apis/runtime/v1"
    assert list(proto.dependency) == []  # no gogoproto (or any) imports
    assert set(fdesc.services_by_name) == {"RuntimeService", "ImageService"}


def test_runtime_service_methods(fdesc) -> None:
    svc = fdesc.services_by_name["RuntimeService"]
    assert svc.full_name == "runtime.v1.RuntimeService"
    assert len(svc.methods) == 35
    assert [m.name for m in svc.methods] == RUNTIME_METHODS


def test_image_service_methods(fdesc) -> None:
    svc = fdesc.services_by_name["ImageService"]
    assert svc.full_name == "runtime.v1.ImageService"
    assert len(svc.methods) == 6
    assert [m.name for m in svc.methods] == IMAGE_METHODS


@pytest.mark.parametrize("service", ["RuntimeService", "ImageService"])
def test_streaming_shapes(fdesc, service: str) -> None:
    svc = fdesc.services_by_name[service]
    assert not any(m.client_streaming for m in svc.methods)
    streaming = {m.name for m in svc.methods if m.server_streaming}
    assert streaming == SERVER_STREAMING[service]


@pytest.mark.parametrize(
    ("service", "method", "req", "resp"),
    [
        ("RuntimeService", "GetContainerEvents", "GetEventsRequest", "ContainerEventResponse"),
        ("RuntimeService", "StreamPodSandboxes", "StreamPodSandboxesRequest", "StreamPodSandboxesResponse"),
        ("RuntimeService", "StreamPodSandboxMetrics", "StreamPodSandboxMetricsRequest", "StreamPodSandboxMetricsResponse"),
        ("RuntimeService", "RuntimeConfig", "RuntimeConfigRequest", "RuntimeConfigResponse"),
        ("RuntimeService", "UpdatePodSandboxResources", "UpdatePodSandboxResourcesRequest", "UpdatePodSandboxResourcesResponse"),
        ("RuntimeService", "CheckpointContainer", "CheckpointContainerRequest", "CheckpointContainerResponse"),
        ("ImageService", "StreamImages", "StreamImagesRequest", "StreamImagesResponse"),
        ("ImageService", "ImageFsInfo", "ImageFsInfoRequest", "ImageFsInfoResponse"),
    ],
)
def test_method_types(fdesc, service, method, req, resp) -> None:
    m = fdesc.services_by_name[service].methods_by_name[method]
    assert m.full_name == f"runtime.v1.{service}.{method}"
    assert m.input_type.full_name == f"runtime.v1.{req}"
    assert m.output_type.full_name == f"runtime.v1.{resp}"


def test_grpc_stub_paths(pb) -> None:
    pytest.importorskip("grpc")
    from dockershim_py.api import api_pb2_grpc

    assert hasattr(api_pb2_grpc, "RuntimeServiceStub")
    assert hasattr(api_pb2_grpc, "RuntimeServiceServicer")
    assert hasattr(api_pb2_grpc, "add_RuntimeServiceServicer_to_server")
    assert hasattr(api_pb2_grpc, "ImageServiceStub")
    assert hasattr(api_pb2_grpc, "ImageServiceServicer")
    assert hasattr(api_pb2_grpc, "add_ImageServiceServicer_to_server")
    for name in RUNTIME_METHODS:
        assert callable(getattr(api_pb2_grpc.RuntimeServiceServicer, name))
    for name in IMAGE_METHODS:
        assert callable(getattr(api_pb2_grpc.ImageServiceServicer, name))


def test_pod_sandbox_config(fdesc) -> None:
    assert _fields(fdesc, "PodSandboxConfig") == {
        "metadata": (1, "runtime.v1.PodSandboxMetadata"),
        "hostname": (2, "string"),
        "log_directory": (3, "string"),
        "dns_config": (4, "runtime.v1.DNSConfig"),
        "port_mappings": (5, "repeated runtime.v1.PortMapping"),
        "labels": (6, "map<string, string>"),
        "annotations": (7, "map<string, string>"),
        "linux": (8, "runtime.v1.LinuxPodSandboxConfig"),
        "windows": (9, "runtime.v1.WindowsPodSandboxConfig"),
    }


def test_container_config(fdesc) -> None:
    assert _fields(fdesc, "ContainerConfig") == {
        "metadata": (1, "runtime.v1.ContainerMetadata"),
        "image": (2, "runtime.v1.ImageSpec"),
        "command": (3, "repeated string"),
        "args": (4, "repeated string"),
        "working_dir": (5, "string"),
        "envs": (6, "repeated runtime.v1.KeyValue"),
        "mounts": (7, "repeated runtime.v1.Mount"),
        "devices": (8, "repeated runtime.v1.Device"),
        "labels": (9, "map<string, string>"),
        "annotations": (10, "map<string, string>"),
        "log_path": (11, "string"),
        "stdin": (12, "bool"),
        "stdin_once": (13, "bool"),
        "tty": (14, "bool"),
        "linux": (15, "runtime.v1.LinuxContainerConfig"),
        "windows": (16, "runtime.v1.WindowsContainerConfig"),
        "CDI_devices": (17, "repeated runtime.v1.CDIDevice"),
        "stop_signal": (18, "runtime.v1.Signal"),
    }


def test_linux_container_security_context(fdesc) -> None:
    assert _fields(fdesc, "LinuxContainerSecurityContext") == {
        "capabilities": (1, "runtime.v1.Capability"),
        "privileged": (2, "bool"),
        "namespace_options": (3, "runtime.v1.NamespaceOption"),
        "selinux_options": (4, "runtime.v1.SELinuxOption"),
        "run_as_user": (5, "runtime.v1.Int64Value"),
        "run_as_username": (6, "string"),
        "readonly_rootfs": (7, "bool"),
        "supplemental_groups": (8, "repeated int64"),
        "apparmor_profile": (9, "string"),
        "seccomp_profile_path": (10, "string"),
        "no_new_privs": (11, "bool"),
        "run_as_group": (12, "runtime.v1.Int64Value"),
        "masked_paths": (13, "repeated string"),
        "readonly_paths": (14, "repeated string"),
        "seccomp": (15, "runtime.v1.SecurityProfile"),
        "apparmor": (16, "runtime.v1.SecurityProfile"),
        "supplemental_groups_policy": (17, "runtime.v1.SupplementalGroupsPolicy"),
    }


def test_image(fdesc) -> None:
    assert _fields(fdesc, "Image") == {
        "id": (1, "string"),
        "repo_tags": (2, "repeated string"),
        "repo_digests": (3, "repeated string"),
        "size": (4, "uint64"),
        "uid": (5, "runtime.v1.Int64Value"),
        "username": (6, "string"),
        "spec": (7, "runtime.v1.ImageSpec"),
        "pinned": (8, "bool"),
    }


def test_image_spec_sparse_numbers(fdesc) -> None:
    assert _fields(fdesc, "ImageSpec") == {
        "image": (1, "string"),
        "annotations": (2, "map<string, string>"),
        "user_specified_image": (18, "string"),
        "runtime_handler": (19, "string"),
        "image_ref": (20, "string"),
    }


def test_container_status(fdesc) -> None:
    fields = _fields(fdesc, "ContainerStatus")
    assert len(fields) == 19
    assert fields["exit_code"] == (7, "int32")
    assert fields["image"] == (8, "runtime.v1.ImageSpec")
    assert fields["image_ref"] == (9, "string")
    assert fields["mounts"] == (14, "repeated runtime.v1.Mount")
    assert fields["resources"] == (16, "runtime.v1.ContainerResources")
    assert fields["image_id"] == (17, "string")
    assert fields["user"] == (18, "runtime.v1.ContainerUser")
    assert fields["stop_signal"] == (19, "runtime.v1.Signal")


def test_small_wire_oddities(fdesc) -> None:
    # KeyValue.value is bytes since cri-api v0.36.2 (was string).
    assert _fields(fdesc, "KeyValue") == {"key": (1, "string"), "value": (2, "bytes")}
    # Namespace has no field 1.
    assert _fields(fdesc, "Namespace") == {"options": (2, "runtime.v1.NamespaceOption")}
    # camelCase / capitalised field names are part of the contract.
    mount = _fields(fdesc, "Mount")
    assert mount["uidMappings"] == (6, "repeated runtime.v1.IDMapping")
    assert mount["gidMappings"] == (7, "repeated runtime.v1.IDMapping")
    assert mount["image_sub_path"] == (10, "string")
    assert _fields(fdesc, "PsiStats") == {
        "Full": (1, "runtime.v1.PsiData"),
        "Some": (2, "runtime.v1.PsiData"),
    }
    assert _fields(fdesc, "PsiData")["Avg300"] == (4, "double")
    assert _fields(fdesc, "PodSandboxStatusResponse") == {
        "status": (1, "runtime.v1.PodSandboxStatus"),
        "info": (2, "map<string, string>"),
        "containers_statuses": (3, "repeated runtime.v1.ContainerStatus"),
        "timestamp": (4, "int64"),
    }
    assert _fields(fdesc, "UpdatePodSandboxResourcesRequest") == {
        "pod_sandbox_id": (1, "string"),
        "overhead": (2, "runtime.v1.LinuxContainerResources"),
        "resources": (3, "runtime.v1.LinuxContainerResources"),
    }
    assert _fields(fdesc, "StreamContainerStatsResponse") == {
        "container_stats": (1, "repeated runtime.v1.ContainerStats"),
    }


def test_deprecated_and_redacted_fields(fdesc) -> None:
    def opts(message: str, field: str):
        return fdesc.message_types_by_name[message].fields_by_name[field].GetOptions()

    assert opts("LinuxSandboxSecurityContext", "seccomp_profile_path").deprecated
    assert opts("LinuxContainerSecurityContext", "apparmor_profile").deprecated
    assert opts("LinuxContainerSecurityContext", "seccomp_profile_path").deprecated
    for name in ("password", "auth", "identity_token", "registry_token"):
        assert opts("AuthConfig", name).debug_redact, name
    for name in ("username", "server_address"):
        assert not opts("AuthConfig", name).debug_redact, name


def test_enums(fdesc, pb) -> None:
    def values(enum) -> dict[str, int]:
        return {v.name: v.number for v in enum.values}

    enums = fdesc.enum_types_by_name
    assert values(enums["ContainerState"]) == {
        "CONTAINER_CREATED": 0,
        "CONTAINER_RUNNING": 1,
        "CONTAINER_EXITED": 2,
        "CONTAINER_UNKNOWN": 3,
    }
    assert values(enums["PodSandboxState"]) == {"SANDBOX_READY": 0, "SANDBOX_NOTREADY": 1}
    assert values(enums["NamespaceMode"]) == {"POD": 0, "CONTAINER": 1, "NODE": 2, "TARGET": 3}
    assert values(enums["Protocol"]) == {"TCP": 0, "UDP": 1, "SCTP": 2}
    assert values(enums["ContainerEventType"]) == {
        "CONTAINER_CREATED_EVENT": 0,
        "CONTAINER_STARTED_EVENT": 1,
        "CONTAINER_STOPPED_EVENT": 2,
        "CONTAINER_DELETED_EVENT": 3,
    }
    assert values(enums["CgroupDriver"]) == {"SYSTEMD": 0, "CGROUPFS": 1}
    signal = values(enums["Signal"])
    assert len(signal) == 66
    assert signal["RUNTIME_DEFAULT"] == 0
    assert signal["SIGKILL"] == 13
    assert signal["SIGTERM"] == 23
    assert signal["SIGRTMAX"] == 65
    profile = fdesc.message_types_by_name["SecurityProfile"].enum_types_by_name["ProfileType"]
    assert values(profile) == {"RuntimeDefault": 0, "Unconfined": 1, "Localhost": 2}


def test_roundtrip_encoding(pb) -> None:
    """A couple of hand-computed encodings pin the field numbers on the wire."""
    cfg = pb.PodSandboxConfig(hostname="h", log_directory="/l")
    assert cfg.SerializeToString() == b"\x12\x01h\x1a\x02/l"
    img = pb.Image(id="x", pinned=True)
    assert img.SerializeToString() == b"\x0a\x01x\x40\x01"
    kv = pb.KeyValue(key="K", value=b"v")
    assert kv.SerializeToString() == b"\x0a\x01K\x12\x01v"

import docker.errors
import grpc
import pytest
import requests

from dockershim_py.docker_client import (
    DockerClient, conflicting_container, negotiate_api_version, status_error, translate,
)
from dockershim_py.errors import CRIError


def _api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    response.reason = "reason"
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls("message", response=response, explanation=explanation)


@pytest.mark.parametrize(
    "status, code",
    [
        (404, grpc.StatusCode.NOT_FOUND),
        (409, grpc.StatusCode.FAILED_PRECONDITION),
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (403, grpc.StatusCode.PERMISSION_DENIED),
        (500, grpc.StatusCode.UNKNOWN),
        (502, grpc.StatusCode.UNAVAILABLE),  # a proxy in front of dockerd, or dockerd, not serving now
        (503, grpc.StatusCode.UNAVAILABLE),
        (504, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_docker_statuses_become_grpc_codes(status: int, code: grpc.StatusCode) -> None:
    error = translate(_api_error(status, "No such container: abc"), "container 'abc'")
    assert error.code == code
    assert error.message.startswith("container 'abc': ")
    assert "No such container: abc" in error.message


def test_a_redirect_is_not_the_object_asked_for() -> None:
    """Docker cleans `../` out of a path and redirects, with no body."""
    for status in (301, 302, 307, 308):
        assert status_error("container '../x'", status, "").code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("not_an_id", ["../x", "k8s_app", "ABC", "a" * 65, ""])
def test_full_id_takes_ids_only(not_an_id: str) -> None:
    with pytest.raises(CRIError) as refused:
        DockerClient.full_id(None, not_an_id, "io.kubernetes.docker.type=container", "container")  # type: ignore[arg-type]
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    assert DockerClient.full_id(None, "f" * 64, "label", "container") == "f" * 64  # type: ignore[arg-type]


def test_a_redirect_docker_py_was_given_is_not_followed(tmp_path) -> None:
    """An image named `../containers/<id>` would read a container's inspect as the image's."""
    assert translate(requests.exceptions.TooManyRedirects("Exceeded 0 redirects."),
                     "image '../containers/x'").code == grpc.StatusCode.NOT_FOUND
    assert DockerClient(f"unix://{tmp_path}/docker.sock", timeout=1)._make("1.41", 1).max_redirects == 0


def test_transport_failures() -> None:
    refused = requests.exceptions.ConnectionError("connection refused")
    assert translate(refused, "ping Docker").code == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach the Docker daemon" in translate(refused, "ping Docker").message
    timeout = requests.exceptions.ReadTimeout("read timed out")
    assert translate(timeout, "inspect x").code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert translate(ValueError("odd"), "x").code == grpc.StatusCode.INTERNAL
    cut = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(3 bytes read)")
    assert translate(cut, "inspect exec").code == grpc.StatusCode.UNAVAILABLE
    assert "cut off" in translate(cut, "inspect exec").message


def test_an_empty_id_docker_py_refuses_to_send_is_the_callers_error() -> None:
    empty = docker.errors.NullResource("Resource ID was not provided")
    assert translate(empty, "inspect image ").code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Resource ID was not provided" in translate(empty, "inspect image ").message


def test_cri_errors_pass_through() -> None:
    original = CRIError(grpc.StatusCode.ABORTED, "keep")
    assert translate(original, "x") is original


@pytest.mark.parametrize(
    "server, expected",
    [("1.41", "1.41"), ("1.40", "1.40"), ("1.47", "1.45"), ("1.52", "1.45")],
)
def test_api_version_negotiation(server: str, expected: str) -> None:
    assert negotiate_api_version(server) == expected


def test_too_old_or_too_new_engines_are_refused_clearly() -> None:
    with pytest.raises(CRIError) as old:
        negotiate_api_version("1.39")
    assert old.value.code == grpc.StatusCode.FAILED_PRECONDITION and "1.40" in old.value.message
    with pytest.raises(CRIError) as new:
        negotiate_api_version("1.52", server_min_version="1.46")
    assert "needs API 1.46" in new.value.message


def test_conflicting_container_is_read_from_dockers_message() -> None:
    error = CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                     'create container x: conflict: Conflict. The container name "/k8s_POD_a_b_c_0" is already in '
                     'use by container "0123456789abcdef0123". You have to remove (or rename) that container')
    assert conflicting_container(error) == "0123456789abcdef0123"
    assert conflicting_container(CRIError(grpc.StatusCode.UNKNOWN, "no space left")) is None


def test_every_request_to_the_socket_shares_one_connection_pool(tmp_path) -> None:
    """docker-py alone pools per URL, so inspecting many containers opened a connection each."""
    client = DockerClient(f"unix://{tmp_path}/docker.sock", timeout=5)
    api = client._make("1.41", timeout=5)
    adapter = api.get_adapter("http+docker://localhost/v1.41/containers/a/json")
    pools = {id(adapter.get_connection(f"http+docker://localhost/v1.41/containers/{n}/json")) for n in range(40)}
    assert len(pools) == 1
    assert adapter.get_connection("http+docker://localhost/v1.41/containers/0/json").socket_path == f"{tmp_path}/docker.sock"
    assert api.trust_env is False


def test_docker_info_is_kept_for_a_while_and_forgotten_with_the_connection(tmp_path, monkeypatch) -> None:
    """`docker info` costs dockerd 10-15 ms: every module shares one answer."""
    client = DockerClient(f"unix://{tmp_path}/docker.sock", timeout=5)
    asked = []
    monkeypatch.setattr(client, "_read", lambda what, fn, health=False: asked.append(what) or {"n": len(asked)})
    assert client.info() == {"n": 1}
    assert client.info() == {"n": 1}
    assert client.info(max_age=0) == {"n": 2}  # a caller that must see a change since
    assert client.info() == {"n": 2}
    client._forget_connection()  # the daemon may come back reconfigured
    assert client.info() == {"n": 3}


@pytest.mark.parametrize(("status", "message", "code"), [
    (500, "unable to find user nobody-here: no matching entries in passwd file", grpc.StatusCode.FAILED_PRECONDITION),
    (500, "failed to create shim: context deadline exceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
    (500, "connection error: dial unix /run/containerd/containerd.sock: connect: connection refused",
     grpc.StatusCode.UNAVAILABLE),
    (404, "No such container: x", grpc.StatusCode.NOT_FOUND),
    (409, "container is marked for removal", grpc.StatusCode.FAILED_PRECONDITION),
])
def test_a_start_docker_refuses_says_whose_fault_it_is(tmp_path, status: int, message: str,
                                                       code: grpc.StatusCode) -> None:
    """Docker's 500 on a start is mostly the runtime refusing the container as it was made."""
    client = DockerClient(f"unix://{tmp_path}/docker.sock", timeout=1)

    def answered(what: str, *args, **kwargs) -> None:
        raise status_error(what, status, message)

    client._request = answered  # type: ignore[method-assign]
    with pytest.raises(CRIError) as refused:
        client.start_container("c" * 64)
    assert refused.value.code == code and message in refused.value.message

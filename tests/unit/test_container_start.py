"""StartContainer's log copy when Docker does not answer right after the start."""

from __future__ import annotations

import os
import time
from unittest import mock

from dockershim_py import container, labels
from dockershim_py.container import ContainerService
from dockershim_py.docker_client import DockerClient
from dockershim_py.errors import unavailable
from dockershim_py.logs import LogManager

CONTAINER_ID = "c" * 64


class DockerThatMissesOneInspect:
    """A container created with a CRI log; the inspect right after its start fails once."""

    full_id = DockerClient.full_id  # the wrapper's: a whole ID is taken as it is

    def __init__(self, log_path: str, docker_log: str) -> None:
        self.started = False
        self.inspects = 0
        self.labels = {labels.CONTAINER_TYPE_LABEL: labels.CONTAINER_TYPE_CONTAINER,
                       labels.CONTAINER_LOG_PATH_LABEL: log_path}
        self.docker_log = docker_log

    def inspect_container(self, container_id: str) -> dict:
        self.inspects += 1
        if self.inspects == 2:
            raise unavailable("cannot reach the Docker daemon")
        state = {"Status": "running", "Running": True, "Pid": os.getpid()} if self.started else \
            {"Status": "created", "Running": False, "Pid": 0}
        return {"Id": CONTAINER_ID, "Config": {"Labels": self.labels}, "State": state,
                "LogPath": self.docker_log if self.started else ""}

    def start_container(self, container_id: str) -> None:
        self.started = True


def test_a_started_container_whose_inspect_failed_gets_its_log_copied_once_docker_answers(tmp_path,
                                                                                          monkeypatch) -> None:
    monkeypatch.setattr(container, "RECOVERY_RETRY_SECONDS", 0.05)
    docker_log = tmp_path / "docker-json.log"
    docker_log.write_text('{"log":"hello\\n","stream":"stdout","time":"2026-12-07T00:00:00.000000001Z"}\n')
    docker = DockerThatMissesOneInspect(str(tmp_path / "pod" / "0.log"), str(docker_log))
    logs = LogManager(str(tmp_path / "state"))
    service = ContainerService(docker, mock.Mock(), logs, mock.Mock(root="/nonexistent"))
    try:
        service.start(CONTAINER_ID)  # answers success: the container runs
        deadline = time.monotonic() + 10
        while docker.inspects < 3:
            assert time.monotonic() < deadline, "Docker was never asked again"
            time.sleep(0.02)
        with open(docker_log, "a") as written:  # what the container writes next
            written.write('{"log":"world\\n","stream":"stdout","time":"2026-12-07T00:00:01.000000001Z"}\n')
        while "world" not in (tmp_path / "pod" / "0.log").read_text():
            assert time.monotonic() < deadline, "the log was never copied"
            time.sleep(0.02)
        assert "hello" in (tmp_path / "pod" / "0.log").read_text()
    finally:
        logs.stop()

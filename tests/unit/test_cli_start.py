"""The shim's start: its recovery steps, tried again until Docker answers, and its open files limit."""

from __future__ import annotations

import resource
import subprocess
import sys
import threading

from dockershim_py import cli
from dockershim_py.errors import failed_precondition, unavailable


def test_each_step_is_tried_again_until_docker_answers_and_the_next_waits_for_it(monkeypatch) -> None:
    monkeypatch.setattr(cli, "RECOVERY_RETRY_SECONDS", 0.01)
    calls: list[str] = []

    def logs() -> None:
        calls.append("logs")
        if calls.count("logs") < 3:
            raise unavailable("cannot reach the Docker daemon")

    thread = cli.recover_in_background([logs, lambda: calls.append("networks")], threading.Event())
    thread.join(timeout=10)
    assert calls == ["logs", "logs", "logs", "networks"]


def test_a_stopping_shim_stops_trying() -> None:
    stopping = threading.Event()
    calls: list[str] = []

    def failing() -> None:
        calls.append("tried")
        stopping.set()
        raise unavailable("cannot reach the Docker daemon")

    thread = cli.recover_in_background([failing, lambda: calls.append("networks")], stopping)
    thread.join(timeout=10)
    assert not thread.is_alive() and calls == ["tried"]


def test_the_open_files_limit_is_raised_to_the_hard_one() -> None:
    """Three descriptors per running container's log copy: a soft limit of 1024 ran out at about 330."""
    script = ("import resource; from dockershim_py import cli; cli.raise_open_files_limit(); "
              "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    assert done.stdout.split() == [str(hard), str(hard)]


def test_a_step_that_fails_for_another_reason_than_docker_lets_the_next_run() -> None:
    """One container's log that cannot be resumed must not keep the pod-network recovery from running."""
    calls: list[str] = []

    def logs() -> None:
        calls.append("logs")
        raise failed_precondition("cannot open the container log /var/log/pods/x/0.log: not a regular file")

    thread = cli.recover_in_background([logs, lambda: calls.append("networks")], threading.Event())
    thread.join(timeout=10)
    assert calls == ["logs", "networks"]

"""A StopPodSandbox that waits for a RunPodSandbox of the same sandbox: it acts on the sandbox as
the run left it, and it waits whatever name Docker gave the sandbox."""

from __future__ import annotations

import threading
import time
from typing import Any
from unittest import mock

from dockershim_py import naming
from dockershim_py import sandbox as sandbox_module

NAME = "k8s_POD_web_default_uid1_0"
SANDBOX_ID = "a" * 64


def service_with(inspect: dict[str, Any]) -> tuple[sandbox_module.SandboxService, dict[str, Any]]:
    """The service's stop path over fakes; `current["inspect"]` is what Docker says now."""
    current = {"inspect": inspect}
    service = object.__new__(sandbox_module.SandboxService)
    service._runs = sandbox_module._KeyedLocks()
    service._teardowns = sandbox_module._KeyedLocks()
    service._docker = mock.Mock()
    service._docker.list_containers.return_value = []
    service._docker.inspect_container.side_effect = lambda _id: current["inspect"]
    service._network = mock.Mock()
    service._network.pod_cidr = ""
    service._network.cni.has_cache.return_value = True  # the run's ADD succeeded
    service._checkpoints = mock.Mock()
    service._checkpoints.get.return_value = None
    service._for_each = lambda action, ids: [action(i) for i in ids]
    service._find = lambda _id: (SANDBOX_ID, current["inspect"])
    return service, current


def created(name: str) -> dict[str, Any]:
    return {"Id": SANDBOX_ID, "Name": "/" + name, "HostConfig": {"NetworkMode": "none"},
            "State": {"Running": False, "Pid": 0, "Status": "created"}, "Config": {"Labels": {}}}


def stop_during_a_run(service: sandbox_module.SandboxService, current: dict[str, Any], run_name: str) -> None:
    """Stop while a run of `run_name` holds its lock and then starts the sandbox."""
    holding = threading.Event()

    def run() -> None:
        with service._runs.held(run_name):
            holding.set()
            time.sleep(0.3)
            current["inspect"] = {**current["inspect"], "State": {"Running": True, "Pid": 4242, "Status": "running"}}

    runner = threading.Thread(target=run)
    runner.start()
    holding.wait()
    service.stop(SANDBOX_ID)
    runner.join()


def test_a_stop_that_waited_for_the_run_tears_down_the_started_sandbox() -> None:
    """With the inspect read before the wait (created, no process) the CNI DEL got no namespace."""
    service, current = service_with(created(NAME))
    stop_during_a_run(service, current, NAME)
    assert service._network.cni.delete.call_args.args[1] == "/proc/4242/ns/net"


def test_a_sandbox_made_under_a_randomized_name_is_waited_for_too() -> None:
    """After a name conflict the sandbox is created with a random seventh part; the run holds the
    name it asked for."""
    service, current = service_with(created(naming.randomized(NAME)))
    stop_during_a_run(service, current, NAME)
    assert service._network.cni.delete.call_args.args[1] == "/proc/4242/ns/net"


def test_a_stop_with_no_run_to_wait_for_reads_the_sandbox_once() -> None:
    service, current = service_with({**created(NAME), "State": {"Running": True, "Pid": 4242, "Status": "running"}})
    finds = []
    service._find = lambda _id: finds.append(_id) or (SANDBOX_ID, current["inspect"])
    service.stop(SANDBOX_ID)
    assert finds == [SANDBOX_ID]
    assert service._network.cni.delete.call_args.args[1] == "/proc/4242/ns/net"

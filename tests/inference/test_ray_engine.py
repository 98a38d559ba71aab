"""The Ray engine's own Ray instance listens on loopback only; a cluster address given by the user is used as it is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fashionlens.inference.ray_engine import _RAY_CLUSTER_ENV, LOOPBACK, RayEngine, init_local_ray

ray = pytest.importorskip("ray")

#: /proc/net/tcp{,6} spellings of 127.0.0.1, ::ffff:127.0.0.1 and ::1.
_LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


class _FakeRay:
    """Records what ``RayEngine.run`` asks of Ray, and what Ray's node-address switch was during ``init``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, node_address: str = LOOPBACK) -> None:
        self.calls: list[dict[str, Any]] = []
        self.switch_during_init: list[tuple[str | None, bool]] = []
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", self.init)
        monkeypatch.setattr(ray, "shutdown", lambda: None)
        monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: node_address)
        monkeypatch.setattr(RayEngine, "_run", lambda *args: None)

    def init(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        self.switch_during_init.append((os.environ.get(_RAY_CLUSTER_ENV),
                                        ray._private.ray_constants.ENABLE_RAY_CLUSTER))


def _run(engine: RayEngine) -> None:
    engine.run(None, None, None, [], show_progress=False)  # type: ignore[arg-type]


def test_local_instance_is_started_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(_RAY_CLUSTER_ENV, raising=False)
    enabled = ray._private.ray_constants.ENABLE_RAY_CLUSTER
    fake = _FakeRay(monkeypatch)
    _run(RayEngine(local_cpus=3))
    assert fake.calls == [{"num_cpus": 3, "include_dashboard": False, "log_to_driver": False,
                           "_node_ip_address": LOOPBACK}]
    assert fake.switch_during_init == [("0", False)]  # Ray keeps the loopback address only with clusters off
    assert _RAY_CLUSTER_ENV not in os.environ  # ... and the switch is restored once the instance runs
    assert enabled == ray._private.ray_constants.ENABLE_RAY_CLUSTER


def test_a_non_loopback_node_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _FakeRay(monkeypatch, node_address="192.0.2.7")
    with pytest.warns(RuntimeWarning, match=r"listens on 192\.0\.2\.7, not only on loopback"):
        _run(RayEngine())


@pytest.mark.parametrize("from_env", [False, True])
def test_cluster_address_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch, from_env: bool) -> None:
    address = "ray://head.example:10001"
    monkeypatch.delenv(_RAY_CLUSTER_ENV, raising=False)
    if from_env:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = _FakeRay(monkeypatch)
    _run(RayEngine(address=None if from_env else address))
    assert fake.calls == [{"address": address, "log_to_driver": False}]
    assert fake.switch_during_init == [(None, ray._private.ray_constants.ENABLE_RAY_CLUSTER)]


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) of the sockets listening on ``port``."""
    addresses = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="reads Linux's socket table")
def test_real_local_instance_listens_on_loopback_only() -> None:
    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    assert init_local_ray(ray, num_cpus=1) == LOOPBACK
    try:
        gcs_host, gcs_port = ray.get_runtime_context().gcs_address.rsplit(":", 1)
        node = ray.nodes()[0]
        assert gcs_host == node["NodeManagerAddress"] == LOOPBACK
        for port in (int(gcs_port), int(node["NodeManagerPort"]), int(node["ObjectManagerPort"])):
            listening = _listening(port)
            assert listening and listening <= _LOOPBACK_HEX, (port, listening)
    finally:
        ray.shutdown()

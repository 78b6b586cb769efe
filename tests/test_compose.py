"""docker-compose.yml agrees with the code: commands, settings, services (no Docker here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from backend.cli import build_parser
from backend.core.config import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SUBCOMMANDS = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def _env(service: dict) -> dict:
    return service.get("environment") or {}


def test_the_required_services_exist_with_healthchecks() -> None:
    assert {"postgres", "redis", "backend", "worker-gpu"} <= set(SERVICES)
    for name in ("postgres", "redis", "backend", "worker-gpu"):
        assert "healthcheck" in SERVICES[name], name


def test_attrivue_commands_exist_in_the_cli() -> None:
    parser = build_parser()
    for name, service in SERVICES.items():
        command = service.get("command")
        if not command or command[0] != "attrivue":
            continue
        assert command[1] in SUBCOMMANDS, f"{name}: no `attrivue {command[1]}`"
        parser.parse_args(command[1:])  # exits on an unknown flag


def test_every_attrivue_variable_is_a_setting() -> None:
    fields = {f"ATTRIVUE_{name.upper()}" for name in Settings.model_fields}
    for name, service in SERVICES.items():
        for key in _env(service):
            if key.startswith("ATTRIVUE_"):
                assert key in fields, f"{name}: {key} is not a setting"
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^(ATTRIVUE_[A-Z_]+)=", example, re.M))
    assert documented == fields, "every setting is documented in .env.example"


def test_gpu_worker_reserves_an_nvidia_device_and_uses_the_gpu_queue() -> None:
    worker = SERVICES["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    command = worker["command"]
    assert command[:2] == ["attrivue", "worker"] and command[command.index("--queues") + 1] == "gpu"
    assert _env(worker)["ATTRIVUE_DEVICE"] == "cuda"


def test_backend_and_workers_share_the_data_volume_and_wait_for_health() -> None:
    volumes = set(COMPOSE["volumes"])
    mounts = {}
    for name in ("backend", "worker-gpu"):
        (mount,) = [v for v in SERVICES[name]["volumes"] if v.endswith(":/data")]
        mounts[name] = mount.split(":")[0]
        assert mounts[name] in volumes
        assert _env(SERVICES[name])["ATTRIVUE_DATA_DIR"] == "/data"
    assert len(set(mounts.values())) == 1
    backend_deps = SERVICES["backend"]["depends_on"]
    assert backend_deps["postgres"]["condition"] == "service_healthy"
    assert backend_deps["redis"]["condition"] == "service_healthy"

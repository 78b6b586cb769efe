"""docker-compose.yml and docker-compose.worker.yml agree with the code (no Docker here).

Every service, command, environment variable, volume and healthcheck is checked against the
CLI, the Celery queues and routes, the settings, the API's routes and the Dockerfile. That the
services also run together as written is tests/scale/test_scale_out.py's part.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from backend.cli import build_parser
from backend.core.config import Settings
from backend.core.queue import QUEUES, TASK_QUEUES
from tests.scale.stack import (
    compose_variables,
    interpolate,
    load_compose,
    service_environment,
    volume_mounts,
)

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "docker-compose.yml"
WORKERS = REPO / "docker-compose.worker.yml"
FILES = [MAIN, WORKERS]
# What an operator puts in .env (values are only needed to interpolate).
VARIABLES = {
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redis-secret",
    "ATTRIVUE_SECRET_KEY": "k" * 48,
    "MAIN_HOST": "10.0.0.5",
    "NFS_SERVER": "10.0.0.9",
    "NFS_EXPORT": "/srv/attrivue",
}
COMPOSE = {path.name: load_compose(path, VARIABLES) for path in FILES}
SERVICES = COMPOSE[MAIN.name]["services"]
SUBCOMMANDS = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
SETTINGS = {f"ATTRIVUE_{name.upper()}": name for name in Settings.model_fields}
ENV_EXAMPLE = (REPO / ".env.example").read_text()


def _all_services() -> list[tuple[str, str, dict]]:
    return [(f, n, s) for f, c in COMPOSE.items() for n, s in c["services"].items()]


ALL = _all_services()
ATTRIVUE_SERVICES = [
    (f, n, s) for f, n, s in ALL if (s.get("command") or [""])[0] == "attrivue"
]  # the services running our image's CLI
WORKER_SERVICES = [(f, n, s) for f, n, s in ATTRIVUE_SERVICES if s["command"][1] == "worker"]


def _ids(items: list[tuple[str, str, dict]]) -> list[str]:
    return [f"{f}:{n}" for f, n, _ in items]


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _expand(node: str) -> str:
    return node.replace("%h", "HOST")


# --------------------------------------------------------------------------- services


def test_the_services_of_a_lab_deployment_exist_with_healthchecks() -> None:
    assert {"postgres", "redis", "backend", "worker-cpu", "flower"} <= set(SERVICES)
    gpu_workers = [n for n in SERVICES if n.startswith("worker-gpu")]
    assert len(gpu_workers) >= 2, "one GPU worker per GPU: at least two, as a pattern"
    for file, name, service in ALL:
        assert "healthcheck" in service, f"{file}:{name}"
    assert SERVICES["flower"]["profiles"] == ["flower"], "Flower only on demand"
    assert set(COMPOSE[WORKERS.name]["services"]) == {"worker-gpu0", "worker-gpu1"}


def test_compose_anchors_give_the_main_and_worker_machines_the_same_settings() -> None:
    main = service_environment(SERVICES["worker-gpu0"])
    remote = service_environment(COMPOSE[WORKERS.name]["services"]["worker-gpu0"])
    assert set(main) == set(remote)
    for key in main:
        if key in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
            assert urlsplit(remote[key]).hostname == VARIABLES["MAIN_HOST"]
            assert urlsplit(main[key])._replace(netloc="") == urlsplit(remote[key])._replace(
                netloc=""
            )
        else:
            assert main[key] == remote[key], key


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("file", "name", "service"), ATTRIVUE_SERVICES, ids=_ids(ATTRIVUE_SERVICES)
)
def test_attrivue_commands_exist_in_the_cli(file: str, name: str, service: dict) -> None:
    command = [str(c) for c in service["command"]]
    assert command[1] in SUBCOMMANDS, f"{name}: no `attrivue {command[1]}`"
    build_parser().parse_args(command[1:])  # exits on an unknown flag or value


@pytest.mark.parametrize(("file", "name", "service"), WORKER_SERVICES, ids=_ids(WORKER_SERVICES))
def test_workers_consume_real_queues_under_their_own_names(
    file: str, name: str, service: dict
) -> None:
    command = [str(c) for c in service["command"]]
    queues = _option(command, "--queues").split(",")
    assert set(queues) <= set(QUEUES), f"{name}: unknown queue in {queues}"
    node = _option(command, "--name")
    assert re.fullmatch(r"[a-z0-9-]+@%h", node), f"{name}: node name {node!r}"
    if name.startswith("worker-gpu"):
        assert queues == ["gpu"] and _option(command, "--concurrency") == "1"
        assert node == name.removeprefix("worker-") + "@%h"
    else:
        assert "gpu" not in queues, f"{name}: a CPU worker must not take GPU jobs"


def test_every_queue_has_a_worker_and_every_task_a_queue() -> None:
    main_workers = [s for n, s in SERVICES.items() if n.startswith("worker-")]
    consumed = {q for s in main_workers for q in _option(s["command"], "--queues").split(",")}
    assert consumed == set(QUEUES)
    assert set(TASK_QUEUES.values()) <= set(QUEUES)
    assert TASK_QUEUES["attrivue.train"] == TASK_QUEUES["attrivue.attribute"] == "gpu"
    assert TASK_QUEUES["attrivue.map_products"] == "cpu"
    from worker.celery_app import app

    app.loader.import_default_modules()  # the `include` modules, as a worker imports them
    registered = {name for name in app.tasks if name.startswith("attrivue.")}
    assert registered == set(TASK_QUEUES), "every task is routed, every route is a task"


def test_worker_node_names_are_unique_per_machine() -> None:
    for compose in COMPOSE.values():
        names = [
            _option(s["command"], "--name")
            for n, s in compose["services"].items()
            if n.startswith("worker-")
        ]
        assert len(names) == len(set(names))


# --------------------------------------------------------------------------- GPUs


@pytest.mark.parametrize(
    ("file", "name", "service"),
    [w for w in WORKER_SERVICES if w[1].startswith("worker-gpu")],
    ids=_ids([w for w in WORKER_SERVICES if w[1].startswith("worker-gpu")]),
)
def test_each_gpu_worker_reserves_its_own_gpu(file: str, name: str, service: dict) -> None:
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["device_ids"] == [name.removeprefix("worker-gpu")], "worker-gpuN gets GPU N"
    env = service_environment(service)
    assert env["ATTRIVUE_DEVICE"] == "cuda"
    assert env["CUDA_VISIBLE_DEVICES"] == "0", "the one GPU the container sees"
    index = service["build"]["args"]["TORCH_INDEX"]
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index), index


def test_the_api_and_cpu_worker_image_has_the_cpu_build_of_the_pinned_torch() -> None:
    pin = next(
        d
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch==")
    )
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"pip install {pin} --index-url ${{TORCH_INDEX}}" in dockerfile
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    for name in ("backend", "worker-cpu"):
        assert SERVICES[name]["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")
        assert service_environment(SERVICES[name])["ATTRIVUE_DEVICE"] == "cpu"


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("file", "name", "service"), ATTRIVUE_SERVICES, ids=_ids(ATTRIVUE_SERVICES)
)
def test_every_attrivue_variable_is_a_valid_setting(file: str, name: str, service: dict) -> None:
    env = service_environment(service)
    values = {}
    for key, value in env.items():
        if key.startswith("ATTRIVUE_"):
            assert key in SETTINGS, f"{name}: {key} is not a setting"
            values[SETTINGS[key]] = value
    settings = Settings(_env_file=None, **values)  # raises on a value it cannot start with
    assert settings.environment == "production"
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url.startswith("redis://")


def test_env_example_documents_every_setting_and_compose_variable() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE, re.M))
    assert {k for k in documented if k.startswith("ATTRIVUE_")} == set(SETTINGS)
    used = set().union(*(compose_variables(path) for path in FILES))
    assert used <= documented, f"undocumented: {sorted(used - documented)}"
    compose_only = {k for k in documented if not k.startswith("ATTRIVUE_")}
    assert compose_only <= used, f"documented but unused: {sorted(compose_only - used)}"


def test_required_variables_fail_loudly() -> None:
    from tests.scale.stack import InterpolationError

    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        load_compose(MAIN, {k: v for k, v in VARIABLES.items() if k != "POSTGRES_PASSWORD"})
    assert interpolate("${A:-x}/${B-y}/$${C}", {"A": "", "B": ""}) == "x//${C}"


def test_database_and_broker_credentials_match_their_services() -> None:
    postgres = service_environment(SERVICES["postgres"])
    redis_command = [str(c) for c in SERVICES["redis"]["command"]]
    for file, name, service in ATTRIVUE_SERVICES:
        env = service_environment(service)
        db = urlsplit(env["ATTRIVUE_DATABASE_URL"])
        assert (db.username, db.password, db.path) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            "/" + postgres["POSTGRES_DB"],
        ), name
        broker = urlsplit(env["ATTRIVUE_BROKER_URL"])
        assert broker.password == _option(redis_command, "--requirepass"), name
        if file == MAIN.name:
            assert (db.hostname, db.port, broker.hostname, broker.port) == (
                "postgres",
                5432,
                "redis",
                6379,
            )
    flower = service_environment(SERVICES["flower"])
    backend = service_environment(SERVICES["backend"])
    assert flower["CELERY_BROKER_URL"] == backend["ATTRIVUE_BROKER_URL"]


# --------------------------------------------------------------------------- volumes


def test_the_api_and_every_worker_share_one_data_volume_where_the_settings_point() -> None:
    for compose in COMPOSE.values():
        declared = set(compose["volumes"])
        sources = set()
        for name, service in compose["services"].items():
            if (service.get("command") or [""])[0] != "attrivue":
                continue
            data_dir = service_environment(service)["ATTRIVUE_DATA_DIR"]
            (source,) = [v for v, target in volume_mounts(service).items() if target == data_dir]
            assert source in declared, f"{name}: volume {source} is not declared"
            sources.add(source)
        assert len(sources) == 1, sources
    nfs = COMPOSE[WORKERS.name]["volumes"]["attrivue-data"]["driver_opts"]
    assert nfs["type"] == "nfs" and f"addr={VARIABLES['NFS_SERVER']}" in nfs["o"]
    assert volume_mounts(SERVICES["postgres"]) == {"pgdata": "/var/lib/postgresql/data"}
    assert volume_mounts(SERVICES["redis"]) == {"redisdata": "/data"}
    assert "--appendonly" in SERVICES["redis"]["command"], "Redis keeps its queue on disk"


# --------------------------------------------------------------------------- health


def test_healthchecks_reference_real_endpoints_and_modules() -> None:
    from backend.openapi import openapi_document

    routes = set(openapi_document()["paths"])
    backend = SERVICES["backend"]
    port = _option(backend["command"], "--port")
    (url,) = re.findall(r"http://[^'\"]+", " ".join(backend["healthcheck"]["test"]))
    assert urlsplit(url).port == int(port) and urlsplit(url).path in routes
    assert backend["ports"] == [f"8000:{port}"]
    postgres = service_environment(SERVICES["postgres"])
    assert SERVICES["postgres"]["healthcheck"]["test"][1] == (
        f"pg_isready -U {postgres['POSTGRES_USER']} -d {postgres['POSTGRES_DB']}"
    )
    for file, name, service in WORKER_SERVICES:
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "worker.healthcheck"], name
        assert test[4] == _option(service["command"], "--name"), f"{file}:{name}"
    import worker.healthcheck  # noqa: F401  (the module the workers' healthchecks run)


def test_services_wait_for_the_health_of_what_they_need() -> None:
    for compose in COMPOSE.values():
        services = compose["services"]
        for name, service in services.items():
            for needed, condition in (service.get("depends_on") or {}).items():
                assert condition == {"condition": "service_healthy"}, f"{name} -> {needed}"
                assert "healthcheck" in services[needed], needed
    assert set(SERVICES["backend"]["depends_on"]) == {"postgres", "redis"}
    for name, service in SERVICES.items():
        if name.startswith("worker-"):
            # The backend ran the migrations before any worker touches the database.
            assert set(service["depends_on"]) == {"backend"}, name
    # The API migrates on start (`serve`), so an upgrade is: pull, build, up.
    assert SERVICES["backend"]["command"][:2] == ["attrivue", "serve"]
    assert "--no-worker" in SERVICES["backend"]["command"]


def test_the_dockerfile_sets_real_settings_and_serves_the_built_frontend() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    env = dict(re.findall(r"(ATTRIVUE_[A-Z_]+)=(\S+)", dockerfile))
    assert env and set(env) <= set(SETTINGS)
    Settings(_env_file=None, **{SETTINGS[k]: v for k, v in env.items()})
    assert "COPY --from=frontend /src/frontend/dist frontend/dist" in dockerfile
    assert env["ATTRIVUE_FRONTEND_DIR"] == "/app/frontend/dist" and "WORKDIR /app" in dockerfile
    assert env["ATTRIVUE_DATA_DIR"] == service_environment(SERVICES["backend"])["ATTRIVUE_DATA_DIR"]

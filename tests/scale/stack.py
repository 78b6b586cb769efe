"""The services of docker-compose.yml as processes on this machine: same commands, same env.

``ComposeStack`` reads the compose file, interpolates it as ``docker compose`` does (from a
dictionary standing for ``.env``), and runs a service's ``command`` with the service's
``environment``. What differs from a container is only where things are:

* the service names ``postgres`` and ``redis`` become this machine's PostgreSQL (a fresh
  database, dropped afterwards: its URL replaces ATTRIVUE_DATABASE_URL, as the shared server
  trusts user postgres rather than the compose file's user) and a ``redis-server`` started
  from the compose file's own ``command`` (password included) on a free port;
* each named volume becomes a folder, and a variable whose value is the volume's mount point
  (ATTRIVUE_DATA_DIR=/data) gets that folder;
* ``attrivue`` and ``python`` are this virtual environment's, the API's port is a free one;
* ``overrides``: what the caller changes on purpose (no GPU here: ATTRIVUE_DEVICE=cpu).

Used by tests/scale/test_scale_out.py and bench/bench_jobs.py.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class InterpolationError(ValueError):
    """A required variable (``${NAME:?message}``) is missing, as ``docker compose`` says."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: ``${V}``, ``${V:-default}``, ``${V-default}``,
    ``${V:?error}``, ``${V?error}`` and ``$$`` (a literal dollar)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3) or ""
        value = variables.get(name)
        missing = value is None or (value == "" and operator and operator.startswith(":"))
        if operator and operator.endswith("-"):
            return argument if missing else str(value)
        if operator and operator.endswith("?"):
            if missing:
                raise InterpolationError(f"{name}: {argument or 'required'}")
            return str(value)
        return "" if value is None else str(value)

    return _VARIABLE.sub(one, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load_compose(path: Path = COMPOSE_FILE, variables: Mapping[str, str] | None = None) -> dict:
    """The compose file with its YAML anchors merged and, given ``variables``, interpolated."""
    raw = yaml.safe_load(path.read_text())
    return raw if variables is None else _interpolate_tree(raw, variables)


def compose_variables(path: Path = COMPOSE_FILE) -> set[str]:
    """Every ``${NAME...}`` the compose file reads."""
    return {m.group(1) for m in _VARIABLE.finditer(path.read_text()) if m.group(1)}


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def volume_mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """Named volume -> mount point in the container."""
    mounts = {}
    for entry in service.get("volumes") or []:
        source, _, target = str(entry).partition(":")
        mounts[source] = target.split(":")[0]
    return mounts


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _create_database(base_url: str) -> str:
    import psycopg

    plain = base_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"attrivue_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url.rpartition('/')[0]}/{name}"


def _drop_database(url: str) -> None:
    import psycopg

    plain, _, name = url.replace("postgresql+psycopg://", "postgresql://").rpartition("/")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ComposeStack:
    """docker-compose.yml's services as local processes (see the module's docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        variables: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
        postgres_url: str | None = None,
    ) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.variables = {
            "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
            "REDIS_PASSWORD": secrets.token_urlsafe(12),
            "ATTRIVUE_SECRET_KEY": secrets.token_urlsafe(48),
            **(variables or {}),
        }
        self.compose = load_compose(COMPOSE_FILE, self.variables)
        self.services: dict[str, dict] = self.compose["services"]
        self.overrides = dict(overrides or {})
        self.postgres_base = (
            postgres_url or os.environ.get("ATTRIVUE_TEST_DATABASE_URL") or DEFAULT_POSTGRES
        )
        self.database_url = ""
        self.redis_port = free_port()
        self.api_port = free_port()
        self.volumes = {name: root / name for name in self.compose.get("volumes") or {}}
        self.processes: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ComposeStack:
        self.database_url = _create_database(self.postgres_base)
        try:
            self.start_redis()
        except BaseException:
            _drop_database(self.database_url)
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()
        if self.database_url:
            _drop_database(self.database_url)
        for folder in self.volumes.values():
            shutil.rmtree(folder, ignore_errors=True)

    def start_redis(self) -> subprocess.Popen:
        """The compose file's redis ``command`` (its password), on a free loopback port."""
        command = list(self.services["redis"]["command"])
        assert command[0] == "redis-server", command
        folder = self.root / "redis"
        folder.mkdir(exist_ok=True)
        argv = [shutil.which("redis-server") or "redis-server", *command[1:]]
        argv += ["--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(folder)]
        argv += ["--save", "", "--daemonize", "no"]
        process = self._spawn("redis", argv, dict(os.environ))
        deadline = time.monotonic() + 20
        import redis

        client = redis.Redis(port=self.redis_port, password=self.variables["REDIS_PASSWORD"])
        while True:
            try:
                client.ping()
                return process
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start: " + self.log("redis")) from None
                time.sleep(0.1)

    def stop(self, name: str, *, timeout: float = 30) -> None:
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_all(self) -> None:
        # Workers first (they deregister in the database), then the API, then Redis.
        order = sorted(self.processes, key=lambda n: (n == "redis", n == "backend"))
        for name in order:
            self.stop(name)

    # ------------------------------------------------------------------ services

    def environment(self, name: str) -> dict[str, str]:
        """The service's environment as it would be in its container, placed on this machine."""
        service = self.services[name]
        env = service_environment(service)
        mounts = volume_mounts(service)
        for key, value in env.items():
            for volume, target in mounts.items():
                if value == target and volume in self.volumes:
                    env[key] = str(self.volumes[volume])
        if "ATTRIVUE_DATABASE_URL" in env:
            assert "@postgres:5432/" in env["ATTRIVUE_DATABASE_URL"], env["ATTRIVUE_DATABASE_URL"]
            env["ATTRIVUE_DATABASE_URL"] = self.database_url
        if "ATTRIVUE_BROKER_URL" in env:
            broker = env["ATTRIVUE_BROKER_URL"]
            assert "@redis:6379/" in broker, broker
            env["ATTRIVUE_BROKER_URL"] = broker.replace(
                "@redis:6379/", f"@127.0.0.1:{self.redis_port}/"
            )
        env.update(self.overrides)
        return env

    def process_environment(self, name: str) -> dict[str, str]:
        """This machine's environment without any ATTRIVUE_ or CUDA_ variable, plus the
        service's."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ATTRIVUE_", "CUDA_VISIBLE_DEVICES"))
        }
        return {**base, **self.environment(name)}

    def command(self, name: str) -> list[str]:
        command = [str(part) for part in self.services[name]["command"]]
        if command[0] == "attrivue":
            command[0] = str(Path(sys.executable).with_name("attrivue"))
        for flag, value in (("--host", "127.0.0.1"), ("--port", str(self.api_port))):
            if flag in command:
                command[command.index(flag) + 1] = value
        return command

    def start(self, name: str) -> subprocess.Popen:
        return self._spawn(name, self.command(name), self.process_environment(name))

    def healthcheck(self, name: str, *, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run the service's healthcheck ``test`` (a ``CMD`` list) here; its exit status."""
        test = [str(part) for part in self.services[name]["healthcheck"]["test"]]
        assert test[0] == "CMD", test
        argv = [sys.executable if part == "python" else part for part in test[1:]]
        argv = [part.replace("127.0.0.1:8000/", f"127.0.0.1:{self.api_port}/") for part in argv]
        return subprocess.run(
            argv,
            env=self.process_environment(name),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def alive(self, name: str) -> bool:
        process = self.processes.get(name)
        return process is not None and process.poll() is None

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "ab") as out:
            process = subprocess.Popen(
                argv, env=env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

"""Settings, read from the environment (prefix ATTRIVUE_) or a .env file.

A bad value stops start-up with a message naming the setting (see ``load_settings``).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "Settings",
    "SettingsError",
    "get_settings",
    "load_settings",
    "private_dir",
    "REPO_ROOT",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

_DB_SCHEMES = ("sqlite", "postgresql")
_BROKER_SCHEMES = ("filesystem://", "redis://", "rediss://", "amqp://", "memory://")


class SettingsError(RuntimeError):
    """A setting has a value Attrivue cannot start with."""


class Settings(BaseSettings):
    """Every setting of the platform; each maps to the variable ATTRIVUE_<NAME>."""

    model_config = SettingsConfigDict(
        env_prefix="ATTRIVUE_", env_file=".env", extra="ignore", validate_default=True
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default=REPO_ROOT / "data", description="datasets, runs, database")
    database_url: str = Field(default="", description="default: SQLite in the data directory")
    broker_url: str = Field(default="", description="default: filesystem broker in data dir")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    secret_key: SecretStr = Field(default=SecretStr(""), description="signs CSRF tokens")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_workers: int = Field(
        default=1,
        ge=1,
        description="API processes `attrivue serve` starts (uvicorn workers on one port)",
    )
    frontend_dir: Path = REPO_ROOT / "frontend" / "dist"
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_json_bytes: int = Field(
        default=1024**2, gt=0, description="largest body of a JSON route, refused while it streams"
    )
    max_correction_bytes: int = Field(
        default=256 * 1024**2, gt=0, description="largest drawn correction of a review"
    )
    max_model_bytes: int = Field(
        default=1024**3,
        gt=0,
        description="largest imported model (a TorchScript file or a zipped MONAI bundle)",
    )
    model_check_seconds: float = Field(
        default=300.0,
        gt=0,
        description="how long a model import waits for a cpu-queue worker to check the model",
    )
    session_hours: int = Field(default=12, gt=0)
    cookie_secure: bool = False
    trusted_proxies: str = Field(
        default="",
        description="comma-separated addresses or networks of reverse proxies whose "
        "X-Forwarded-For / X-Forwarded-Proto are believed; none by default",
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="failed logins per (address, username) and window"
    )
    login_address_max_failures: int = Field(
        default=50,
        ge=1,
        description="failed logins per address and window before that address backs off",
    )
    login_window_seconds: int = Field(default=300, ge=1)
    worker_queues: str = "gpu,cpu"
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="worker heartbeat period")
    job_stale_seconds: float = Field(
        default=60.0, gt=0, description="a running job silent this long is re-queued"
    )
    job_max_attempts: int = Field(default=3, ge=1, description="runs of a job before it fails")
    worker_memory_gb: float = Field(
        default=16.0,
        gt=0,
        description="memory one job may use on a worker; larger runs and maps are refused",
    )
    cors_origins: str = Field(
        default="", description="comma-separated origins allowed to call the API; none by default"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(_DB_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(_DB_SCHEMES)}; got {value!r}")
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if value and not value.startswith(_BROKER_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(_BROKER_SCHEMES)}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _explicit_origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin == "*":
                raise ValueError("name the allowed origins; '*' is not allowed with cookies")
            if origin and not origin.startswith(("http://", "https://")):
                raise ValueError(f"an origin looks like https://host[:port]; got {origin!r}")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        for entry in (e.strip() for e in value.split(",")):
            if not entry:
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"name proxies by IP address or network (10.0.0.5, 10.0.0.0/8); got {entry!r}"
                ) from None
        return value

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'attrivue.db'}"
        if not self.broker_url:
            self.broker_url = "filesystem://"
        key = self.secret_key.get_secret_value()
        if self.job_stale_seconds < 3 * self.heartbeat_seconds:
            # Fewer than three missed heartbeats would re-queue jobs whose worker is merely slow.
            raise ValueError(
                "ATTRIVUE_JOB_STALE_SECONDS must be at least 3 x ATTRIVUE_HEARTBEAT_SECONDS"
            )
        if self.environment == "production" and len(key) < 32:
            raise ValueError("ATTRIVUE_SECRET_KEY must be at least 32 characters in production")
        if self.environment == "production" and not (self.cookie_secure or self.trusted_proxies):
            # Session cookies sent over plain HTTP can be read on the wire.
            raise ValueError(
                "production needs HTTPS: set ATTRIVUE_COOKIE_SECURE=true (TLS here or at a "
                "proxy), or name the TLS-terminating proxy in ATTRIVUE_TRUSTED_PROXIES"
            )
        return self

    @property
    def secure_cookies(self) -> bool:
        """Whether cookies carry ``Secure``: always in production (HTTPS is required there)."""
        return self.cookie_secure or self.environment == "production"

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks of ``trusted_proxies``."""
        return [
            ipaddress.ip_network(e.strip(), strict=False)
            for e in self.trusted_proxies.split(",")
            if e.strip()
        ]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def secret(self) -> bytes:
        """The secret key; in development one is made once and kept in the data directory."""
        key = self.secret_key.get_secret_value()
        if key:
            return key.encode()
        path = self.data_dir / ".secret_key"
        if not path.exists():
            # Several API processes may get here at once: each writes its key to a file of its
            # own and links it into place, which only the first does (link never replaces),
            # so all of them read one key, and never a file half written.
            private_dir(self.data_dir)
            mine = self.data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            try:
                os.link(mine, path)
            except FileExistsError:
                pass
            finally:
                mine.unlink()
        return path.read_text().strip().encode()


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by its owner only (mode 0700).

    Only a directory made here is changed: an existing one keeps the mode its operator chose.
    """
    if not path.exists():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    return path


def load_settings() -> Settings:
    """Read the settings, turning a validation error into one readable message."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "ATTRIVUE_" + "_".join(str(p) for p in err["loc"]).upper()
            problems.append(f"{name}: {err['msg']}" if err["loc"] else err["msg"])
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()

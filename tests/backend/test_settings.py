"""Settings fail fast with a message naming the bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.core.config import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTRIVUE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ATTRIVUE_DATABASE_URL", raising=False)
    monkeypatch.delenv("ATTRIVUE_BROKER_URL", raising=False)
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'attrivue.db'}"
    assert settings.broker_url == "filesystem://"
    assert settings.device == "auto"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("ATTRIVUE_DEVICE", "tpu", "ATTRIVUE_DEVICE"),
        ("ATTRIVUE_DATABASE_URL", "mysql://x", "ATTRIVUE_DATABASE_URL"),
        ("ATTRIVUE_BROKER_URL", "kafka://x", "ATTRIVUE_BROKER_URL"),
        ("ATTRIVUE_PORT", "70000", "ATTRIVUE_PORT"),
    ],
)
def test_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=words):
        load_settings()


def test_production_needs_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTRIVUE_ENVIRONMENT", "production")
    monkeypatch.setenv("ATTRIVUE_SECRET_KEY", "short")
    with pytest.raises(SettingsError, match="ATTRIVUE_SECRET_KEY"):
        load_settings()


def test_cli_stops_with_the_message(tmp_path: Path) -> None:
    env = {"ATTRIVUE_DEVICE": "quantum", "ATTRIVUE_DATA_DIR": str(tmp_path), "PATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "backend.cli", "migrate"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "ATTRIVUE_DEVICE" in proc.stderr

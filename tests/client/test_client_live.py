"""The client, the CLI and scripts/demo_roundtrip.sh against the live server + worker."""

from __future__ import annotations

import csv
import gzip
import os
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from attrivue_client import Client, cli
from tests.conftest import Pipeline

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    """The CLI's environment: the live server, and a token file under tmp_path."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("ATTRIVUE_URL", pipeline.base_url)
    for name in ("ATTRIVUE_TOKEN", "ATTRIVUE_USERNAME", "ATTRIVUE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return pipeline


def _live_project(api: Client) -> int:
    return next(p["id"] for p in api.projects() if p["name"] == "live")


def test_login_list_and_follow_a_finished_job(env: Pipeline) -> None:
    with Client(env.base_url, progress=False) as api:
        assert api.token is None
        api.login(env.username, env.password)
        assert api.me()["username"] == env.username
        assert _live_project(api)
        assert env.dataset_id in [d["id"] for d in api.datasets()]
        run = api.run(env.run_id)
        job = api.follow(run["job_id"], interval=0.1, timeout=10)
        assert job["status"] == "succeeded" and job["kind"] == "train"
        listed = api.attributions(run_id=env.run_id, status="succeeded")
        assert env.attribution_id in [a["id"] for a in listed]


def test_cli_login_stores_a_private_token(
    env: Pipeline, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ATTRIVUE_PASSWORD", env.password)
    assert cli.main(["login", "--username", env.username]) == 0
    token_file = tmp_path / "config" / "attrivue" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    capsys.readouterr()
    assert cli.main(["list", "projects"]) == 0, "later commands use the stored token"
    assert '"live"' in capsys.readouterr().out
    assert cli.main(["follow", "--run", str(env.run_id), "--interval", "0.1"]) == 0

    assert cli.main(["login", "--username", env.username, "--print", "--personal", "ci"]) == 0
    personal = capsys.readouterr().out.strip()
    with Client(env.base_url, personal) as api:
        assert api.me()["username"] == env.username

    monkeypatch.setenv("ATTRIVUE_PASSWORD", "wrong-password")
    assert cli.main(["login", "--username", env.username]) == 1
    assert capsys.readouterr().err == "error: HTTP 401: wrong username or password\n"


def test_fetch_maps_downloads_nifti_on_the_subject_grid(env: Pipeline, tmp_path: Path) -> None:
    with Client(env.base_url, env.token, progress=False) as api:
        paths = api.fetch_maps(env.run_id, tmp_path / "maps", method="integrated_gradients")
    subject = nib.load(env.source_dir / env.subject_key / "image.nii.gz")
    wanted = (
        tmp_path / "maps" / f"{env.subject_key}_integrated_gradients_{env.attribution_id}.nii.gz"
    )
    assert wanted in paths
    for path in paths:
        img = nib.load(path)
        assert img.shape == subject.shape, path.name
        np.testing.assert_allclose(img.affine, subject.affine, atol=1e-5)
        assert np.isfinite(img.get_fdata()).all()
    with open(tmp_path / "maps" / "maps.csv", newline="") as fh:
        index = list(csv.DictReader(fh))
    assert {row["file"] for row in index} == {p.name for p in paths}
    assert not list((tmp_path / "maps").glob(".*")), "no partial downloads left"


def test_cli_fetch_display_maps_and_stats(env: Pipeline, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["--token", env.token, "--no-progress"]
    code = cli.main([*args, "fetch", "--run", str(env.run_id), str(tmp_path), "--display"])
    assert code == 0
    printed = [Path(line) for line in capsys.readouterr().out.split()]
    assert printed and all(p.is_file() for p in printed)
    assert all(nib.load(p).get_data_dtype() == np.int8 for p in printed)
    assert cli.main([*args, "stats", str(env.attribution_id)]) == 0
    assert '"lesion_mass"' in capsys.readouterr().out


def test_cli_errors_from_the_api(env: Pipeline, capsys) -> None:  # type: ignore[no-untyped-def]
    code = cli.main(["--token", env.token, "attribute", "--run", "999999", "--split", "test"])
    assert code == 1
    assert capsys.readouterr().err == "error: HTTP 404: run 999999 not found\n"
    code = cli.main(["--token", "not-a-token", "list", "runs"])
    assert code == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_demo_roundtrip_script(env: Pipeline, tmp_path: Path) -> None:
    """scripts/demo_roundtrip.sh end to end: demo data, upload, train, follow, IG, fetch."""
    with Client(env.base_url, env.token) as api:
        project = _live_project(api)
    venv_bin = str(Path(sys.executable).parent)
    script_env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "HOME": str(tmp_path / "home"),
        "ATTRIVUE_USERNAME": env.username,
        "ATTRIVUE_PASSWORD": env.password,
        "ATTRIVUE_PROJECT": str(project),
        "DEMO_SUBJECTS": "8",
        "DEMO_EPOCHS": "1",
        "DEMO_IG_STEPS": "8",
    }
    script_env.pop("ATTRIVUE_TOKEN", None)
    out = tmp_path / "roundtrip"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo_roundtrip.sh"), str(out)],
        env=script_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "maps" / "maps.csv", newline="") as fh:
        index = list(csv.DictReader(fh))
    manifest = {row["subject"]: row for row in csv.DictReader(open(out / "data" / "manifest.csv"))}
    assert index and {row["split"] for row in index} == {"test"}
    assert {row["subject_key"] for row in index} == {
        key for key, row in manifest.items() if row["split"] == "test"
    }
    for row in index:
        img = nib.load(out / "maps" / row["file"])
        source = nib.load(out / "data" / manifest[row["subject_key"]]["image"])
        assert img.shape == source.shape
        assert img.get_data_dtype() == np.float32
    assert not (tmp_path / "home" / ".config" / "attrivue").exists(), "the script stores no token"


def test_show_map_builds_the_notebook_widget_from_the_api(env: Pipeline) -> None:
    """The ipyniivue widget of a computed map: the subject's image under the display map, with
    the web viewer's colormaps and the calibration from the map's own min and max."""
    with Client(env.base_url, env.token, progress=False) as api:
        nv = api.show_map(env.attribution_id)
        stats = api.attribution(env.attribution_id)["stats"]
        full = api.read_map(env.attribution_id)
    base, overlay = nv.volumes
    source = nib.load(env.source_dir / env.subject_key / "image.nii.gz")
    shown = nib.Nifti1Image.from_bytes(gzip.decompress(base.data))
    np.testing.assert_allclose(shown.get_fdata(), source.get_fdata(), rtol=1e-6)
    assert base.colormap == "gray" and base.opacity == 1.0
    signed = nib.Nifti1Image.from_bytes(gzip.decompress(full)).get_fdata()
    display = nib.Nifti1Image.from_bytes(gzip.decompress(overlay.data))
    assert display.get_data_dtype() == np.int8
    peak = np.abs(signed).max()
    np.testing.assert_allclose(display.get_fdata(), signed, atol=peak / 254 * 1.01)
    assert (overlay.colormap, overlay.colormap_negative) == (
        "attrivue_red_yellow",
        "attrivue_blue_lightblue",
    )
    assert overlay.opacity == pytest.approx(0.8)
    assert stats["max"] == pytest.approx(signed.max(), rel=1e-5)
    assert stats["min"] == pytest.approx(signed.min(), rel=1e-5)
    assert signed.max() > 0 > signed.min(), "an IG map has both signs"
    assert (overlay.cal_min, overlay.cal_max) == pytest.approx((0.15 * stats["max"], stats["max"]))
    assert (overlay.cal_min_neg, overlay.cal_max_neg) == pytest.approx(
        (0.15 * stats["min"], stats["min"])
    )

"""A small typed client for the Attrivue REST API (v1), for scripts on any machine.

It speaks HTTP only and imports nothing from the server's packages, so it runs where only
``httpx``, ``tqdm`` and ``pyyaml`` are installed.

Example:
    >>> from attrivue_client import Client
    >>> with Client("http://127.0.0.1:8000") as api:
    ...     api.login("admin", "...")
    ...     run = api.create_run(dataset_id=1, name="baseline", config="run.yaml")
    ...     api.follow(run["job_id"])
    ...     maps = api.attribute(run["id"], split="test")
    ...     api.follow_all([m["job_id"] for m in maps])
    ...     api.fetch_maps(run["id"], "maps/")
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from tqdm import tqdm

__all__ = [
    "DEFAULT_URL",
    "TERMINAL",
    "ApiError",
    "Client",
    "load_config",
    "load_token",
    "read_manifest",
    "save_token",
    "token_path",
]

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
Record = dict[str, Any]


class ApiError(Exception):
    """A request the server refused (``status`` its HTTP status) or could not be sent (0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.detail}" if self.status else self.detail


# --------------------------------------------------------------------------- files


def token_path() -> Path:
    """Where ``attrivue-client login`` keeps the token: ``$XDG_CONFIG_HOME/attrivue/token``."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "attrivue" / "token"


def save_token(token: str, path: Path | None = None) -> Path:
    """Store a token readable by its owner only (0600, in a 0700 folder)."""
    path = path or token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    path.chmod(0o600)  # an older file may have had wider permissions
    return path


def load_token(path: Path | None = None) -> str | None:
    path = path or token_path()
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def load_config(source: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any]:
    """A run config: a mapping as is, or read from a ``.json`` or YAML file."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    text = path.read_text()
    loaded = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a run config must be a mapping of settings")
    return loaded


# The labels the server accepts (in any case), as in its manifest import.
LABELS = {"0": 0, "1": 1, "healthy": 0, "control": 0, "pathological": 1, "patient": 1}


def read_manifest(folder: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of ``folder/manifest.csv``, checked before anything is uploaded.

    Columns: ``subject`` (or ``subject_key``), ``image`` and ``label`` are required; ``mask``,
    ``split``, ``site`` and ``target`` may be empty or absent. Paths are relative to the folder.
    Labels are 0 or 1, or in any case healthy/control (0) and pathological/patient (1); the
    rows come back with ``label`` as "0" or "1". Every problem is named, by line.
    """
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise ValueError(f"{folder} has no manifest.csv")
    with manifest.open(newline="") as fh:
        rows = [{k: (v or "").strip() for k, v in row.items() if k} for row in csv.DictReader(fh)]
    problems = []
    for number, row in enumerate(rows, start=2):
        row.setdefault("subject", row.get("subject_key", ""))
        if not row["subject"]:
            problems.append(f"line {number}: no subject (column subject or subject_key)")
        if not row.get("image"):
            problems.append(f"line {number}: no image")
        label = LABELS.get(row.get("label", "").lower())
        if label is None:
            problems.append(
                f"line {number}: label {row.get('label', '')!r}: expected 0, 1, healthy, "
                "control, pathological or patient"
            )
        else:
            row["label"] = str(label)
        for column in ("image", "mask"):
            if row.get(column) and not (folder / row[column]).is_file():
                problems.append(f"line {number}: no such file {row[column]}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"{manifest}: " + "; ".join(problems[:10]) + more)
    return rows


def _detail(response: httpx.Response) -> str:
    """The API's ``{detail}`` as one line (FastAPI's validation errors are a list)."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(detail, list):
        parts = []
        for error in detail:
            where = ".".join(str(p) for p in error.get("loc", [])[1:])
            parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return "; ".join(parts)
    return str(detail)


# --------------------------------------------------------------------------- client


class Client:
    """The Attrivue API over HTTP.

    Args:
        url: The server, e.g. ``http://127.0.0.1:8000``; default ``$ATTRIVUE_URL``, else
            ``DEFAULT_URL``.
        token: A bearer token; default ``$ATTRIVUE_TOKEN``, else the file that
            ``attrivue-client login`` wrote (``token_path()``).
        timeout: Seconds to wait for the server on each request.
        progress: Show tqdm progress bars (on stderr) in long operations.
        transport: An httpx transport, for tests.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        progress: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("ATTRIVUE_URL") or DEFAULT_URL).rstrip("/")
        self.progress = progress
        self._http = httpx.Client(
            base_url=f"{self.url}/api/v1", timeout=timeout, transport=transport
        )
        self.token = token or os.environ.get("ATTRIVUE_TOKEN") or load_token()

    @property
    def token(self) -> str | None:
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if value:
            self._http.headers["Authorization"] = f"Bearer {value}"
        else:
            self._http.headers.pop("Authorization", None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ----------------------------------------------------------------------- plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None
        # Scripts authenticate by header; a session cookie would demand CSRF tokens.
        self._http.cookies.clear()
        if response.is_error:
            raise ApiError(response.status_code, _detail(response))
        return response

    def _get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return self._request("GET", path, params=query).json()

    def _post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=dict(body or {})).json()

    def _bar(self, **kwargs: Any) -> tqdm:
        return tqdm(disable=not self.progress, dynamic_ncols=True, **kwargs)

    # ----------------------------------------------------------------------- auth

    def login(self, username: str, password: str) -> str:
        """Log in; the client uses the returned session token from now on, and returns it."""
        body = {"username": username, "password": password}
        self.token = self._post("/auth/login", body)["access_token"]
        assert self.token is not None
        return self.token

    def create_token(self, name: str, *, expires_in_days: int | None = 90) -> str:
        """A personal API token (its value is shown once); ``None`` days: no expiry."""
        body = {"name": name, "expires_in_days": expires_in_days}
        return str(self._post("/auth/tokens", body)["token"])

    def logout(self) -> None:
        """Revoke the token this client uses."""
        self._request("POST", "/auth/logout")
        self.token = None

    def me(self) -> Record:
        return dict(self._get("/auth/me"))

    # ----------------------------------------------------------------------- projects, data

    def projects(self) -> list[Record]:
        return list(self._get("/projects")["data"])

    def create_project(self, name: str, *, description: str = "") -> Record:
        return dict(self._post("/projects", {"name": name, "description": description}))

    def datasets(self, *, project_id: int | None = None) -> list[Record]:
        return list(self._get("/datasets", project_id=project_id)["data"])

    def create_dataset(
        self, name: str, *, project_id: int | None = None, description: str = ""
    ) -> Record:
        """An empty dataset; without ``project_id``, the only project you may write to."""
        body = {"name": name, "project_id": project_id, "description": description}
        return dict(self._post("/datasets", body))

    def subjects(self, dataset_id: int) -> list[Record]:
        return list(self._get(f"/datasets/{dataset_id}/subjects")["data"])

    def upload_subject(
        self,
        dataset_id: int,
        *,
        subject_key: str,
        image: str | os.PathLike[str],
        label: int,
        mask: str | os.PathLike[str] | None = None,
        split: str = "train",
        site: str = "",
        target: float | None = None,
    ) -> Record:
        """Upload one subject: a NIfTI image, an optional lesion mask, its label and split."""
        data: dict[str, str] = {"subject_key": subject_key, "label": str(label), "split": split}
        if site:
            data["site"] = site
        if target is not None:
            data["target"] = str(target)
        with open(image, "rb") as image_fh:
            files: dict[str, tuple[str, Any]] = {"image": (Path(image).name, image_fh)}
            if mask is None:
                response = self._request(
                    "POST", f"/datasets/{dataset_id}/subjects", data=data, files=files
                )
            else:
                with open(mask, "rb") as mask_fh:
                    files["mask"] = (Path(mask).name, mask_fh)
                    response = self._request(
                        "POST", f"/datasets/{dataset_id}/subjects", data=data, files=files
                    )
        return dict(response.json())

    def upload_folder(
        self, dataset_id: int, folder: str | os.PathLike[str], *, skip_existing: bool = True
    ) -> list[Record]:
        """Upload every subject of ``folder/manifest.csv``, one request each.

        With ``skip_existing``, subjects whose key is already in the dataset are left alone,
        so an interrupted upload can be run again. Returns the subjects uploaded now.
        """
        folder = Path(folder)
        rows = read_manifest(folder)
        present = {s["subject_key"] for s in self.subjects(dataset_id)} if skip_existing else set()
        uploaded = []
        with self._bar(total=len(rows), desc="upload", unit="subject") as bar:
            for row in rows:
                if row["subject"] not in present:
                    uploaded.append(
                        self.upload_subject(
                            dataset_id,
                            subject_key=row["subject"],
                            image=folder / row["image"],
                            mask=folder / row["mask"] if row.get("mask") else None,
                            label=int(row["label"]),
                            split=row.get("split") or "train",
                            site=row.get("site", ""),
                            target=float(row["target"]) if row.get("target") else None,
                        )
                    )
                bar.update(1)
        return uploaded

    # ----------------------------------------------------------------------- runs, jobs

    def create_run(
        self,
        dataset_id: int,
        name: str,
        config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    ) -> Record:
        """Queue a training run; ``config`` is a mapping or a YAML/JSON file of RunConfig."""
        body = {"dataset_id": dataset_id, "name": name, "config": load_config(config)}
        return dict(self._post("/runs", body))

    def runs(self, *, dataset_id: int | None = None, status: str | None = None) -> list[Record]:
        return list(self._get("/runs", dataset_id=dataset_id, status=status)["data"])

    def run(self, run_id: int) -> Record:
        return dict(self._get(f"/runs/{run_id}"))

    def jobs(self, *, status: str | None = None) -> list[Record]:
        return list(self._get("/jobs", status=status)["data"])

    def job(self, job_id: int) -> Record:
        return dict(self._get(f"/jobs/{job_id}"))

    def cancel_job(self, job_id: int) -> Record:
        return dict(self._post(f"/jobs/{job_id}/cancel"))

    def follow(self, job_id: int, *, interval: float = 1.0, timeout: float | None = None) -> Record:
        """Poll a job until it ends, with a progress bar; returns the finished job.

        Raises:
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._bar(total=100, desc=f"job {job_id}", unit="%") as bar:
            while True:
                job = self.job(job_id)
                bar.n = round(100 * float(job["progress"]))
                bar.set_postfix_str(f"{job['status']}: {job['message']}"[:60], refresh=True)
                if job["status"] in TERMINAL:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
                time.sleep(interval)

    def follow_all(
        self, job_ids: Iterable[int], *, interval: float = 1.0, timeout: float | None = None
    ) -> list[Record]:
        """Poll several jobs until all end (one bar, counting jobs); returns them in order."""
        ids = list(dict.fromkeys(job_ids))
        done: dict[int, Record] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._bar(total=len(ids), desc="jobs", unit="job") as bar:
            while True:
                for job_id in ids:
                    if job_id not in done:
                        job = self.job(job_id)
                        if job["status"] in TERMINAL:
                            done[job_id] = job
                            bar.update(1)
                failed = sum(j["status"] != "succeeded" for j in done.values())
                bar.set_postfix_str(f"{failed} failed" if failed else "", refresh=True)
                if len(done) == len(ids):
                    return [done[i] for i in ids]
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(ids) - len(done)} jobs still running after {timeout} s"
                    )
                time.sleep(interval)

    # ----------------------------------------------------------------------- attributions

    def attribute(
        self,
        run_id: int,
        *,
        subject_ids: Iterable[int] | None = None,
        split: str | None = None,
        method: str = "integrated_gradients",
        params: Mapping[str, Any] | None = None,
    ) -> list[Record]:
        """Queue one attribution map per subject (given, or every one of a split)."""
        body: dict[str, Any] = {"run_id": run_id, "method": method, "params": dict(params or {})}
        if subject_ids is not None:
            body["subject_ids"] = list(subject_ids)
        if split is not None:
            body["split"] = split
        return list(self._post("/attributions/batch", body)["data"])

    def attributions(
        self,
        *,
        run_id: int | None = None,
        subject_id: int | None = None,
        status: str | None = None,
        method: str | None = None,
        split: str | None = None,
    ) -> list[Record]:
        query = {
            "run_id": run_id,
            "subject_id": subject_id,
            "status": status,
            "method": method,
            "split": split,
        }
        return list(self._get("/attributions", **query)["data"])

    def attribution(self, attribution_id: int) -> Record:
        return dict(self._get(f"/attributions/{attribution_id}"))

    def stats(self, attribution_id: int) -> Record:
        """Summary and lesion metrics of a computed map (see the API guide)."""
        return dict(self._get(f"/attributions/{attribution_id}/stats"))

    def download_map(
        self, attribution_id: int, dest: str | os.PathLike[str], *, display: bool = False
    ) -> Path:
        """Save the float32 map (or the int8 display map) to ``dest``, atomically."""
        name = "display.nii.gz" if display else "map.nii.gz"
        return self._save(f"/attributions/{attribution_id}/{name}", dest)

    def read_map(self, attribution_id: int, *, display: bool = False) -> bytes:
        """The float32 map (or the int8 display map) as NIfTI bytes, in memory."""
        name = "display.nii.gz" if display else "map.nii.gz"
        return self._request("GET", f"/attributions/{attribution_id}/{name}").content

    def read_subject_image(self, subject_id: int) -> bytes:
        """The subject's MR volume as NIfTI bytes, in memory."""
        return self._request("GET", f"/subjects/{subject_id}/image.nii.gz").content

    def show_map(self, attribution_id: int, **options: Any) -> Any:
        """An ipyniivue widget of the map over its subject's image, with the web viewer's
        colours and thresholds (``attrivue_client.notebook.show_map``; needs the ``notebook``
        extra: ``pip install 'attrivue[notebook]'``)."""
        from attrivue_client import notebook

        return notebook.show_map(self, attribution_id, **options)

    def export_run(
        self, run_id: int, dest: str | os.PathLike[str], *, checkpoint: bool = False
    ) -> Path:
        """Save the run as a zipped MONAI bundle (weights, configs/metadata.json with the
        training config and metrics, configs/inference.json with the preprocessing), or only
        its best checkpoint, to ``dest``, atomically."""
        return self._save(f"/runs/{run_id}/{'checkpoint' if checkpoint else 'bundle'}", dest)

    def import_model(
        self,
        dataset_id: int,
        model: str | os.PathLike[str],
        *,
        name: str,
        grid: Sequence[int],
        channels: int = 1,
        intensity: str = "zscore",
        brain: str = "mask",
        logit_index: int = 0,
        task: str = "classification",
        timeout: float = 900.0,
    ) -> Record:
        """Import a TorchScript file or a MONAI bundle (a zip, or a folder, zipped here) as a
        run of the dataset; returns the run once a worker has checked the model. ``task``
        ``"regression"``: output ``logit_index`` is the predicted target, not a logit."""
        data: dict[str, Any] = {
            "dataset_id": str(dataset_id),
            "name": name,
            "grid": [str(v) for v in grid],
            "channels": str(channels),
            "intensity": intensity,
            "brain": brain,
            "logit_index": str(logit_index),
            "task": task,
        }
        path = Path(model)
        with tempfile.TemporaryDirectory() as folder:
            if path.is_dir():  # a bundle folder: configs/, models/
                path = Path(shutil.make_archive(str(Path(folder) / path.name), "zip", path))
            with path.open("rb") as fh:
                response = self._request(
                    "POST",
                    "/runs/import",
                    data=data,
                    files={"model": (path.name, fh)},
                    timeout=httpx.Timeout(60.0, read=timeout),
                )
        return dict(response.json())

    def _save(self, path: str, dest: str | os.PathLike[str]) -> Path:
        """Stream a GET's body to ``dest``, atomically (nothing left behind on failure)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.part")
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise ApiError(response.status_code, _detail(response))
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise ApiError(0, f"cannot reach {self.url}: {exc}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, dest)
        return dest

    def fetch_maps(
        self,
        run_id: int,
        out_dir: str | os.PathLike[str],
        *,
        method: str | None = None,
        split: str | None = None,
        display: bool = False,
    ) -> list[Path]:
        """Download every computed map of a run into ``out_dir``.

        Files are named ``<subject_key>_<method>_<attribution id>.nii.gz``; ``maps.csv`` in
        the same folder lists them with their subject, label, split and method.
        """
        out = Path(out_dir)
        run = self.run(run_id)
        subjects = {s["id"]: s for s in self.subjects(run["dataset_id"])}
        rows = self.attributions(run_id=run_id, status="succeeded", method=method, split=split)
        rows.sort(key=lambda r: (subjects[r["subject_id"]]["subject_key"], r["method"], r["id"]))
        paths = []
        index = []
        with self._bar(total=len(rows), desc="download", unit="map") as bar:
            for row in rows:
                subject = subjects[row["subject_id"]]
                name = f"{subject['subject_key']}_{row['method']}_{row['id']}.nii.gz"
                paths.append(self.download_map(row["id"], out / name, display=display))
                index.append(
                    {
                        "attribution_id": row["id"],
                        "file": name,
                        "subject_key": subject["subject_key"],
                        "subject_id": subject["id"],
                        "label": subject["label"],
                        "split": subject["split"],
                        "method": row["method"],
                    }
                )
                bar.update(1)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "maps.csv").open("w", newline="") as fh:
            fields = ["attribution_id", "file", "subject_key", "subject_id", "label", "split"]
            writer = csv.DictWriter(fh, fieldnames=[*fields, "method"])
            writer.writeheader()
            writer.writerows(index)
        return paths

"""Models in and out of a project: import a TorchScript file or a MONAI bundle as a run (checked
by a forward pass on a cpu-queue worker before anything is stored), and export a run's best
checkpoint or a MONAI bundle of it.

An import is one request: the upload is recognised here (without torch: both formats are zip
archives), staged under ``Storage.model_import_dir(job_id)``, and a ``check_model`` job is
queued; the request waits for the job's end. On success the staged folder becomes the run's
``checkpoints/imported/`` and the run is stored; on any failure the job row and the staged
files are removed, and the worker's message is the 422's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from attrivue_core.imported import (
    BUNDLE_DIR,
    EXPORT_FILE,
    IMPORT_FILE,
    TORCHSCRIPT_FILE,
    ModelFormat,
    ModelInputSpec,
)
from backend.core.config import Settings
from backend.core.db import session_scope
from backend.models import Dataset, Job, JobStatus, Run, User
from backend.services.datasets import channel_paths
from backend.services.errors import Conflict, InvalidInput, NotFound, Unavailable
from backend.services.jobs import TERMINAL, dispatch, new_job
from backend.storage import Storage

__all__ = [
    "BEST_CHECKPOINT",
    "MAX_BUNDLE_FILES",
    "checkpoint_file",
    "dataset_channels",
    "dataset_fingerprint",
    "import_model",
    "recognise",
    "write_bundle",
]

BEST_CHECKPOINT = "best.pt"  # as the worker writes it (worker.ml.training.checkpoints)
MAX_BUNDLE_FILES = 10_000
_POLL_SECONDS = 0.25
_METADATA = "configs/metadata.json"
_MONAI_PARTS = ("configs/inference.json", "configs/", "models/model.pt", "models/model.ts")


def dataset_channels(dataset: Dataset) -> int:
    """Image channels of the dataset's subjects: one per modality (one image: one)."""
    return len(dataset.modalities or []) or 1


def recognise(path: Path) -> tuple[ModelFormat, str]:
    """The format of an uploaded model, and (for a bundle) the folder inside the zip that
    holds ``configs/``: ``""`` at the top, or one top-level folder.

    Raises:
        InvalidInput: Neither a TorchScript file nor a zipped MONAI bundle with metadata.
    """
    if not zipfile.is_zipfile(path):
        raise InvalidInput(
            "the file is not a model: not a TorchScript file (torch.jit.save), "
            "a torch.export program (torch.export.save) or a zipped MONAI bundle (all are zip "
            "archives)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"the file is not a readable zip archive: {exc}") from None
    for name in names:  # configs/metadata.json at the top, or in one top-level folder
        if name == _METADATA:
            return "monai_bundle", ""
        if name.count("/") == 2 and name.split("/", 1)[1] == _METADATA:
            return "monai_bundle", name.split("/", 1)[0] + "/"
    tops = {n.split("/", 1)[0] for n in names}
    inside = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if len(tops) == 1:  # torch.export.save: archive_format and the graph under models/
        top = next(iter(tops))
        if f"{top}/archive_format" in names and any(
            n.startswith(f"{top}/models/") and n.endswith(".json") for n in names
        ):
            return "torch_export", ""
    if any(n == part or n.startswith(part) for n in names + list(inside) for part in _MONAI_PARTS):
        raise InvalidInput(
            "the MONAI bundle has no configs/metadata.json: a bundle needs "
            "configs/metadata.json, configs/inference.json and models/model.pt"
        )
    if len(tops) == 1:
        top = next(iter(tops))
        if f"{top}/data.pkl" in names and any(n.startswith(f"{top}/code/") for n in names):
            return "torchscript", ""
        if f"{top}/data.pkl" in names:
            raise InvalidInput(
                "the file is a torch.save archive (weights or a pickled module), not a "
                "TorchScript model: save the model with torch.jit.save, or as a MONAI bundle "
                "(configs/metadata.json, configs/inference.json, models/model.pt)"
            )
    raise InvalidInput(
        "the file is not a model: a zip archive that is not a TorchScript file "
        "(torch.jit.save), a torch.export program (torch.export.save) or a MONAI bundle (configs/metadata.json, configs/inference.json, "
        "models/model.pt)"
    )


def _extract_bundle(path: Path, prefix: str, dest: Path, max_bytes: int) -> None:
    """The bundle's files under ``prefix`` into ``dest``, refusing unsafe or oversized ones."""
    with zipfile.ZipFile(path) as archive:
        members = [
            m for m in archive.infolist() if not m.is_dir() and m.filename.startswith(prefix)
        ]
        if len(members) > MAX_BUNDLE_FILES:
            raise InvalidInput(f"the bundle has more than {MAX_BUNDLE_FILES} files")
        if sum(m.file_size for m in members) > max_bytes:
            raise InvalidInput(f"the bundle unpacks to more than {max_bytes} bytes")
        for member in members:
            relative = PurePosixPath(member.filename[len(prefix) :])
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise InvalidInput(f"the bundle has an unsafe file name: {member.filename!r}")
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 1024 * 1024)


def _check_subject(dataset: Dataset) -> dict[str, Any]:
    """The subject the worker runs the model on: the first of the dataset."""
    if not dataset.subjects:
        raise InvalidInput(f"dataset {dataset.id} has no subjects to check the model on")
    subject = dataset.subjects[0]
    return {
        "key": subject.subject_key,
        "image": subject.image_path,
        "brain": subject.brain_path,
        # The stored images of channels 1.. (a multi-modal dataset), in the dataset's order.
        "channels": channel_paths(subject, dataset)[1:],
    }


def _wait(job_id: int, seconds: float) -> Job | None:
    """The job once it has ended (detached), or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        with session_scope() as session:
            job = session.get(Job, job_id)
            if job is None or job.status in TERMINAL:
                if job is not None:
                    session.expunge(job)
                return job
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL_SECONDS)


def _forget(session: Session, storage: Storage, job_id: int, *more: Path) -> None:
    """Nothing of a refused import stays: its job row and its files."""
    session.rollback()
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()
    for path in (storage.model_import_dir(job_id), *more):
        storage.remove_tree(path)


def import_model(
    session: Session,
    storage: Storage,
    settings: Settings,
    *,
    dataset: Dataset,
    name: str,
    user: User,
    upload: Path,
    spec: ModelInputSpec,
) -> Run:
    """Store ``upload`` as an imported run of ``dataset`` once a worker has checked it.

    Raises:
        InvalidInput: The file is no model, its spec does not fit the dataset, or the
            worker's forward pass refused it (its message says why); nothing is stored.
        Unavailable: No cpu-queue worker answered within ``model_check_seconds``.
    """
    have = dataset_channels(dataset)
    if spec.channels != have:
        raise InvalidInput(
            f"the input spec says {spec.channels} channel(s), but the subjects of dataset "
            f"{dataset.id} have {have} (one image each)"
        )
    check = _check_subject(dataset)
    model_format, prefix = recognise(upload)
    job = new_job(session, kind="check_model", user=user)
    job.message = f"checking the imported {model_format.replace('_', ' ')}"
    session.commit()
    job_id = job.id
    folder = storage.model_import_dir(job_id)
    try:
        folder.mkdir(parents=True, exist_ok=False)
        if model_format == "torchscript":
            shutil.copyfile(upload, folder / TORCHSCRIPT_FILE)
        elif model_format == "torch_export":
            shutil.copyfile(upload, folder / EXPORT_FILE)
        else:
            _extract_bundle(upload, prefix, folder / BUNDLE_DIR, 2 * settings.max_model_bytes)
        record = {
            "format": model_format,
            "spec": spec.model_dump(mode="json"),
            "config": spec.run_config(),
            "check": check,
        }
        (folder / IMPORT_FILE).write_text(json.dumps(record, indent=1))
        dispatch(session, job, settings)
    except BaseException:
        _forget(session, storage, job_id)
        raise
    ended = _wait(job_id, settings.model_check_seconds)
    if ended is None or ended.status != JobStatus.succeeded.value:
        _forget(session, storage, job_id)
        if ended is None:
            raise Unavailable(
                f"no worker of the cpu queue checked the model within "
                f"{settings.model_check_seconds:g} s (is one running?); nothing was stored"
            )
        raise InvalidInput(f"the model was refused: {ended.error or ended.status}")
    moved: list[Path] = []
    try:
        run = Run(
            name=name,
            dataset_id=dataset.id,
            config=record["config"],
            status=JobStatus.succeeded.value,
            metrics={},
            job_id=job_id,
            created_by_id=user.id,
            source="imported",
            model_format=model_format,
            input_spec=record["spec"],
        )
        session.add(run)
        session.flush()
        destination = storage.imported_model_dir(run.id)
        destination.parent.mkdir(parents=True, exist_ok=True)
        moved.append(destination)
        shutil.move(str(folder), str(destination))
        session.commit()
    except BaseException:
        _forget(session, storage, job_id, *moved)
        raise
    return run


# --------------------------------------------------------------------------- export


def checkpoint_file(storage: Storage, run: Run) -> tuple[Path, str]:
    """The file ``GET /runs/{id}/checkpoint`` serves, and its download name: a trained run's
    best checkpoint, or an imported TorchScript run's model."""
    if run.source == "imported":
        if run.model_format == "torch_export":
            path = storage.imported_model_dir(run.id) / EXPORT_FILE
            name = f"run-{run.id}.pt2"
        elif run.model_format == "torchscript":
            path = storage.imported_model_dir(run.id) / TORCHSCRIPT_FILE
            name = f"run-{run.id}.ts"
        else:
            raise Conflict(
                f"run {run.id} was imported as a MONAI bundle: it has no single checkpoint; "
                "download its bundle"
            )
    else:
        path = storage.checkpoint_dir(run.id) / BEST_CHECKPOINT
        name = f"run-{run.id}-best.pt"
    if not path.is_file():
        raise NotFound(f"run {run.id} has no checkpoint (status {run.status})")
    return path, name


def dataset_fingerprint(dataset: Dataset) -> str:
    """Digest of who was in the dataset, in which split, with which label and grid."""
    rows = sorted(
        (s.subject_key, s.split, int(s.label), list(s.shape), s.site) for s in dataset.subjects
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _version(package: str) -> str:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return "unknown"


def _metadata(run: Run, dataset: Dataset) -> dict[str, Any]:
    config = run.config
    grid = list(config["grid"])
    regression = config.get("task") == "regression"
    output = "the prediction" if regression else "the pathological logit"
    return {
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported from Attrivue run {run.id}"},
        "monai_version": _version("monai"),
        "pytorch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "required_packages_version": {"attrivue": _version("attrivue")},
        "name": run.name,
        "task": "regression" if regression else "classification of 3D MR images",
        "description": (
            f"Attrivue run {run.id} ({config.get('network')}, {config.get('loss_setting')}); "
            f"{output} is output 0. The network and the preprocessing are Attrivue's "
            "(worker.ml): inference.json instantiates them where attrivue is installed."
        ),
        "authors": "Attrivue",
        "copyright": "",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": 1,
                    "spatial_shape": grid,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "tuples",
                    "format": "regression" if regression else "logits",
                    "num_channels": 1,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "prediction" if regression else "pathological"},
                }
            },
        },
        "attrivue": {
            "run_id": run.id,
            "run_name": run.name,
            "created_at": run.created_at.isoformat() if run.created_at else None,
            "exported_at": datetime.now(UTC).isoformat(),
            "preset": run.preset,
            "training_config": config,
            "metrics": run.metrics or {},
            "best_epoch": run.best_epoch,
            "best_metric": run.best_metric,
            "dataset": {
                "id": dataset.id,
                "name": dataset.name,
                "subjects": len(dataset.subjects),
                "fingerprint": dataset_fingerprint(dataset),
            },
        },
    }


def _inference(run: Run) -> dict[str, Any]:
    config = run.config
    spec = ModelInputSpec(
        channels=1,
        grid=tuple(config["grid"]),
        intensity=config.get("intensity", "zscore"),
        brain=config.get("brain", "nonzero"),
        logit_index=0,
        task="regression" if config.get("task") == "regression" else "classification",
    )
    return {
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "worker.ml.imported.network_from_config", "config": config},
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "worker.ml.transforms.preprocess",
            "grid": list(spec.grid),
            "intensity": spec.intensity,
            "brain": spec.brain,
        },
        "checkpointloader": {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"},
            "map_location": "@device",
        },
        # What Attrivue's model import takes (POST /runs/import) to use this bundle again.
        "attrivue_input_spec": spec.model_dump(mode="json"),
    }


def write_bundle(storage: Storage, run: Run, dataset: Dataset, dest: Path) -> str:
    """Write a trained run as a zipped MONAI bundle to ``dest``; returns its download name.

    The zip holds one folder ``run-<id>/`` (as ``monai.bundle`` expects of a zipped bundle
    named ``run-<id>.zip``): ``configs/metadata.json`` (the training config, the metrics and
    the dataset's fingerprint), ``configs/inference.json`` (network and preprocessing) and
    ``models/model.pt`` (the best checkpoint; its weights under ``"model"``).
    """
    if run.source == "imported":
        raise Conflict(f"run {run.id} was imported: export the model it was imported from")
    checkpoint = storage.checkpoint_dir(run.id) / BEST_CHECKPOINT
    if run.status != JobStatus.succeeded.value or not checkpoint.is_file():
        raise Conflict(f"run {run.id} has no best checkpoint to export (status {run.status})")
    top = f"run-{run.id}"
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{top}/{_METADATA}", json.dumps(_metadata(run, dataset), indent=2))
        archive.writestr(f"{top}/configs/inference.json", json.dumps(_inference(run), indent=2))
        archive.write(checkpoint, f"{top}/models/model.pt")
    return f"{top}.zip"

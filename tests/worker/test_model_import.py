"""Issue 20 items 1 and 2 through the API and a real Celery worker: a TorchScript model and a
MONAI bundle made here are imported as runs (checked by the worker's forward pass), and their
Integrated Gradients maps equal Captum's on the same model, input and quadrature; a trained
run exported as a bundle and imported into another project gives the same predictions and
maps; a file that is no model, a bundle without metadata and a spec that does not fit are
refused with 422 and leave no row and no file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers import brain_volume, write_nifti
from tests.worker.conftest import PASSWORD, make_dataset
from tests.worker.imported_models import (
    GRID,
    SPLITS,
    STEPS,
    Scripted,
    api_client,
    first_subject,
    ig_map,
    import_model,
    torchscript_bytes,
    worker_process,
)


def _captum_ig(forward: Any, config: dict, image: Path, brain: Path | None) -> np.ndarray:
    """Captum's IG of ``forward`` (one logit per image) on the subject, preprocessed as the
    worker does, from the zero image with STEPS Gauss-Legendre points, back to native space."""
    from captum.attr import IntegratedGradients

    from attrivue_core.configs import RunConfig
    from worker.ml.transforms import BRAIN_KEY, IMAGE_KEY, preprocess_for, to_native

    transform = preprocess_for(RunConfig.model_validate(config))
    item = {IMAGE_KEY: str(image), **({BRAIN_KEY: str(brain)} if brain else {})}
    prepared = transform(item)[IMAGE_KEY]
    x = prepared.as_tensor()[None].float().requires_grad_()
    attributions = IntegratedGradients(forward).attribute(
        x, baselines=torch.zeros_like(x), n_steps=STEPS, method="gausslegendre"
    )
    native, _ = to_native(attributions[0].detach(), prepared, transform)
    return native


def _assert_same_map(stored: np.ndarray, expected: np.ndarray) -> None:
    assert stored.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-5 * scale)


CLASSIFIER = {
    "_target_": "monai.networks.nets.Classifier",
    "in_shape": [1, *GRID],
    "classes": 2,
    "channels": [4, 8],
    "strides": [2, 2],
}


def _bundle(
    state: dict[str, torch.Tensor] | None,
    *,
    metadata: dict | None = None,
    inference: dict | None = None,
    top: str = "classifier",
) -> bytes:
    """A zipped MONAI bundle: configs/metadata.json, configs/inference.json, models/model.pt."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if metadata is not None:
            archive.writestr(f"{top}/configs/metadata.json", json.dumps(metadata))
        archive.writestr(
            f"{top}/configs/inference.json",
            json.dumps(inference or {"bundle_root": ".", "network_def": CLASSIFIER}),
        )
        if state is not None:
            weights = io.BytesIO()
            torch.save(state, weights)
            archive.writestr(f"{top}/models/model.pt", weights.getvalue())
    return buffer.getvalue()


def _metadata(spatial_shape: list[int], channels: int = 1) -> dict:
    return {
        "version": "0.1.0",
        "network_data_format": {
            "inputs": {"image": {"num_channels": channels, "spatial_shape": spatial_shape}},
            "outputs": {"pred": {"num_channels": 2}},
        },
    }


def test_imported_torchscript_and_bundle_maps_equal_captum(stack: dict, tmp_path: Path) -> None:
    from monai.networks.nets import Classifier

    from backend.core.db import session_scope
    from backend.models import Job, Run

    _, dataset_id = make_dataset(tmp_path, SPLITS)
    subject_id, image, brain = first_subject(dataset_id)
    torch.manual_seed(0)
    scripted = Scripted().eval()
    classifier = Classifier(in_shape=(1, *GRID), classes=2, channels=(4, 8), strides=(2, 2)).eval()
    client = api_client("r")
    try:
        with worker_process(tmp_path, stack):
            ts_reply = import_model(
                client, dataset_id, "ts", torchscript_bytes(scripted), logit_index=2, brain="mask"
            )
            assert ts_reply.status_code == 201, ts_reply.text
            bundle = _bundle(classifier.state_dict(), metadata=_metadata(GRID))
            bundle_reply = import_model(client, dataset_id, "bundle", bundle, logit_index=1)
            assert bundle_reply.status_code == 201, bundle_reply.text
            ts_run, bundle_run = ts_reply.json(), bundle_reply.json()
            assert ts_run["source"] == bundle_run["source"] == "imported"
            assert ts_run["model_format"] == "torchscript"
            assert bundle_run["model_format"] == "monai_bundle"
            assert ts_run["status"] == "succeeded"
            assert ts_run["input_spec"]["logit_index"] == 2
            assert ts_run["config"]["grid"] == GRID
            with session_scope() as session:  # the check job stays with the run
                job = session.get(Job, ts_run["job_id"])
                assert job.kind == "check_model" and job.status == "succeeded"
                assert "output shape [1, 3]" in job.message
                assert session.get(Run, bundle_run["id"]).model_format == "monai_bundle"

            _, ts_map = ig_map(client, ts_run["id"], subject_id, tmp_path)
            _, bundle_map = ig_map(client, bundle_run["id"], subject_id, tmp_path)
        expected_ts = _captum_ig(lambda x: scripted(x)[:, 2], ts_run["config"], image, brain)
        _assert_same_map(ts_map, expected_ts)
        expected_bundle = _captum_ig(
            lambda x: classifier(x)[:, 1], bundle_run["config"], image, brain
        )
        _assert_same_map(bundle_map, expected_bundle)

        # The TorchScript run's checkpoint is the file it was imported from; a bundle run has
        # no single checkpoint, and neither is exported again as a bundle.
        served = client.get(f"/api/v1/runs/{ts_run['id']}/checkpoint")
        assert served.status_code == 200
        assert torch.jit.load(io.BytesIO(served.content)).code == torch.jit.script(scripted).code
        assert client.get(f"/api/v1/runs/{bundle_run['id']}/checkpoint").status_code == 409
        assert client.get(f"/api/v1/runs/{ts_run['id']}/bundle").status_code == 409
    finally:
        client.__exit__(None, None, None)


def _leftovers(data_dir: Path) -> list[str]:
    """Files an import could leave: staged models, imported runs' folders, temp uploads."""
    found = []
    for folder in ("imports/models", "runs", "tmp"):
        root = data_dir / folder
        if root.exists():
            found += [str(p.relative_to(data_dir)) for p in root.rglob("*") if p.is_file()]
    return found


def test_bad_imports_are_refused_and_leave_nothing(stack: dict, tmp_path: Path) -> None:
    from monai.networks.nets import Classifier

    from backend.core.db import session_scope
    from backend.models import Job, Run
    from backend.services.users import create_user

    _, dataset_id = make_dataset(tmp_path, ["train", "train", "test"])
    with session_scope() as session:
        create_user(session, username="outsider", password=PASSWORD, role="researcher")
    data_dir = Path(stack["ATTRIVUE_DATA_DIR"])
    torch.manual_seed(0)
    classifier = Classifier(in_shape=(1, *GRID), classes=2, channels=(4, 8), strides=(2, 2))
    weights = io.BytesIO()
    torch.save(Scripted().state_dict(), weights)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(GRID)), 1))  # one grid only
    cases = {
        "text": (b"patient,label\nsub-0,1\n", {}, "not a model"),
        "state_dict": (weights.getvalue(), {}, "torch.jit.save"),
        "no_metadata": (_bundle(classifier.state_dict()), {}, "no configs/metadata.json"),
        "channels": (torchscript_bytes(Scripted()), {"channels": 2}, "channel"),
        "grid_forward": (torchscript_bytes(flat), {"grid": [16, 16, 16]}, "forward pass"),
        "grid_metadata": (
            _bundle(classifier.state_dict(), metadata=_metadata([32, 32, 32])),
            {},
            "spatial_shape [32, 32, 32]",
        ),
        "channels_metadata": (
            _bundle(classifier.state_dict(), metadata=_metadata(GRID, channels=2)),
            {},
            "num_channels 2",
        ),
        "logit_index": (torchscript_bytes(Scripted()), {"logit_index": 3}, "logit_index 3"),
        "weights_mismatch": (
            _bundle(Scripted().state_dict(), metadata=_metadata(GRID)),
            {},
            "does not fit network_def",
        ),
        "grid_length": (torchscript_bytes(Scripted()), {"grid": [16, 20]}, "grid"),
    }
    client = api_client("r")
    outsider = api_client("outsider")
    try:
        with worker_process(tmp_path, stack):
            for name, (content, spec, problem) in cases.items():
                reply = import_model(client, dataset_id, name, content, **spec)
                assert reply.status_code == 422, (name, reply.text)
                assert problem in reply.json()["detail"], (name, reply.json()["detail"])
            # Another project's user does not see the dataset.
            hidden = import_model(outsider, dataset_id, "x", torchscript_bytes(Scripted()))
            assert hidden.status_code == 404, hidden.text
    finally:
        client.__exit__(None, None, None)
        outsider.__exit__(None, None, None)
    with session_scope() as session:
        assert session.query(Run).count() == 0
        assert session.query(Job).count() == 0
    assert _leftovers(data_dir) == []


def _copy_dataset(tmp_path: Path, count: int) -> tuple[int, int]:
    """Another researcher ``q`` with a project of its own, and a dataset holding the same
    subjects (the same files) as ``make_dataset``'s first ``count``; returns (user, dataset)."""
    from backend.core.db import session_scope
    from backend.services.datasets import create_dataset, import_subject
    from backend.services.projects import create_project
    from backend.services.users import create_user
    from backend.storage import get_storage

    with session_scope() as session:
        user = create_user(session, username="q", password=PASSWORD, role="researcher")
        project = create_project(session, name="q's", description="", user=user)
        dataset = create_dataset(
            session, project_id=project.id, name="copy", description="", user=user
        )
        for i, split in enumerate(SPLITS[:count]):
            path = tmp_path / f"i{i}.nii.gz"
            if not path.exists():
                write_nifti(path, brain_volume(seed=i, lesion=i % 2 == 1)[0])
            with open(path, "rb") as handle:
                import_subject(
                    session,
                    get_storage(),
                    dataset=dataset,
                    subject_key=f"sub-{i}",
                    label=i % 2,
                    split=split,
                    target=None,
                    image=(path.name, handle),
                    mask=None,
                    max_bytes=10**8,
                )
        return user.id, dataset.id


def test_an_exported_bundle_imports_into_another_project_with_the_same_maps(
    stack: dict, tmp_path: Path
) -> None:
    from backend.core.db import session_scope
    from backend.models import RunPrediction, Subject, User
    from backend.services.runs import create_run
    from backend.storage import get_storage
    from worker.tasks.train import run_training

    user_id, dataset_id = make_dataset(tmp_path, SPLITS)
    config = {
        "epochs": 1,
        "batch_size": 2,
        "grid": GRID,
        "device": "cpu",
        "seed": 0,
        "val_attribution": False,
    }
    with session_scope() as session:
        run = create_run(
            session,
            dataset_id=dataset_id,
            name="trained",
            config=config,
            user=session.get(User, user_id),
        )
        session.commit()
        run_id, job_id = run.id, run.job_id
    run_training(job_id)
    _, copy_id = _copy_dataset(tmp_path, len(SPLITS))
    subject_id, _, _ = first_subject(dataset_id)
    with session_scope() as session:
        key = session.get(Subject, subject_id).subject_key
        copied = session.query(Subject).filter_by(dataset_id=copy_id, subject_key=key).one()
        copied_id = copied.id
        predicted = session.query(RunPrediction).filter_by(run_id=run_id, subject_id=subject_id)
        logit = predicted.one().logit

    owner, other = api_client("r"), api_client("q")
    try:
        checkpoint = owner.get(f"/api/v1/runs/{run_id}/checkpoint")
        assert checkpoint.status_code == 200
        best = get_storage().checkpoint_dir(run_id) / "best.pt"
        assert checkpoint.content == best.read_bytes()
        exported = owner.get(f"/api/v1/runs/{run_id}/bundle")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"] == "application/zip"
        # A user of another project sees neither.
        assert other.get(f"/api/v1/runs/{run_id}/bundle").status_code == 404
        assert other.get(f"/api/v1/runs/{run_id}/checkpoint").status_code == 404

        archive = zipfile.ZipFile(io.BytesIO(exported.content))
        top = f"run-{run_id}"
        assert {f"{top}/configs/metadata.json", f"{top}/configs/inference.json"} <= set(
            archive.namelist()
        )
        meta = json.loads(archive.read(f"{top}/configs/metadata.json"))
        assert meta["attrivue"]["training_config"]["grid"] == GRID
        assert meta["attrivue"]["metrics"] and len(meta["attrivue"]["dataset"]["fingerprint"]) == 64
        assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == GRID
        inference = json.loads(archive.read(f"{top}/configs/inference.json"))
        spec = inference["attrivue_input_spec"]
        assert archive.read(f"{top}/models/model.pt") == best.read_bytes()

        with worker_process(tmp_path, stack):
            reply = import_model(
                other,
                copy_id,
                "imported",
                exported.content,
                grid=spec["grid"],
                intensity=spec["intensity"],
                brain=spec["brain"],
                logit_index=spec["logit_index"],
            )
            assert reply.status_code == 201, reply.text
            imported = reply.json()
            original_id, original = ig_map(owner, run_id, subject_id, tmp_path)
            again_id, again = ig_map(other, imported["id"], copied_id, tmp_path)
            original_row = owner.get(f"/api/v1/attributions/{original_id}").json()
            again_row = other.get(f"/api/v1/attributions/{again_id}").json()
    finally:
        owner.__exit__(None, None, None)
        other.__exit__(None, None, None)
    assert imported["config"]["grid"] == GRID and imported["source"] == "imported"
    # The same prediction: the trained run's stored one, and both maps' logits.
    assert again_row["logit"] == pytest.approx(original_row["logit"], rel=1e-5, abs=1e-6)
    assert again_row["logit"] == pytest.approx(logit, rel=1e-4, abs=1e-5)
    _assert_same_map(again, original)

"""The shortcut report job on a trained stripe-shortcut run (known answer).

Site A's pathological subjects carry a bright stripe above the head, as in
worker/research/shortcut.py; nothing else tells the labels apart in the training split (no
lesions are drawn). A small_cnn trained on the non-zero voxels (``brain="nonzero"``) can only
separate the labels by the stripe: the report with the stripe's box erased must flag it. The
same data trained with ``brain="mask"`` never shows the network the stripe (every voxel outside
the brain mask is set to 0): erasing the box must leave every logit as it was, and raise no
region flag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import AFFINE, brain_volume, write_nifti
from tests.worker.conftest import PASSWORD

SHAPE = (16, 20, 16)
STRIPE = (slice(None), slice(2, 18), slice(15, 16))  # the top slice, outside the ellipsoid
N = 24


def _stripe_box_mm() -> list[list[float]]:
    low = AFFINE @ np.array([0, 2, 15, 1.0])
    high = AFFINE @ np.array([SHAPE[0] - 1, 17, 15, 1.0])
    corners = np.stack([low[:3], high[:3]])
    return [list(corners.min(0) - 2.0), list(corners.max(0) + 2.0)]


def _dataset(tmp_path: Path) -> tuple[int, int]:
    from backend.core.db import session_scope
    from backend.services.datasets import create_dataset, import_subject
    from backend.services.projects import create_project
    from backend.services.users import create_user
    from backend.storage import get_storage

    with session_scope() as session:
        user = create_user(session, username="r", password=PASSWORD, role="researcher")
        project = create_project(session, name="p", description="", user=user)
        dataset = create_dataset(
            session, project_id=project.id, name="d", description="", user=user
        )
        for i in range(N):
            label = i % 2
            image, _ = brain_volume(SHAPE, seed=i)
            if label:
                image[STRIPE] = 400.0
            path = write_nifti(tmp_path / f"i{i}.nii.gz", image)
            split = "train" if i < 16 else ("val" if i < 20 else "test")
            with open(path, "rb") as handle:
                import_subject(
                    session,
                    get_storage(),
                    dataset=dataset,
                    subject_key=f"sub-{i:02d}",
                    label=label,
                    split=split,
                    site="A",
                    image=(path.name, handle),
                    mask=None,
                    max_bytes=10**8,
                )
        return user.id, dataset.id


def _train_and_report(user_id: int, dataset_id: int, brain: str) -> dict:
    from backend.core.db import session_scope
    from backend.models import Job, Run, ShortcutReport, User
    from backend.services.runs import create_run
    from backend.services.shortcuts import create_report
    from worker.tasks.shortcut import run_shortcut_report
    from worker.tasks.train import run_training

    config = {
        "epochs": 4,
        "batch_size": 4,
        "grid": list(SHAPE),
        "device": "cpu",
        "seed": 0,
        "brain": brain,
        "val_attribution": False,
        "learning_rate": 0.003,
    }
    with session_scope() as session:
        user = session.get(User, user_id)
        run = create_run(session, dataset_id=dataset_id, name=brain, config=config, user=user)
        run_id, job_id = run.id, run.job_id
    run_training(job_id)
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run.status == "succeeded", session.get(Job, job_id).error
        params = {"region": {"kind": "box", "box_mm": _stripe_box_mm()}, "fill": "background"}
        report = create_report(
            session, run, split="train", params=params, user=session.get(User, user_id)
        )
        report_id, report_job = report.id, report.job_id
    run_shortcut_report(report_job)
    with session_scope() as session:
        assert session.get(Job, report_job).status == "succeeded", session.get(
            Job, report_job
        ).error
        row = session.get(ShortcutReport, report_id)
        return {"result": row.result, "flags": row.flags}


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_the_report_flags_a_stripe_shortcut_run(stack: dict, tmp_path: Path) -> None:
    user_id, dataset_id = _dataset(tmp_path)
    shortcut = _train_and_report(user_id, dataset_id, "nonzero")
    cf = shortcut["result"]["counterfactual"]
    assert cf["before"]["auroc"] >= 0.8 and cf["before"]["accuracy"] >= 0.8
    # Without the stripe every subject is called healthy: accuracy at chance (balanced split).
    assert cf["after"]["accuracy"] <= 0.6
    assert cf["after"]["auroc"] <= cf["before"]["auroc"] - 0.2
    # The pathological logits fall by units; the healthy ones (no stripe) barely move.
    assert cf["mean_logit_change_pathological"] < -1.0
    assert abs(cf["mean_logit_change_healthy"]) < 0.5
    region = [f for f in shortcut["flags"] if f["kind"] == "region"]
    assert len(region) == 1 and region[0]["reason"].startswith("erasing the box (")
    assert f"from {cf['before']['auroc']:.2f} to {cf['after']['auroc']:.2f}" in region[0]["reason"]

    masked = _train_and_report(user_id, dataset_id, "mask")
    cf = masked["result"]["counterfactual"]
    assert cf["mean_logit_change_pathological"] == pytest.approx(0.0, abs=1e-5)
    assert cf["mean_logit_change_healthy"] == pytest.approx(0.0, abs=1e-5)
    assert cf["before"] == cf["after"]
    assert "region" not in {f["kind"] for f in masked["flags"]}

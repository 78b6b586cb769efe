"""What the training task adds for runs from reviews and for watch subjects.

- ``corrected_targets``: the target maps of a run launched from reviews, by subject id.
- ``EpochMapStore``: after each epoch, the reduced attribution maps of the watch subjects from
  the weights just checkpointed (``last.pt``), as files and ``epoch_maps`` rows.
- ``store_corrected_metrics``: once a run from reviews has trained, the lesion metrics of the
  earlier run's and this run's best weights on each corrected subject, side by side.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from backend.core.db import session_scope
from backend.models import AttributionMap, CorrectedTarget, EpochMap, Run, Subject
from backend.storage import get_storage
from worker.tasks.common import Claim, owns, subject_channels

log = logging.getLogger(__name__)


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()
    }


def corrected_targets(run_id: int) -> dict[int, Path]:
    """Subject id -> the run's merged target map file (empty unless launched from reviews)."""
    storage = get_storage()
    with session_scope() as session:
        rows = session.query(CorrectedTarget).filter(CorrectedTarget.run_id == run_id).all()
        return {row.subject_id: storage.absolute(row.path) for row in rows}


def epoch_map_path(run_id: int, subject_id: int, epoch: int) -> Path:
    return get_storage().run_dir(run_id) / "epoch_maps" / str(subject_id) / f"{epoch}.nii.gz"


class EpochMapStore:
    """Stores the watch subjects' maps after every epoch (a no-op without watch subjects)."""

    def __init__(self, claim: Claim, run_id: int, config: Any, samples: list, device: str) -> None:
        from worker.ml.epoch_maps import EpochMapRecorder

        self.claim = claim
        self.run_id = run_id
        self.device = device
        self.recorder = EpochMapRecorder.for_run(config, samples) if config.watch_subjects else None

    def on_epoch(self, epoch: int, checkpoint: Path) -> None:
        from worker.ml.epoch_maps import EPOCH_MAP_METHOD

        if self.recorder is None:
            return
        storage = get_storage()
        maps = self.recorder.record_checkpoint(checkpoint, epoch, self.device)
        rows = []
        for item in maps:
            path = epoch_map_path(self.run_id, int(item.subject_id), epoch)
            path.parent.mkdir(parents=True, exist_ok=True)
            with storage.temp_file(suffix=".nii.gz") as tmp:
                item.save(tmp)
                storage.move_into_place(tmp, path)
            rows.append((item, storage.relative(path)))
        with session_scope() as session:
            if not owns(session, self.claim):
                return
            for item, relative in rows:
                # A redone epoch (resumption) replaces its maps.
                session.query(EpochMap).filter(
                    EpochMap.run_id == self.run_id,
                    EpochMap.subject_id == int(item.subject_id),
                    EpochMap.epoch == epoch,
                ).delete()
                session.add(
                    EpochMap(
                        run_id=self.run_id,
                        subject_id=int(item.subject_id),
                        epoch=epoch,
                        method=EPOCH_MAP_METHOD,
                        path=relative,
                        scale=float(item.scale),
                        shape=[int(v) for v in item.values.shape],
                        stats=_finite(dict(item.stats)),
                    )
                )


def run_model(run_id: int, device: str) -> tuple[Any, Any] | None:
    """The run's network and config (``worker.ml.imported.load_run_model``: an imported
    run's model, else best.pt, else last.pt), or None when it has none."""
    from attrivue_core.imported import IMPORT_FILE, IMPORTED_DIR
    from worker.ml.imported import load_run_model

    checkpoints = get_storage().checkpoint_dir(run_id)
    found = (
        checkpoints / IMPORTED_DIR / IMPORT_FILE,
        checkpoints / "best.pt",
        checkpoints / "last.pt",
    )
    if not any(path.is_file() for path in found):
        return None
    return load_run_model(checkpoints, device=device)


def store_corrected_metrics(claim: Claim, run_id: int, device: str) -> None:
    """Lesion metrics of the earlier and the corrected run on each corrected subject, and the
    corrected run's maps for the compare viewer; a failure here is logged, not fatal: the run
    has trained and its own results stand."""
    try:
        _store_corrected_metrics(claim, run_id, device)
    except Exception:
        log.exception("run %s: the comparison with the earlier run failed", run_id)


def _store_corrected_metrics(claim: Claim, run_id: int, device: str) -> None:
    from worker.ml.epoch_maps import load_grid_subject, subject_metrics

    storage = get_storage()
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None or run.from_reviews_of is None:
            return
        source_id = run.from_reviews_of
        rows = session.query(CorrectedTarget).filter(CorrectedTarget.run_id == run_id).all()
        subjects = []
        for row in rows:
            subject = session.get(Subject, row.subject_id)
            assert subject is not None
            mask = storage.absolute(subject.mask_path) if subject.mask_path else None
            image = storage.absolute(subject.image_path)
            more = subject_channels(storage, subject)
            subjects.append((row.id, subject.id, image, mask, more))
    if not subjects:
        return
    found: dict[str, list[dict[str, Any]]] = {}
    for side, side_run in (("before", source_id), ("after", run_id)):
        loaded = run_model(side_run, device)  # the earlier run may be an imported one
        if loaded is None:
            log.warning("run %s has no checkpoint; no %s metrics", side_run, side)
            continue
        model, config = loaded
        grid = [
            load_grid_subject(config, sid, image, mask, more)
            for _, sid, image, mask, more in subjects
        ]
        found[side] = subject_metrics(model, grid, device)
    maps = _side_by_side_maps(claim, run_id, device)
    with session_scope() as session:
        if not owns(session, claim):
            return
        for index, (row_id, *_rest) in enumerate(subjects):
            target = session.get(CorrectedTarget, row_id)
            if target is not None:
                metrics: dict[str, Any] = {
                    side: {**_finite(values[index]), "run_id": rid}
                    for side, values in found.items()
                    for rid in [source_id if side == "before" else run_id]
                }
                if target.subject_id in maps:
                    metrics["attribution_ids"] = maps[target.subject_id]
                target.metrics = metrics


def _side_by_side_maps(claim: Claim, run_id: int, device: str) -> dict[int, dict[str, int]]:
    """For each corrected subject, the corrected run's map by the method (and settings) of the
    first reviewed map of the earlier run, stored as an attribution map of the corrected run so
    that the compare viewer shows both side by side. Subject id -> {"before", "after"} ids."""
    from attrivue_core.configs import AttributionConfig
    from attrivue_core.io import save_nifti
    from backend.services.attributions import channel_map_path
    from worker.ml.attribution.captum_eval import attribute_subject

    storage = get_storage()
    loaded = run_model(run_id, device)
    if loaded is None:
        return {}
    with session_scope() as session:
        wanted = []
        for target in session.query(CorrectedTarget).filter(CorrectedTarget.run_id == run_id):
            first = next((p for p in target.provenance if p.get("attribution_id")), None)
            reviewed = session.get(AttributionMap, first["attribution_id"]) if first else None
            subject = session.get(Subject, target.subject_id)
            if reviewed is None or subject is None:
                continue
            wanted.append(
                (
                    subject.id,
                    reviewed.id,
                    reviewed.method,
                    dict(reviewed.params or {}),
                    storage.absolute(subject.image_path),
                    # The brain mask the reviewed map was computed with (worker.tasks.attribute).
                    storage.absolute(subject.brain_path) if subject.brain_path else None,
                    subject_channels(storage, subject),
                )
            )
    if not wanted:
        return {}
    model, config = loaded
    out: dict[int, dict[str, int]] = {}
    for subject_id, reviewed_id, method, params, image, brain, more in wanted:
        try:
            # The stored method name and settings are validated here, as a request's would be.
            settings = AttributionConfig.model_validate({**params, "method": method})
            result = attribute_subject(
                model, config, image, settings, device=device, brain_path=brain, channels=more
            )
        except Exception:  # a map that cannot be redone leaves the metrics in place
            log.exception("run %s: no side-by-side map for subject %s", run_id, subject_id)
            continue
        with session_scope() as session:
            if not owns(session, claim):
                return out
            side = AttributionMap(
                run_id=run_id, subject_id=subject_id, method=method, params=params, status="running"
            )
            session.add(side)
            session.flush()
            path = storage.map_path(run_id, side.id)
            path.parent.mkdir(parents=True, exist_ok=True)
            if result.channels is not None:  # a multi-modal subject: each channel's map too
                for index, channel in enumerate(result.channels):
                    save_nifti(channel_map_path(path, index), channel, result.affine)
            save_nifti(path, result.map, result.affine)
            side.path = storage.relative(path)
            side.status = "succeeded"
            side.convergence_delta = _number(result.convergence_delta)
            side.logit = _number(result.logit)
            side.stats = {k: _number(v) for k, v in result.stats.items()}
            out[subject_id] = {"before": reviewed_id, "after": side.id}
    return out


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)

"""Model selection and early stopping: which epoch's weights become ``best.pt``.

Epochs are ranked by ``selection`` on their validation metrics (the run's
``early_stopping_metric``, with a calibrated-loss tie-break and a fallback to classification
metrics, see there); ``update_best`` keeps the best one and the patience counter.
"""

from __future__ import annotations

from attrivue_core.configs import ATTRIBUTION_EARLY_STOPPING, RunConfig
from worker.ml.training.datatypes import Metrics
from worker.ml.training.loop import RunState

__all__ = [
    "ATTRIBUTION_MONITORS",
    "CLASSIFICATION_FLOOR",
    "HIGHER_IS_BETTER",
    "TIED_OFTEN",
    "TIE_BREAK",
    "UNFLOORED_DEMOTION",
    "monitor",
    "monitor_score",
    "patience_exhausted",
    "selection",
    "update_best",
]

# Metrics with few distinct values on a small validation split, and the weight of the
# calibrated validation loss that breaks their ties (small enough never to outweigh one
# subject pair of AUROC on 100 subjects).
TIED_OFTEN = frozenset({"val_auroc", "val_accuracy"})
TIE_BREAK = 1e-5
HIGHER_IS_BETTER = {
    "val_auroc": True,
    "val_accuracy": True,
    "val_loss": False,
    "val_attr_auroc": True,
    "val_lesion_mass": True,
    "val_attr_dice": True,
    "val_attr_healthy_share": False,
    "val_dice": True,
    "val_mae": False,
}
# Early stopping on an attribution metric falls back to a classification metric while the
# classifier has not learned: an epoch whose val_auroc is below this floor is scored by its
# val_auroc (then val_loss), and never beats an epoch at or above it (see ``selection``).
CLASSIFICATION_FLOOR = 0.6
# How many tiers an epoch of a floored run drops while its floors have not started.
UNFLOORED_DEMOTION = 2
ATTRIBUTION_MONITORS = ATTRIBUTION_EARLY_STOPPING


def monitor_score(name: str, metrics: Metrics) -> float | None:
    """Higher-is-better score of the early-stopping metric.

    Falls back to the validation loss when the metric is undefined (a validation set with
    one class has no AUROC), and to None without a validation set.
    """
    found = monitor(name, metrics)
    return None if found is None else found[0]


def monitor(name: str, metrics: Metrics) -> tuple[float, str] | None:
    """``(higher-is-better score, the metric it is of)``: ``name``, else ``val_loss``."""
    for key in (name, "val_loss"):
        value = metrics.get(key)
        if value is not None:
            score = value if HIGHER_IS_BETTER[key] else -value
            calibrated = metrics.get("val_loss_calibrated")
            if key in TIED_OFTEN and calibrated is not None:
                # AUROC and accuracy on a few dozen subjects tie often (many epochs at 1.0):
                # the ties go to the epoch whose calibrated validation loss is lowest.
                score -= TIE_BREAK * float(calibrated)
            return score, key
    return None


def selection(name: str, metrics: Metrics) -> tuple[int, float, str] | None:
    """How an epoch ranks for ``best.pt``: ``(tier, score, metric)``, compared by tier first.

    An attribution metric (``val_attr_auroc``, ``val_lesion_mass``, ``val_attr_dice``,
    ``val_attr_healthy_share``) says nothing while the classifier has not learned: its maps
    are then noise, and the metric's
    best epoch is arbitrary. So an epoch whose ``val_auroc`` is below ``CLASSIFICATION_FLOOR``
    is ranked in tier 0 by its ``val_auroc``, below every epoch of tier 1 (classification
    works) ranked by the attribution metric. Where ``val_auroc`` is undefined (one class in
    the validation split) the classifier cannot be judged and the epoch stays in tier 1. Other
    early-stopping metrics are always tier 1. ``None`` without a validation split.
    """
    if name in ATTRIBUTION_MONITORS:
        auroc = metrics.get("val_auroc")
        if auroc is not None and auroc < CLASSIFICATION_FLOOR:
            return 0, auroc, "val_auroc"
    found = monitor(name, metrics)
    return None if found is None else (1, *found)


def update_best(
    config: RunConfig, state: RunState, metrics: Metrics, *, metric: str | None = None
) -> bool:
    """Update best score and patience counter; return whether this epoch is the new best.

    Epochs are ranked by ``selection`` of ``metric`` (default: the run's
    ``early_stopping_metric``); the metric that ranked the best one is kept in
    ``state.best_metric``.
    """
    name = metric or config.early_stopping_metric
    found = selection(name, metrics)
    margin = config.selection_auroc_margin
    if margin is not None and name in ATTRIBUTION_MONITORS:
        found = _apply_auroc_margin(margin, state, metrics, found)
    if found is not None and metrics.get("val_evidence_floored") == 0.0:
        # A run that floors its lesion detectors every epoch, in an epoch before the floors
        # started (evidence_floor_start_auroc): any epoch with its floors ranks above it.
        found = (found[0] - UNFLOORED_DEMOTION, found[1], found[2])
    # Without a score (no validation split) the latest weights are the best we know.
    improved = (
        found is None
        or state.best_score is None
        or (found[0], found[1]) > (state.best_tier, state.best_score)
    )
    if improved:
        state.best_tier, state.best_score, state.best_metric = found or (1, None, None)
        state.best_epoch = state.epoch
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    return improved


def _apply_auroc_margin(
    margin: float, state: RunState, metrics: Metrics, found: tuple[int, float, str] | None
) -> tuple[int, float, str] | None:
    """The AUROC margin of ``RunConfig.selection_auroc_margin``, applied online.

    ``top`` is the highest ``val_auroc`` of the epochs so far (this one included, its record
    is already in ``state.history``). An epoch below ``top - margin`` drops to tier 0 and is
    scored by its ``val_auroc``, like an epoch under the classification floor; so does the
    kept best epoch once a later epoch raises ``top`` past it. Whenever ``top`` rises, the
    epoch that raised it is in tier 1, so ``best.pt`` is always inside the margin of the best
    AUROC seen. (An epoch that was inside the margin but not the best, whose weights were not
    kept, cannot come back when the best is demoted: the rule is the online form of "among
    the epochs within ``margin`` of the best validation AUROC, the best attribution metric".)
    """
    aurocs = [r["val_auroc"] for r in state.history if r.get("val_auroc") is not None]
    if not aurocs:
        return found
    floor = max(aurocs) - margin
    if state.best_tier == 1 and state.best_score is not None:
        kept = next((r for r in state.history if r.get("epoch") == state.best_epoch), None)
        kept_auroc = None if kept is None else kept.get("val_auroc")
        if kept_auroc is not None and kept_auroc < floor:
            state.best_tier, state.best_score, state.best_metric = 0, kept_auroc, "val_auroc"
    auroc = metrics.get("val_auroc")
    if found is not None and found[0] == 1 and auroc is not None and auroc < floor:
        return 0, float(auroc), "val_auroc"
    return found


def patience_exhausted(config: RunConfig, state: RunState) -> bool:
    patience = config.early_stopping_patience
    return patience is not None and state.bad_epochs >= patience

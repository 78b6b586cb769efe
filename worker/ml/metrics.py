"""Metrics of docs/method.md section 4: classification, regression, attribution against lesion masks,
faithfulness (deletion and insertion) and the parameter-randomisation sanity test.

Sign convention (docs/method.md section 1): A > 0 is pathological relevance, A < 0 healthy relevance.
Every attribution metric scores the positive part A+ = max(A, 0) as "pathological relevance" and
never takes absolute values of A: strong healthy relevance inside a lesion counts as no
pathological relevance at all, not as a hit. (Only the sanity test compares |A| as well, because
it asks whether a map changed at all, not what it says.)

Conventions shared by the attribution functions:

- Inputs are numpy arrays. Masks are binary (any non-zero voxel is inside) and have the map's
  shape. ``brain_mask``, when given, restricts every computation to its non-zero voxels.
- A metric that the data leave undefined (an empty lesion mask, a single class) is ``nan``.
- A map without any pathological relevance is not undefined: it scores as a failure (Dice 0,
  lesion mass 0, pointing-game miss), and on a healthy subject as the goal (healthy share 0).
- Thresholds are absolute values on the scale of the map, so maps compared under one threshold
  must share a scale (same method, same normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

__all__ = [
    "attribution_report",
    "best_threshold",
    "classification_metrics",
    "deletion_insertion",
    "dice_at_threshold",
    "dice_top_k",
    "healthy_pathological_share",
    "lesion_mass",
    "pointing_game",
    "positive_part",
    "randomisation_sanity",
    "regression_metrics",
    "subject_attribution_metrics",
    "voxel_auprc",
    "voxel_auroc",
]

ModelFn = Callable[[np.ndarray], float | Sequence[float] | np.ndarray]

NAN = float("nan")

# --------------------------------------------------------------------------- classification


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Binary classification metrics, pathological = positive class.

    ``threshold`` is on the scale of ``scores``: the default 0.5 assumes probabilities. Pass
    logits with ``threshold=0.0`` instead; because the sigmoid is monotone with sigmoid(0) = 0.5,
    both give the same calls and the same AUROC.

    Args:
        labels: True labels, 0 (healthy) or 1 (pathological).
        scores: Probability (or, with ``threshold=0.0``, logit) of the pathological class.
        threshold: Score at or above which a subject is called pathological.

    Returns:
        ``auroc``, ``accuracy``, ``balanced_accuracy``, ``sensitivity``, ``specificity`` and
        ``n``. AUROC and balanced accuracy are ``nan`` when only one class is present,
        sensitivity without pathological and specificity without healthy subjects.

    Raises:
        ValueError: Empty input, lengths that differ, or labels other than 0 and 1.
    """
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.size == 0 or y.size != s.size:
        raise ValueError(
            f"need as many scores as labels, and at least one (got {y.size}, {s.size})"
        )
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (healthy) or 1 (pathological)")
    predicted = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    both_classes = bool(tp + fn) and bool(tn + fp)
    return {
        "auroc": float(roc_auc_score(y, s)) if both_classes else NAN,
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)) if both_classes else NAN,
        "sensitivity": float(tp / (tp + fn)) if tp + fn else NAN,
        "specificity": float(tn / (tn + fp)) if tn + fp else NAN,
        "n": int(y.size),
    }


def regression_metrics(
    targets: Sequence[float] | np.ndarray, predictions: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """Regression metrics of docs/method.md section 4 (e.g. disability prediction).

    Args:
        targets: True values.
        predictions: Predicted values, same length.

    Returns:
        ``mae``, ``rmse``, ``pearson``, ``spearman`` and ``n``; the correlations are ``nan``
        when either side is constant or there are fewer than two subjects.

    Raises:
        ValueError: Empty input or lengths that differ.
    """
    y = np.asarray(targets, dtype=float).ravel()
    p = np.asarray(predictions, dtype=float).ravel()
    if y.size == 0 or y.size != p.size:
        raise ValueError(
            f"need as many predictions as targets, and at least one ({y.size}, {p.size})"
        )
    # scipy warns and returns nan on constant input; decide it here instead.
    correlated = y.size >= 2 and np.ptp(y) > 0 and np.ptp(p) > 0
    return {
        "mae": float(mean_absolute_error(y, p)),
        "rmse": float(root_mean_squared_error(y, p)),
        "pearson": float(pearsonr(y, p).statistic) if correlated else NAN,
        "spearman": float(spearmanr(y, p).statistic) if correlated else NAN,
        "n": int(y.size),
    }


# --------------------------------------------------------------------------- helpers


def positive_part(attribution: np.ndarray) -> np.ndarray:
    """Pathological relevance A+ = max(A, 0) as float64 (healthy relevance becomes 0)."""
    return np.maximum(np.asarray(attribution, dtype=np.float64), 0.0)


def _check_shape(reference: np.ndarray, other: np.ndarray | None, name: str) -> None:
    """Reject a mask whose shape differs from the map's: broadcasting would hide the bug."""
    if other is not None and np.shape(other) != np.shape(reference):
        raise ValueError(f"{name} has shape {np.shape(other)}, the map {np.shape(reference)}")


def _brain_voxels(attribution: np.ndarray, brain_mask: np.ndarray | None) -> np.ndarray:
    """Flat float64 values of the map inside the brain mask (all voxels without one)."""
    a = np.asarray(attribution, dtype=np.float64)
    _check_shape(a, brain_mask, "brain_mask")
    return a.ravel() if brain_mask is None else a[np.asarray(brain_mask) != 0]


def _map_and_mask(
    attribution: np.ndarray, mask: np.ndarray, brain_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Flat map values and boolean lesion mask over the voxels considered."""
    _check_shape(attribution, mask, "mask")
    values = _brain_voxels(attribution, brain_mask)
    lesion = np.asarray(mask) != 0
    lesion = lesion.ravel() if brain_mask is None else lesion[np.asarray(brain_mask) != 0]
    return values, lesion


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two flat boolean arrays by MONAI; ``nan`` when ``truth`` is empty."""

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.astype(np.float32)).reshape(1, 1, -1)

    return float(compute_dice(as_tensor(predicted), as_tensor(truth), ignore_empty=True))


def _check_threshold(threshold: float) -> None:
    if threshold < 0:
        raise ValueError(
            f"threshold must be >= 0 (got {threshold}): "
            "a negative one would count healthy relevance as pathological"
        )


def _top_k(values: np.ndarray, percent: float) -> np.ndarray:
    """Boolean selection of the top ``percent`` % of ``values``, positive ones only.

    The count is rounded to the nearest voxel, at least one. Ties are broken by position (a
    stable sort), so the selection is deterministic.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    count = max(1, math.floor(percent / 100 * values.size + 0.5))
    selected = np.zeros(values.size, dtype=bool)
    selected[np.argsort(-values, kind="stable")[:count]] = True
    # A voxel without pathological relevance is never "pathological", whatever its rank.
    return selected & (values > 0)


def _mean(values: Iterable[float]) -> float:
    """Mean of the finite values; ``nan`` when there are none (no warning, unlike nanmean)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


# --------------------------------------------------------------------------- against lesions


def dice_at_threshold(
    attribution: np.ndarray,
    mask: np.ndarray,
    threshold: float,
    *,
    brain_mask: np.ndarray | None = None,
) -> float:
    """Dice between the voxels with A > ``threshold`` and the lesion mask.

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        threshold: Absolute threshold on A, at least 0 (strict: A > threshold is selected, so
            0 selects exactly the voxels with pathological relevance).
        brain_mask: Optional mask of the voxels considered.

    Returns:
        Dice in [0, 1]; ``nan`` when the lesion mask is empty (within the brain).
    """
    _check_threshold(threshold)
    values, lesion = _map_and_mask(attribution, mask, brain_mask)
    return _dice(values > threshold, lesion)


def dice_top_k(
    attribution: np.ndarray,
    mask: np.ndarray,
    percent: float,
    *,
    brain_mask: np.ndarray | None = None,
) -> float:
    """Dice between the top ``percent`` % of voxels by pathological relevance and the lesion mask.

    The percentage is of the voxels considered (the brain mask's, when given), rounded to the
    nearest voxel and at least one; voxels with A <= 0 are dropped from the selection even when
    they rank within it.

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        percent: Percentage in (0, 100].
        brain_mask: Optional mask of the voxels considered.

    Returns:
        Dice in [0, 1]; ``nan`` when the lesion mask is empty (within the brain).
    """
    values, lesion = _map_and_mask(attribution, mask, brain_mask)
    return _dice(_top_k(values, percent), lesion)


def _dice_curve(values: np.ndarray, lesion: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Dice of ``values > t`` against ``lesion`` for every ``t``, from sorted counts.

    Equal to ``dice_at_threshold`` at each threshold (tested); counting on sorted values costs
    one sort per map instead of one full pass per candidate threshold.
    """
    n_lesion = int(lesion.sum())
    if n_lesion == 0:
        return np.full(thresholds.size, np.nan)
    all_sorted = np.sort(values)
    lesion_sorted = np.sort(values[lesion])
    n_predicted = values.size - np.searchsorted(all_sorted, thresholds, side="right")
    n_hit = lesion_sorted.size - np.searchsorted(lesion_sorted, thresholds, side="right")
    return 2.0 * n_hit / (n_predicted + n_lesion)


def _quantile_candidates(values: Sequence[np.ndarray], n_candidates: int) -> np.ndarray:
    """0 and the quantiles 0, 1/n, ..., (n-1)/n of the pooled positive relevance."""
    positive = np.concatenate([v[v > 0] for v in values])
    if positive.size == 0:
        return np.zeros(1)
    levels = np.linspace(0.0, 1.0, n_candidates, endpoint=False)
    return np.concatenate([[0.0], np.quantile(positive, levels)])


def best_threshold(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    candidates: Sequence[float] | np.ndarray | None = None,
    *,
    brain_masks: Sequence[np.ndarray | None] | None = None,
    n_candidates: int = 100,
) -> float:
    """The threshold for ``dice_at_threshold`` that maximises the mean Dice over subjects.

    Choose it on validation maps and apply it unchanged to the test maps.

    Args:
        maps: Signed attribution maps of pathological subjects.
        masks: Their lesion masks; subjects with an empty mask are left out of the mean.
        candidates: Thresholds to try (each >= 0). By default 0 and ``n_candidates`` quantiles
            (levels 0, 1/n, ..., (n-1)/n) of the positive relevance pooled over all maps.
        brain_masks: Optional brain mask per subject.
        n_candidates: Number of quantile candidates when ``candidates`` is ``None``.

    Returns:
        The best candidate; on ties the lowest one.

    Raises:
        ValueError: Lengths that differ, a negative candidate, or no subject with a lesion.
    """
    if len(maps) != len(masks) or (brain_masks is not None and len(brain_masks) != len(maps)):
        raise ValueError("maps, masks and brain_masks must have the same length")
    brains = brain_masks if brain_masks is not None else [None] * len(maps)
    pairs = [_map_and_mask(a, m, b) for a, m, b in zip(maps, masks, brains, strict=True)]
    if candidates is None:
        candidates = _quantile_candidates([values for values, _ in pairs], n_candidates)
    thresholds = np.unique(np.asarray(candidates, dtype=np.float64))
    if thresholds.size == 0:
        raise ValueError("no candidate thresholds")
    _check_threshold(float(thresholds.min()))
    curves = np.array([_dice_curve(v, les, thresholds) for v, les in pairs]).reshape(
        len(pairs), thresholds.size
    )
    with_lesion = ~np.isnan(curves).all(axis=1)
    if not with_lesion.any():
        raise ValueError("no subject has a non-empty lesion mask")
    return float(thresholds[np.argmax(curves[with_lesion].mean(axis=0))])


def voxel_auroc(
    attribution: np.ndarray, mask: np.ndarray, *, brain_mask: np.ndarray | None = None
) -> float:
    """Voxel-wise AUROC of the pathological relevance A+ as a score for lesion membership.

    Healthy relevance ties with zero relevance (both score 0), so a map that marks lesions
    with strongly negative values is not rewarded.

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        brain_mask: Optional mask of the voxels considered.

    Returns:
        AUROC in [0, 1]; ``nan`` when the mask is empty or covers every voxel considered.
    """
    values, lesion = _map_and_mask(attribution, mask, brain_mask)
    if lesion.all() or not lesion.any():
        return NAN
    return float(roc_auc_score(lesion, positive_part(values)))


def voxel_auprc(
    attribution: np.ndarray, mask: np.ndarray, *, brain_mask: np.ndarray | None = None
) -> float:
    """Voxel-wise average precision (area under the precision-recall curve) of A+.

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        brain_mask: Optional mask of the voxels considered.

    Returns:
        Average precision in [0, 1] (chance level: the lesion fraction); ``nan`` when the mask
        is empty.
    """
    values, lesion = _map_and_mask(attribution, mask, brain_mask)
    if not lesion.any():
        return NAN
    return float(average_precision_score(lesion, positive_part(values)))


def lesion_mass(
    attribution: np.ndarray, mask: np.ndarray, *, brain_mask: np.ndarray | None = None
) -> float:
    """Share of the pathological relevance that lies inside the lesion mask.

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        brain_mask: Optional mask of the voxels considered.

    Returns:
        sum(A+ in mask) / sum(A+), in [0, 1]. A map with no positive mass returns 0.0, not
        ``nan``: it put no pathological relevance on the lesion, and a mean over subjects must
        count that as a failure rather than drop the subject.
    """
    values, lesion = _map_and_mask(attribution, mask, brain_mask)
    positive = positive_part(values)
    total = positive.sum()
    return float(positive[lesion].sum() / total) if total > 0 else 0.0


def pointing_game(
    attribution: np.ndarray,
    mask: np.ndarray,
    *,
    tolerance: float = 0.0,
    brain_mask: np.ndarray | None = None,
) -> bool:
    """Whether the maximum of A lies in a lesion (within ``tolerance`` voxels of one).

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        tolerance: Euclidean distance in voxels from the maximum to the nearest lesion voxel
            that still counts as a hit (the same as dilating the lesion by a ball of this
            radius); 0 asks for the maximum itself to be in the lesion.
        brain_mask: Optional mask; the maximum is taken over its voxels only.

    Returns:
        ``True`` on a hit. A miss when the maximum is not positive (no pathological relevance
        to point with; ties are broken by the first voxel in C order) or the mask is empty.
    """
    a = np.asarray(attribution, dtype=np.float64)
    _check_shape(a, mask, "mask")
    _check_shape(a, brain_mask, "brain_mask")
    if brain_mask is not None:
        a = np.where(np.asarray(brain_mask) != 0, a, -np.inf)
    peak = np.unravel_index(int(np.argmax(a)), a.shape)
    lesion = np.argwhere(np.asarray(mask) != 0)
    if a[peak] <= 0 or lesion.size == 0:
        return False
    distance = np.sqrt(((lesion - np.array(peak)) ** 2).sum(axis=1)).min()
    return bool(distance <= tolerance)


def healthy_pathological_share(
    attribution: np.ndarray, brain_mask: np.ndarray | None = None
) -> float:
    """Share of pathological relevance on a healthy subject: sum(A+) / sum(|A|).

    The attribution constraint should drive it toward 0 (docs/method.md section 3).

    Args:
        attribution: Signed attribution map of a healthy subject.
        brain_mask: Optional mask of the voxels considered.

    Returns:
        A value in [0, 1]; 0.0 for a map that is zero everywhere (no pathological relevance).
    """
    values = _brain_voxels(attribution, brain_mask)
    total = np.abs(values).sum()
    return float(positive_part(values).sum() / total) if total > 0 else 0.0


# --------------------------------------------------------------------------- faithfulness


def _evaluate(
    model_fn: ModelFn, images: Iterator[np.ndarray], batch_size: int | None
) -> np.ndarray:
    """Scores of ``images``: one call per image, or per stack of ``batch_size`` images."""
    if batch_size is None:
        return np.array([np.asarray(model_fn(image), dtype=np.float64).item() for image in images])
    scores: list[float] = []
    batch: list[np.ndarray] = []
    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            scores.extend(_evaluate_batch(model_fn, batch))
            batch = []
    if batch:
        scores.extend(_evaluate_batch(model_fn, batch))
    return np.array(scores)


def _evaluate_batch(model_fn: ModelFn, batch: list[np.ndarray]) -> list[float]:
    out = np.asarray(model_fn(np.stack(batch)), dtype=np.float64).ravel()
    if out.size != len(batch):
        raise ValueError(f"model_fn returned {out.size} scores for a batch of {len(batch)}")
    return out.tolist()


def _perturbed(
    start: np.ndarray, source: np.ndarray, order: np.ndarray, counts: np.ndarray
) -> Iterator[np.ndarray]:
    """Copies of ``start`` with the first ``count`` voxels of ``order`` taken from ``source``.

    Built incrementally, one image alive at a time plus what the caller keeps.
    """
    current = start.copy()
    done = 0
    for count in counts:
        chunk = order[done:count]
        current.flat[chunk] = source.flat[chunk]
        done = count
        yield current.copy()


def deletion_insertion(
    model_fn: ModelFn,
    image: np.ndarray,
    attribution: np.ndarray,
    *,
    steps: int = 20,
    baseline: float | np.ndarray = 0.0,
    brain_mask: np.ndarray | None = None,
    batch_size: int | None = None,
) -> dict[str, np.ndarray | float]:
    """Deletion and insertion curves of the pathological logit (Petsiuk et al., RISE 2018).

    Voxels are ordered by signed A, most pathological first (so the most healthy come last).
    Deletion replaces the first fraction f of them by the baseline, starting from the image;
    insertion copies them from the image into the baseline, starting from the baseline. A
    faithful map makes the deletion curve fall fast (low area) and the insertion curve rise fast
    (high area).

    Args:
        model_fn: Pathological logit of one image of ``image``'s shape. With ``batch_size``
            it receives a stack ``(B, *image.shape)`` and returns ``B`` logits instead. Wrap a
            torch model yourself; this module needs no model code.
        image: The input, of the attribution's shape (docs/method.md section 1).
        attribution: Signed attribution map.
        steps: Number of equal steps from 0 to all voxels; the curves have ``steps + 1`` points.
        baseline: What a removed voxel becomes: a scalar or an array of ``image``'s shape (e.g.
            a blurred image).
        brain_mask: Optional mask; only its voxels are removed or inserted (the others keep
            the image's values in both curves) and the fractions are of its voxel count.
        batch_size: Images per ``model_fn`` call; ``None`` calls it once per image.

    Returns:
        ``fractions`` (the exact fraction of voxels changed at each point), ``deletion`` and
        ``insertion`` (logits), and ``deletion_auc`` and ``insertion_auc`` (trapezoid areas
        over the fractions, in logit units since the fraction axis spans 1).
    """
    x = np.asarray(image)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    _check_shape(x, attribution, "attribution")
    reference = np.broadcast_to(np.asarray(baseline, dtype=x.dtype), x.shape)
    candidates = np.arange(x.size)
    if brain_mask is not None:
        _check_shape(x, brain_mask, "brain_mask")
        candidates = np.flatnonzero(np.asarray(brain_mask))
    values = np.asarray(attribution, dtype=np.float64).ravel()[candidates]
    order = candidates[np.argsort(-values, kind="stable")]
    # Insertion starts where deletion ends: voxels outside the brain mask keep the image's
    # values throughout, so both curves end at the other's start.
    emptied = x.copy()
    emptied.flat[order] = reference.flat[order]
    counts = np.round(np.linspace(0, order.size, steps + 1)).astype(int)
    fractions = counts / max(order.size, 1)
    deletion = _evaluate(model_fn, _perturbed(x, emptied, order, counts), batch_size)
    insertion = _evaluate(model_fn, _perturbed(emptied, x, order, counts), batch_size)
    return {
        "fractions": fractions,
        "deletion": deletion,
        "insertion": insertion,
        "deletion_auc": float(np.trapezoid(deletion, fractions)),
        "insertion_auc": float(np.trapezoid(insertion, fractions)),
    }


# --------------------------------------------------------------------------- sanity


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; ``nan`` when either side is constant (scipy would warn)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return NAN
    return float(spearmanr(a, b).statistic)


def randomisation_sanity(
    map_trained: np.ndarray,
    map_random: np.ndarray,
    *,
    threshold: float = 0.5,
    brain_mask: np.ndarray | None = None,
) -> dict[str, float | bool]:
    """Model-parameter randomisation test (Adebayo et al., NeurIPS 2018).

    The caller produces ``map_random`` by attributing the same input with the same method on
    a copy of the model whose weights were re-initialised. A method whose maps survive that
    unchanged explains the input, not the model.

    Args:
        map_trained: Signed map of the trained model.
        map_random: Signed map of the randomised model, same shape.
        threshold: ``changed`` is true when the Spearman rho of |A| is below it.
        brain_mask: Optional mask of the voxels compared.

    Returns:
        ``spearman_signed`` and ``spearman_abs`` (rho of the signed maps and of |A|; |A| is
        the published test's variant and is insensitive to a sign flip), and ``changed``. A
        constant map has no ranking (rho ``nan``) and counts as changed unless both maps are
        identical.
    """
    _check_shape(map_trained, map_random, "map_random")
    a = _brain_voxels(map_trained, brain_mask)
    b = _brain_voxels(map_random, brain_mask)
    rho_abs = _spearman(np.abs(a), np.abs(b))
    changed = not np.array_equal(a, b) and not rho_abs >= threshold
    return {
        "spearman_signed": _spearman(a, b),
        "spearman_abs": rho_abs,
        "changed": bool(changed),
    }


# --------------------------------------------------------------------------- aggregates


def subject_attribution_metrics(
    attribution: np.ndarray,
    mask: np.ndarray,
    *,
    threshold: float,
    top_k_percent: float = 5.0,
    brain_mask: np.ndarray | None = None,
    pointing_tolerance: float = 0.0,
) -> dict[str, float]:
    """All lesion metrics of one pathological subject.

    Args:
        attribution: Signed attribution map.
        mask: Binary lesion mask, same shape.
        threshold: Threshold of ``dice_at_threshold`` (e.g. from ``best_threshold``).
        top_k_percent: Percentage of ``dice_top_k``.
        brain_mask: Optional mask of the voxels considered.
        pointing_tolerance: Tolerance of ``pointing_game`` in voxels.

    Returns:
        ``dice_at_threshold``, ``dice_top_k``, ``voxel_auroc``, ``voxel_auprc``,
        ``lesion_mass`` and ``pointing_game`` (1.0 hit, 0.0 miss).
    """
    brain = {"brain_mask": brain_mask}
    return {
        "dice_at_threshold": dice_at_threshold(attribution, mask, threshold, **brain),
        "dice_top_k": dice_top_k(attribution, mask, top_k_percent, **brain),
        "voxel_auroc": voxel_auroc(attribution, mask, **brain),
        "voxel_auprc": voxel_auprc(attribution, mask, **brain),
        "lesion_mass": lesion_mass(attribution, mask, **brain),
        "pointing_game": float(
            pointing_game(attribution, mask, tolerance=pointing_tolerance, **brain)
        ),
    }


_LESION_KEYS = (
    "dice_at_threshold",
    "dice_top_k",
    "voxel_auroc",
    "voxel_auprc",
    "lesion_mass",
    "pointing_game",
)


def attribution_report(
    maps: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None],
    labels: Sequence[int] | np.ndarray,
    *,
    threshold: float,
    top_k_percent: float = 5.0,
    brain_masks: Sequence[np.ndarray | None] | None = None,
    pointing_tolerance: float = 0.0,
) -> dict[str, float]:
    """Attribution metrics aggregated over subjects (docs/method.md section 4).

    Lesion metrics are averaged over pathological subjects (label 1) whose lesion mask is
    non-empty; a pathological subject without one is counted in ``n_pathological_skipped``.
    The healthy share is averaged over healthy subjects (label 0), whose masks are ignored.

    Args:
        maps: Signed attribution map per subject.
        masks: Lesion mask per subject (``None`` allowed for healthy subjects).
        labels: 0 (healthy) or 1 (pathological) per subject.
        threshold: Threshold of ``dice_at_threshold``, chosen on validation maps.
        top_k_percent: Percentage of ``dice_top_k``.
        brain_masks: Optional brain mask per subject.
        pointing_tolerance: Tolerance of ``pointing_game`` in voxels.

    Returns:
        The mean of each key of ``subject_attribution_metrics`` (``pointing_game`` is then the
        hit rate; a subject's ``nan`` is left out of its mean), ``healthy_share``,
        ``n_pathological``, ``n_pathological_skipped``, ``n_healthy``, ``threshold`` and
        ``top_k_percent``. A mean over no subjects is ``nan``.
    """
    y = np.asarray(labels).astype(int).ravel()
    brains = list(brain_masks) if brain_masks is not None else [None] * len(maps)
    if not len(maps) == len(masks) == y.size == len(brains):
        raise ValueError("maps, masks, labels and brain_masks must have the same length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (healthy) or 1 (pathological)")
    per_subject: list[dict[str, float]] = []
    shares: list[float] = []
    skipped = 0
    for attribution, mask, label, brain in zip(maps, masks, y, brains, strict=True):
        if label == 0:
            shares.append(healthy_pathological_share(attribution, brain))
        elif mask is None or not np.any(mask):
            skipped += 1
        else:
            per_subject.append(
                subject_attribution_metrics(
                    attribution,
                    mask,
                    threshold=threshold,
                    top_k_percent=top_k_percent,
                    brain_mask=brain,
                    pointing_tolerance=pointing_tolerance,
                )
            )
    means = {key: _mean(s[key] for s in per_subject) for key in _LESION_KEYS}
    return {
        **means,
        "healthy_share": _mean(shares),
        "n_pathological": len(per_subject),
        "n_pathological_skipped": skipped,
        "n_healthy": len(shares),
        "threshold": float(threshold),
        "top_k_percent": float(top_k_percent),
    }

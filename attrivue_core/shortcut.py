"""The shortcut report's torch-free parts: regions of a volume, relevance shares and the flags.

A run "may rely on a shortcut" when a site or a region explains its decision. The report's
flags (``shortcut_flags``) say so, each with its reason and numbers, under these thresholds:

- ``region``: erasing the region drops the split's AUROC, or its accuracy, from at least
  ``REGION_AUROC_BEFORE`` (0.8) to at most ``REGION_AUROC_AFTER`` (0.6). The accuracy counts
  too because a model that needs the region for "pathological" may call every erased image
  healthy (accuracy at chance) while small differences the erasing leaves behind still rank
  the subjects above chance.
- ``site``: one site's AUROC lies at least ``SITE_AUROC_GAP`` (0.3) from the AUROC of the
  split's other sites pooled (sites where both labels occur).
- ``outside_brain``: on average at least ``OUTSIDE_BRAIN_SHARE`` (0.5) of the maps' positive
  (pathological) relevance, or of their |relevance|, lies outside the brain mask.

numpy and nibabel only, so that the backend, the worker and the tests share one definition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from nibabel.affines import apply_affine

__all__ = [
    "OUTSIDE_BRAIN_SHARE",
    "REGION_AUROC_AFTER",
    "REGION_AUROC_BEFORE",
    "SITE_AUROC_GAP",
    "box_region",
    "outside_brain_shares",
    "shortcut_flags",
    "top_relevance_region",
]

REGION_AUROC_BEFORE = 0.8
REGION_AUROC_AFTER = 0.6
SITE_AUROC_GAP = 0.3
OUTSIDE_BRAIN_SHARE = 0.5


def box_region(
    shape: Sequence[int], affine: np.ndarray, box_mm: Sequence[Sequence[float]]
) -> np.ndarray:
    """The voxels whose centres lie in an axis-aligned box in scanner coordinates (mm).

    Args:
        shape: The volume's spatial shape.
        affine: Its 4x4 voxel-to-scanner affine.
        box_mm: Two opposite corners ``[[x0, y0, z0], [x1, y1, z1]]`` (any order).

    Returns:
        Boolean array of ``shape``; True inside the box (edges included).
    """
    corners = np.asarray(box_mm, dtype=np.float64)
    low, high = corners.min(axis=0), corners.max(axis=0)
    indices = np.indices(tuple(int(s) for s in shape[:3]), dtype=np.float64)
    world = apply_affine(np.asarray(affine, dtype=np.float64), np.moveaxis(indices, 0, -1))
    return np.all((world >= low) & (world <= high), axis=-1)


def top_relevance_region(attribution: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` of voxels with the largest |relevance| (at least one voxel; none of a
    map that is zero everywhere)."""
    magnitude = np.abs(np.asarray(attribution, dtype=np.float64))
    n = max(1, int(round(fraction * magnitude.size)))
    region = np.zeros(magnitude.shape, dtype=bool)
    if not np.any(magnitude > 0):
        return region
    order = np.argpartition(magnitude.ravel(), magnitude.size - n)[magnitude.size - n :]
    region.ravel()[order] = True
    return region & (magnitude > 0)


def outside_brain_shares(attribution: np.ndarray, brain: np.ndarray) -> dict[str, float | None]:
    """Shares of a map's relevance outside the brain mask.

    Returns:
        ``abs``: sum of |A| outside / sum of |A|; ``positive``: the same for the positive
        (pathological) part; ``volume``: the share of voxels outside (what an evenly spread map
        would put there). A share is None when its total is zero.
    """
    a = np.asarray(attribution, dtype=np.float64)
    outside = ~np.asarray(brain, dtype=bool)
    magnitude, positive = np.abs(a), np.maximum(a, 0.0)

    def share(values: np.ndarray) -> float | None:
        total = float(values.sum())
        return float(values[outside].sum() / total) if total > 0 else None

    return {
        "abs": share(magnitude),
        "positive": share(positive),
        "volume": float(outside.mean()),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def shortcut_flags(
    *,
    site_metrics: Sequence[Mapping[str, Any]],
    counterfactual: Mapping[str, Any] | None,
    outside_brain: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """The flags a report raises, each ``{"kind", "reason", ...its numbers}``.

    Args:
        site_metrics: Entries of ``backend.services.predictions.site_metrics`` for one split
            (``site`` None: all sites together); ``pooled_without`` is read when present: the
            AUROC of the other sites pooled, keyed by site.
        counterfactual: ``{"before": {"auroc", "accuracy"}, "after": {"auroc", "accuracy"},
            "mean_logit_change", "region"}``, or None when not computed.
        outside_brain: ``{"mean_abs_share", "mean_positive_share"}``, or None without maps.
    """
    flags: list[dict[str, Any]] = []
    if counterfactual is not None:
        before = counterfactual.get("before", {})
        after = counterfactual.get("after", {})

        def dropped(key: str) -> bool:
            b, a = before.get(key), after.get(key)
            return (
                b is not None
                and a is not None
                and b >= REGION_AUROC_BEFORE
                and a <= REGION_AUROC_AFTER
            )

        if dropped("auroc") or dropped("accuracy"):
            flags.append(
                {
                    "kind": "region",
                    "reason": (
                        f"erasing the {counterfactual.get('region', 'region')} drops the AUROC "
                        f"from {_fmt(before.get('auroc'))} to {_fmt(after.get('auroc'))} and the "
                        f"accuracy from {_pct(before.get('accuracy'))} to "
                        f"{_pct(after.get('accuracy'))} (mean logit change "
                        f"{counterfactual.get('mean_logit_change', 0.0):+.2f})"
                    ),
                    "auroc_before": before.get("auroc"),
                    "auroc_after": after.get("auroc"),
                    "accuracy_before": before.get("accuracy"),
                    "accuracy_after": after.get("accuracy"),
                    "mean_logit_change": counterfactual.get("mean_logit_change"),
                }
            )
    for entry in site_metrics:
        site, auroc = entry.get("site"), entry.get("auroc")
        others = entry.get("others_auroc")
        if site is None or auroc is None or others is None:
            continue
        if abs(auroc - others) >= SITE_AUROC_GAP:
            flags.append(
                {
                    "kind": "site",
                    "reason": (
                        f"site {site or '(none)'} has AUROC {_fmt(auroc)}, the other sites "
                        f"together {_fmt(others)}"
                    ),
                    "site": site,
                    "auroc": auroc,
                    "others_auroc": others,
                }
            )
    if outside_brain is not None:
        shares = {
            "positive": outside_brain.get("mean_positive_share"),
            "|relevance|": outside_brain.get("mean_abs_share"),
        }
        high = {k: v for k, v in shares.items() if v is not None and v >= OUTSIDE_BRAIN_SHARE}
        if high:
            flags.append(
                {
                    "kind": "outside_brain",
                    "reason": "; ".join(
                        f"{100 * v:.0f}% of the {k} relevance lies outside the brain"
                        for k, v in high.items()
                    ),
                    "mean_positive_share": shares["positive"],
                    "mean_abs_share": shares["|relevance|"],
                }
            )
    return flags

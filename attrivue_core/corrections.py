"""Clinicians' drawn corrections merged into the target maps of the attribution constraint.

A correction (``backend.services.reviews``) is a uint8 volume on the subject's native grid:
0 = no statement, 1 = missed lesion, 2 = spurious pathological relevance. Merged into a
target map t of docs/method.md section 3, a missed lesion sets t = 1 (the voxel must carry
pathological relevance), spurious relevance sets t = 0 (it must carry healthy relevance), and
every other voxel keeps the run's own target (the lesion mask of a pathological subject in the
supervised mode, 0 on a healthy subject, unconstrained = NaN where the mode has no target).

Precedence (``Policy``):

- Within one reviewer, a later review replaces their earlier statement on the voxels it
  marks (a reviewer who looks again refines their own answer). Statements on other voxels
  stay: marks on different maps of the same subject add up.
- Between reviewers, the default ``"abstain"`` constrains a voxel only where the reviewers who
  marked it agree; where one says "missed lesion" and another "spurious relevance" the voxel
  becomes unconstrained (NaN). A contested voxel has no reliable target; forcing it to 1 would
  teach lesion relevance on what a clinician called an artefact, forcing it to 0 would
  suppress what a clinician called a lesion, and "latest wins" would let the order of reviews,
  not the evidence, decide. ``"missed_wins"`` resolves conflicts toward the lesion (for a
  team that fears missed lesions more than spurious relevance); ``"latest"`` lets the most
  recent review win on every voxel.

The stored target file is uint8: 0, 1, and ``UNCONSTRAINED`` (255) for NaN. Only numpy and
nibabel here: the backend writes the files, the trainer reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from attrivue_core.io import load_image

__all__ = [
    "MISSED",
    "NONE",
    "POLICIES",
    "SPURIOUS",
    "UNCONSTRAINED",
    "Correction",
    "MergedTarget",
    "Policy",
    "base_target",
    "decode_target",
    "encode_target",
    "load_target",
    "merge_corrections",
    "save_target",
    "target_mode",
]

NONE, MISSED, SPURIOUS = 0, 1, 2
UNCONSTRAINED = 255
Policy = Literal["abstain", "missed_wins", "latest"]
POLICIES: tuple[str, ...] = ("abstain", "missed_wins", "latest")

# The same mapping as worker.ml.losses.target_mode_for, without importing torch (a test keeps
# them equal).
_TARGET_MODES = {
    "lc_only": None,
    "la_only": "supervised",
    "lc_la_supervised": "supervised",
    "lc_la_unsupervised": "weakly_supervised",
}


def target_mode(loss_setting: str) -> str | None:
    """``"supervised"``, ``"weakly_supervised"`` or ``None`` (no L_A) for a loss setting."""
    if loss_setting not in _TARGET_MODES:
        raise ValueError(f"unknown loss setting {loss_setting!r}")
    return _TARGET_MODES[loss_setting]


@dataclass(frozen=True)
class Correction:
    """One review's drawn correction, with who and what it came from.

    Attributes:
        labels: uint8 labels on the subject's grid (0 none, 1 missed lesion, 2 spurious).
        review_id: The review.
        reviewer_id: Its author.
        reviewer: The author's user name.
        attribution_id: The map that was reviewed.
        method: That map's attribution method.
        created_at: ISO time of the review; with ``review_id``, the order of reviews.
    """

    labels: np.ndarray
    review_id: int
    reviewer_id: int
    reviewer: str = ""
    attribution_id: int | None = None
    method: str = ""
    created_at: str = ""

    def order(self) -> tuple[str, int]:
        return (self.created_at, self.review_id)


@dataclass
class MergedTarget:
    """A subject's target map after the corrections, and where each change came from.

    Attributes:
        target: float32 map of 0, 1 and NaN (unconstrained).
        provenance: One dict per review that was merged (in review order): ``review_id``,
            ``reviewer_id``, ``reviewer``, ``attribution_id``, ``method``, ``created_at``,
            ``missed_voxels`` and ``spurious_voxels`` (as drawn), ``decided_voxels`` (voxels
            whose final target this review's statement set; 0 when it was superseded or
            contested everywhere).
        stats: ``policy``, ``lesion_voxels`` (voxels set to 1 by corrections),
            ``healthy_voxels`` (set to 0), ``contested_voxels`` (made unconstrained by a
            disagreement, ``abstain`` only), ``changed_voxels`` (target differs from the
            base), ``reviewers``, ``reviews``.
    """

    target: np.ndarray
    provenance: list[dict[str, Any]]
    stats: dict[str, Any]


def base_target(label: int, mask: np.ndarray | None, mode: str, shape: Sequence[int]) -> np.ndarray:
    """The run's own target of one subject, as ``worker.ml.losses.target_map`` builds it
    (before the brain restriction, which training applies on the working grid).

    Args:
        label: 0 healthy, 1 pathological.
        mask: Lesion mask (binarised at 0.5) or ``None``.
        mode: ``"supervised"`` or ``"weakly_supervised"``.
        shape: The subject's grid.

    Returns:
        float32 map of 0, 1 and NaN.
    """
    shape = tuple(int(s) for s in shape)
    if label == 0:
        return np.zeros(shape, np.float32)
    if mode == "supervised" and mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:3] != shape:
            raise ValueError(f"mask shape {mask.shape} != subject grid {shape}")
        m = mask.reshape(shape).astype(np.float32)
        return np.where(np.isnan(m), np.nan, (m > 0.5).astype(np.float32)).astype(np.float32)
    if mode not in ("supervised", "weakly_supervised"):
        raise ValueError(f"unknown target mode {mode!r}")
    return np.full(shape, np.nan, np.float32)


def _reviewer_statements(
    corrections: Sequence[Correction], shape: tuple[int, ...]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per reviewer: their label per voxel (later reviews overwrite the voxels they mark) and
    the index (into ``corrections``) of the review that made it, -1 where none."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    order = sorted(range(len(corrections)), key=lambda i: corrections[i].order())
    for index in order:
        c = corrections[index]
        labels, owner = out.setdefault(
            c.reviewer_id, (np.zeros(shape, np.uint8), np.full(shape, -1, np.int32))
        )
        marked = c.labels != NONE
        labels[marked] = c.labels[marked]
        owner[marked] = index
    return out


def merge_corrections(
    base: np.ndarray, corrections: Sequence[Correction], *, policy: Policy = "abstain"
) -> MergedTarget:
    """Merge the corrections of one subject into its base target (see the module docstring).

    Args:
        base: The run's own target (``base_target``): float32 0, 1, NaN.
        corrections: The reviews' corrections of this subject, on the same grid, any order.
        policy: ``"abstain"``, ``"missed_wins"`` or ``"latest"``.

    Returns:
        The merged target with provenance.

    Raises:
        ValueError: Unknown policy, a grid mismatch, or labels other than 0, 1, 2.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown precedence policy {policy!r}; use one of {list(POLICIES)}")
    base = np.asarray(base, np.float32)
    shape = base.shape
    for c in corrections:
        if c.labels.shape != shape:
            raise ValueError(
                f"review {c.review_id}: correction grid {c.labels.shape} != target grid {shape}"
            )
        found = set(np.unique(c.labels).tolist()) - {NONE, MISSED, SPURIOUS}
        if found:
            raise ValueError(f"review {c.review_id}: unknown correction labels {sorted(found)}")
    corrections = list(corrections)

    decision = np.zeros(shape, np.uint8)  # the label that sets the voxel (0: none)
    decider = np.full(shape, -1, np.int32)  # index of the review whose statement it is
    contested = np.zeros(shape, bool)
    if policy == "latest":
        for index in sorted(range(len(corrections)), key=lambda i: corrections[i].order()):
            marked = corrections[index].labels != NONE
            decision[marked] = corrections[index].labels[marked]
            decider[marked] = index
    else:
        statements = _reviewer_statements(corrections, shape)
        says_missed = np.zeros(shape, bool)
        says_spurious = np.zeros(shape, bool)
        for labels, _ in statements.values():
            says_missed |= labels == MISSED
            says_spurious |= labels == SPURIOUS
        contested = says_missed & says_spurious
        decision[says_missed] = MISSED
        decision[says_spurious & ~says_missed] = SPURIOUS
        if policy == "abstain":
            decision[contested] = NONE
        else:  # missed_wins
            contested = np.zeros(shape, bool)
        # Every reviewer whose statement equals the decision shares it; the latest such
        # review is credited.
        for labels, owner in statements.values():
            agrees = (labels == decision) & (decision != NONE)
            later = agrees & ((decider < 0) | _later(owner, decider, corrections))
            decider[later] = owner[later]

    target = base.copy()
    target[decision == MISSED] = 1.0
    target[decision == SPURIOUS] = 0.0
    target[contested] = np.nan

    provenance = []
    for index in sorted(range(len(corrections)), key=lambda i: corrections[i].order()):
        c = corrections[index]
        provenance.append(
            {
                "review_id": c.review_id,
                "reviewer_id": c.reviewer_id,
                "reviewer": c.reviewer,
                "attribution_id": c.attribution_id,
                "method": c.method,
                "created_at": c.created_at,
                "missed_voxels": int((c.labels == MISSED).sum()),
                "spurious_voxels": int((c.labels == SPURIOUS).sum()),
                "decided_voxels": int((decider == index).sum()),
            }
        )
    same = (target == base) | (np.isnan(target) & np.isnan(base))
    stats = {
        "policy": policy,
        "lesion_voxels": int((decision == MISSED).sum()),
        "healthy_voxels": int((decision == SPURIOUS).sum()),
        "contested_voxels": int(contested.sum()),
        "changed_voxels": int((~same).sum()),
        "reviewers": len({c.reviewer_id for c in corrections}),
        "reviews": len(corrections),
    }
    return MergedTarget(target=target, provenance=provenance, stats=stats)


def _later(owner: np.ndarray, decider: np.ndarray, corrections: Sequence[Correction]) -> np.ndarray:
    """Per voxel: whether review ``owner`` is later than review ``decider`` (both >= 0)."""
    if not corrections:
        return np.zeros(owner.shape, bool)
    rank = np.empty(len(corrections) + 1, np.int64)
    order = sorted(range(len(corrections)), key=lambda i: corrections[i].order())
    for position, index in enumerate(order):
        rank[index] = position
    rank[-1] = -1  # index -1: no review
    return rank[owner] > rank[decider]


def encode_target(target: np.ndarray) -> np.ndarray:
    """float 0/1/NaN -> uint8 0/1/255 (the stored form)."""
    t = np.asarray(target, np.float32)
    out = np.where(np.isnan(t), UNCONSTRAINED, (t > 0.5).astype(np.uint8))
    return out.astype(np.uint8)


def decode_target(stored: np.ndarray) -> np.ndarray:
    """uint8 0/1/255 (or floats of those values) -> float32 0/1/NaN."""
    s = np.asarray(stored, np.float32)
    return np.where(s > 127.5, np.nan, (s > 0.5).astype(np.float32)).astype(np.float32)


def save_target(target: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write a target map as uint8 NIfTI (0, 1, 255 = unconstrained) with the given affine."""
    image = nib.Nifti1Image(encode_target(target), np.asarray(affine, float))
    image.header.set_data_dtype(np.uint8)
    image.header["descrip"] = b"attrivue target 0/1, 255=unconstrained"
    nib.save(image, str(path))
    return Path(path)


def load_target(path: Path) -> np.ndarray:
    """Read a stored target map as float32 0/1/NaN."""
    return decode_target(np.asarray(load_image(path).dataobj))

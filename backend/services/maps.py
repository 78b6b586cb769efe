"""Derived products of a stored attribution map: the int8 display map and its statistics.

numpy and nibabel only: the backend never imports torch, and ``worker.ml.metrics`` does (for
MONAI's Dice). The lesion metrics here follow its definitions exactly (sign-aware: only the
positive part A+ = max(A, 0) counts as pathological relevance); tests compare the two.

The statistics are computed inside the subject's brain mask (``worker.ml.metrics``'s
``brain_mask`` semantics): on a scan whose background is not zero, "all voxels" would count
the background as brain. Both products are cached next to the full map and rebuilt when the
map (or a mask the statistics read) is newer than them.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from attrivue_core.io import load_nifti

__all__ = [
    "DISPLAY_DTYPE",
    "DISPLAY_MAX",
    "PERCENTILES",
    "TOP_K_PERCENT",
    "cached_stats",
    "display_map",
    "dice_top_k",
    "encode_display",
    "healthy_pathological_share",
    "lesion_mass",
    "map_statistics",
    "pointing_game",
    "quantise",
    "voxel_auroc",
]

# int8 code of the map's largest |A|; -127 keeps the scale symmetric. One step is max|A| / 127,
# 0.79 % of the peak (under the 1 % a display needs), so a shown value is within half a step,
# max|A| / 254 (0.39 % of the peak), of the stored float32 map.
DISPLAY_MAX = 127
DISPLAY_DTYPE = np.int8
# NIfTI-1 datatype code of DISPLAY_DTYPE: a cached display map of another type (int16 before
# issue 21, or float32) is rebuilt on its next request.
_DISPLAY_DATATYPE_CODE = 256
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}
TOP_K_PERCENT = 5.0
# Bump when the statistics change, so that cached files are recomputed.
STATS_VERSION = 2


# --------------------------------------------------------------------------- display map


def quantise(data: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 codes and the slope with ``codes * slope`` within half a slope of ``data``.

    The slope (one step) maps the largest |A| to 127 (a zero map gets slope 1: NIfTI reads a
    zero slope as "no scaling"). It is rounded to float32 first, as the header stores it; the
    codes are rounded to the nearest step, so the error is at most slope / 2 = max|A| / 254.
    """
    a = np.asarray(data, dtype=np.float32)
    peak = float(np.abs(a).max()) if a.size else 0.0
    slope = float(np.float32(peak / DISPLAY_MAX)) if peak > 0 else 1.0
    codes = np.rint(a / np.float32(slope))
    np.clip(codes, -DISPLAY_MAX, DISPLAY_MAX, out=codes)
    return codes.astype(DISPLAY_DTYPE), slope


def encode_display(data: np.ndarray, affine: np.ndarray) -> bytes:
    """The gzip-compressed NIfTI-1 bytes of the display map (int8, scl_slope, scl_inter 0)."""
    codes, slope = quantise(data)
    img = nib.Nifti1Image(codes, np.asarray(affine, dtype=np.float64))
    img.set_data_dtype(DISPLAY_DTYPE)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(slope, 0.0)
    return gzip.compress(img.to_bytes(), compresslevel=6)


def display_map(full: Path) -> Path:
    """The display map of the full map at ``full``, built on first use and cached beside it."""
    path = full.with_name(full.name.removesuffix(".nii.gz") + ".display.nii.gz")
    if not (_fresh(path, full) and _datatype_code(path) == _DISPLAY_DATATYPE_CODE):
        data, affine = load_nifti(full)
        _write_atomically(path, encode_display(data, affine))
    return path


def _datatype_code(path: Path) -> int | None:
    """The NIfTI-1 datatype code in a gzip-compressed file's header; None if unreadable."""
    try:
        with gzip.open(path, "rb") as fh:
            header = fh.read(72)
    except (OSError, EOFError):
        return None
    if len(header) < 72:
        return None
    order = "<" if int.from_bytes(header[:4], "little") == 348 else ">"
    return int(np.frombuffer(header[70:72], dtype=f"{order}i2")[0])


# --------------------------------------------------------------------------- lesion metrics


def _positive(values: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(values, dtype=np.float64), 0.0)


def lesion_mass(attribution: np.ndarray, lesion: np.ndarray) -> float:
    """sum(A+ in the lesion) / sum(A+); 0.0 without positive mass (a failure, not undefined)."""
    positive = _positive(attribution)
    total = positive.sum()
    return float(positive[lesion].sum() / total) if total > 0 else 0.0


def _top_k(values: np.ndarray, percent: float) -> np.ndarray:
    """The top ``percent`` % of flat ``values``, ties broken by position, positive ones only.

    Selects what a stable argsort of ``-values`` would, without sorting every voxel.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    count = max(1, math.floor(percent / 100 * values.size + 0.5))
    if count >= values.size:
        selected = np.ones(values.size, dtype=bool)
    else:
        kth = np.partition(values, values.size - count)[values.size - count]
        selected = values > kth
        missing = count - int(selected.sum())
        selected[np.flatnonzero(values == kth)[:missing]] = True
    return selected & (values > 0)


def dice_top_k(attribution: np.ndarray, lesion: np.ndarray, percent: float) -> float:
    """Dice of the top ``percent`` % voxels by A (positive ones only) and the lesion mask.

    ``nan`` when the mask is empty.
    """
    values = np.asarray(attribution, dtype=np.float64).ravel()
    truth = np.asarray(lesion, dtype=bool).ravel()
    if not truth.any():
        return math.nan
    predicted = _top_k(values, percent)
    return float(2.0 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


def voxel_auroc(attribution: np.ndarray, lesion: np.ndarray) -> float:
    """AUROC of A+ as the score of lesion membership (Mann-Whitney U with mid-ranks for ties).

    ``nan`` when the mask is empty or covers every voxel.
    """
    scores = _positive(attribution).ravel()
    truth = np.asarray(lesion, dtype=bool).ravel()
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_ranks = (ends - counts + 1 + ends) / 2.0  # 1-based ranks, averaged over each tie
    rank_sum = mid_ranks[inverse.ravel()][truth].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def pointing_game(attribution: np.ndarray, lesion: np.ndarray) -> bool:
    """Whether the maximum of A (the first in C order on ties) is positive and in the lesion."""
    a = np.asarray(attribution).ravel()
    peak = int(np.argmax(a))
    return bool(a[peak] > 0 and np.asarray(lesion, dtype=bool).ravel()[peak])


def healthy_pathological_share(attribution: np.ndarray) -> float:
    """sum(A+) / sum(|A|) of a healthy subject's map; 0.0 for a map that is zero everywhere."""
    a = np.asarray(attribution, dtype=np.float64)
    total = np.abs(a).sum()
    return float(_positive(a).sum() / total) if total > 0 else 0.0


# --------------------------------------------------------------------------- statistics


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def map_statistics(
    attribution: np.ndarray,
    *,
    lesion: np.ndarray | None,
    label: int,
    brain: np.ndarray | None = None,
) -> dict[str, Any]:
    """Summary of a signed map, its lesion metrics when ``lesion`` has a voxel, and for a
    healthy subject (``label`` 0) its pathological share. Keys: ``AttributionStats``'s.

    With ``brain`` (a mask of the map's shape, non-zero = brain) every value is computed over
    the brain's voxels only, as ``worker.ml.metrics`` does with ``brain_mask``: the top k %
    are k % of the brain voxels, the pointing game's maximum is the brain's, and lesion
    voxels outside the brain do not count. ``shape`` stays the map's.

    Raises:
        ValueError: If ``lesion`` or ``brain`` does not have the map's shape.
    """
    full = np.asarray(attribution, dtype=np.float64)
    for name, other in (("the mask", lesion), ("the brain mask", brain)):
        if other is not None and other.shape != full.shape:
            raise ValueError(f"{name} has shape {other.shape}, the map {full.shape}")
    inside = None if brain is None else np.asarray(brain) != 0
    a = full.ravel() if inside is None else full[inside]
    if lesion is not None:
        lesion = np.asarray(lesion, dtype=bool)
        lesion = lesion.ravel() if inside is None else lesion[inside]
    positive = a[a > 0]
    stats: dict[str, Any] = {
        "shape": list(full.shape),
        "brain_voxels": None if inside is None else int(inside.sum()),
        "min": float(a.min()) if a.size else 0.0,
        "max": float(a.max()) if a.size else 0.0,
        "positive_mass": float(positive.sum()),
        "negative_mass": float(a[a < 0].sum()),
        "mean_abs": float(np.abs(a).mean()) if a.size else 0.0,
        "positive_voxels": int(positive.size),
        "negative_voxels": int((a < 0).sum()),
        "positive_percentiles": None,
        "lesion": None,
        "pathological_share": healthy_pathological_share(a) if label == 0 else None,
    }
    if positive.size:
        values = np.percentile(positive, list(PERCENTILES.values()))
        stats["positive_percentiles"] = dict(zip(PERCENTILES, map(float, values), strict=True))
    if lesion is not None and lesion.any():
        stats["lesion"] = {
            "lesion_voxels": int(lesion.sum()),
            "lesion_mass": lesion_mass(a, lesion),
            "top_k_percent": TOP_K_PERCENT,
            "dice_top_k": dice_top_k(a, lesion, TOP_K_PERCENT),
            "voxel_auroc": _finite(voxel_auroc(a, lesion)),
            "pointing_game": pointing_game(a, lesion),
        }
    return stats


def cached_stats(
    full: Path, *, mask: Path | None, label: int, brain: Path | None = None
) -> dict[str, Any]:
    """``map_statistics`` of the map at ``full`` (inside the brain mask at ``brain``, when
    given), cached in a JSON file beside it and recomputed when a file it read is newer."""
    path = full.with_name(full.name.removesuffix(".nii.gz") + ".stats.json")
    sources = [p for p in (full, mask, brain) if p is not None]
    if all(_fresh(path, source) for source in sources):
        try:
            cached = json.loads(path.read_text())
            if cached.get("version") == STATS_VERSION:
                return dict(cached["stats"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: recompute it
    data, _ = load_nifti(full)
    lesion = load_nifti(mask)[0] != 0 if mask is not None else None
    inside = load_nifti(brain)[0] != 0 if brain is not None else None
    stats = map_statistics(data, lesion=lesion, label=label, brain=inside)
    payload = json.dumps({"version": STATS_VERSION, "stats": stats})
    _write_atomically(path, payload.encode())
    return stats


# --------------------------------------------------------------------------- files


def _fresh(derived: Path, source: Path) -> bool:
    """Whether ``derived`` exists and is not older than ``source`` (a recomputed map)."""
    try:
        return derived.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def _write_atomically(path: Path, content: bytes) -> None:
    """Write to a temporary sibling and rename it into place: readers never see half a file."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

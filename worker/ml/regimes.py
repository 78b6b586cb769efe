"""A suite of data regimes: synthetic MR data sets made differently from ``worker.ml.synthetic``.

A result on one generator is not a result: a training recipe tuned on
``worker.ml.synthetic`` (skull-stripped 4 mm subjects with an exactly-zero background, bright
ellipsoids) may rest on that generator's quirks. The regimes here share only the anatomy (the
MNI152 template that ships in nilearn's wheel) and vary everything a real data set varies:

- **contrast**: bright, FLAIR-like lesions or dark, T1-hypointense "black holes";
- **shape**: smooth ellipsoids or irregular lesions (a sphere whose radius is modulated by a
  smooth random field, merged with satellites);
- **lesion load**: from 0.1 % to 5 % of the brain, drawn per subject within the regime's range;
- **native grid**: 1, 2, 3 or 4 mm voxels on the scanner's own field of view, not the working
  grid, so the preprocessing must resample (and may crop);
- **acquisition**: a whole-field-of-view Rician noise floor (the background is *not* zero),
  a smooth multiplicative bias field, small rotations, translations and scaling of the head;
- **site artefact**: site A's pathological subjects carry a bright zipper line outside the
  brain and only faint lesions; site B (no artefact) is the held-out test split.

Every regime has a development seed, on which a recipe may be tuned, a **held-out seed** that
no tuning ever looks at (``Regime.seed("heldout")``), and a second held-out seed
(``Regime.seed("confirm")``) that checks choices made after reading the held-out tables; the
experiments report the held-out data sets.

The written data set uses the manifest format of ``worker.ml.synthetic`` (``manifest.csv``,
one folder per subject with ``image.nii.gz`` and, for pathological subjects, ``mask.nii.gz``),
so ``worker.ml.synthetic.read_manifest`` and the platform's manifest import read it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from attrivue_core.io import load_image, save_nifti
from worker.ml.synthetic import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    SubjectRecord,
    read_manifest,
    template_dir,
)

__all__ = [
    "DATA_SETS",
    "REGIMES",
    "DataSet",
    "Regime",
    "RegimeSubject",
    "artefact_mask",
    "generate_regime",
    "make_regime_subject",
    "regime_names",
]

Contrast = Literal["bright", "dark"]
Shape = Literal["ellipsoid", "irregular"]
ProgressFn = Callable[[int, int], None]

_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
_CONFIG_NAME = "regime_config.json"
# Which data set of a regime: ``dev`` (a recipe may be tuned on it), ``heldout`` (reported,
# never tuned on) and ``confirm`` (a second held-out draw, kept unseen until the presets were
# fixed, so that a choice made after reading the held-out tables is checked on data nobody looked
# at). The seeds are far from each other and from every development seed.
DataSet = Literal["dev", "heldout", "confirm"]
DATA_SETS: tuple[DataSet, ...] = ("dev", "heldout", "confirm")
_SEED_OFFSETS: dict[str, int] = {"dev": 0, "heldout": 1_000_003, "confirm": 2_000_029}


@dataclass(frozen=True)
class Regime:
    """How one regime's subjects are made.

    Attributes:
        name: Identifier (``REGIMES`` key).
        description: One line for tables and the docs.
        contrast: ``bright`` (lesions above white matter, FLAIR-like) or ``dark`` (below it,
            T1 black holes, between CSF and grey matter).
        shape: ``ellipsoid`` or ``irregular``.
        lesion_load: Range of the lesion volume as a fraction of the brain (0.001 = 0.1 %).
        contrast_range: Range of the relative intensity change inside a lesion (its absolute
            value; the sign comes from ``contrast``).
        spacing_mm: Native isotropic voxel size.
        fov_mm: Field of view (mm) of the native grid along x, y, z.
        noise: Rician noise level, in white-matter units, over the whole field of view.
        bias: Amplitude of the multiplicative bias field (0.2: +-20 %).
        rotation_deg: Largest head rotation about each axis.
        site_artefact: Site A's pathological subjects get a zipper line outside the brain;
            site B is the test split.
        n_subjects: Subjects in the data set (half pathological).
        dev_seed: The development seed.
    """

    name: str
    description: str
    contrast: Contrast = "bright"
    shape: Shape = "ellipsoid"
    lesion_load: tuple[float, float] = (0.005, 0.02)
    contrast_range: tuple[float, float] = (0.5, 0.8)
    spacing_mm: float = 3.0
    fov_mm: tuple[float, float, float] = (168.0, 204.0, 168.0)
    noise: float = 0.05
    bias: float = 0.2
    rotation_deg: float = 8.0
    site_artefact: bool = False
    n_subjects: int = 96
    dev_seed: int = 11

    def seed(self, data: DataSet = "heldout") -> int:
        """The generator seed of one of the regime's data sets (``DATA_SETS``)."""
        if data not in _SEED_OFFSETS:
            raise ValueError(f"unknown data set {data!r}; use one of {', '.join(DATA_SETS)}")
        return self.dev_seed + _SEED_OFFSETS[data]

    @property
    def grid(self) -> tuple[int, int, int]:
        """Native grid size in voxels."""
        x, y, z = (int(round(f / self.spacing_mm)) for f in self.fov_mm)
        return x, y, z

    def with_subjects(self, n_subjects: int) -> Regime:
        """The same regime with another number of subjects (a learning curve)."""
        return dataclasses.replace(self, n_subjects=n_subjects)


REGIMES: dict[str, Regime] = {
    r.name: r
    for r in (
        Regime(
            "bright_ellipsoid_2mm",
            "bright ellipsoids, 0.5-2 % load, 2 mm, noisy background",
            spacing_mm=2.0,
            dev_seed=101,
        ),
        Regime(
            "dark_irregular_3mm",
            "dark irregular lesions, 0.5-2 % load, 3 mm, noisy background",
            contrast="dark",
            shape="irregular",
            contrast_range=(0.35, 0.55),
            dev_seed=202,
        ),
        Regime(
            "bright_irregular_small_4mm",
            "bright irregular lesions, 0.1-0.5 % load, 4 mm",
            shape="irregular",
            lesion_load=(0.001, 0.005),
            spacing_mm=4.0,
            contrast_range=(0.6, 1.0),
            dev_seed=303,
        ),
        Regime(
            "dark_large_4mm",
            "dark irregular lesions, 2-5 % load, 4 mm, strong bias field",
            contrast="dark",
            shape="irregular",
            lesion_load=(0.02, 0.05),
            contrast_range=(0.3, 0.5),
            spacing_mm=4.0,
            bias=0.3,
            rotation_deg=12.0,
            dev_seed=404,
        ),
        Regime(
            "bright_irregular_1mm",
            "bright irregular lesions, 0.3-1.5 % load, 1 mm",
            shape="irregular",
            lesion_load=(0.003, 0.015),
            spacing_mm=1.0,
            fov_mm=(160.0, 192.0, 160.0),
            n_subjects=64,
            dev_seed=505,
        ),
        Regime(
            "site_artefact_faint",
            "faint bright lesions; site A's pathological subjects carry a zipper artefact",
            lesion_load=(0.005, 0.02),
            contrast_range=(0.2, 0.35),
            site_artefact=True,
            dev_seed=606,
        ),
    )
}


def regime_names() -> list[str]:
    """Names of the regimes, in the order of the docs."""
    return list(REGIMES)


@dataclass(frozen=True, eq=False)
class RegimeSubject:
    """One subject in memory: native image, lesion mask, true brain mask, affine, load."""

    image: np.ndarray
    mask: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    lesion_load: float


def make_regime_subject(
    regime: Regime, *, pathological: bool, rng: np.random.Generator, artefact: bool = False
) -> RegimeSubject:
    """Synthesise one subject of ``regime`` on its native grid.

    Args:
        regime: The regime.
        pathological: Paint lesions (their mask is returned).
        rng: Source of all randomness.
        artefact: Draw the site artefact (a bright line outside the brain).

    Returns:
        The subject; the image is float32 in white-matter units (median white matter 1 before
        the bias field), the masks are uint8.
    """
    grid = regime.grid
    affine = _native_affine(grid, regime.spacing_mm, rng)
    t1, wm, gm = _template_in(grid, affine, regime, rng)
    brain = (wm + gm > 0.5) | (t1 > 0.15)
    brain = ndimage.binary_fill_holes(brain)
    mask = np.zeros(grid, dtype=bool)
    image = t1.copy()
    if pathological:
        mask, profile = _lesions(wm, brain, regime, rng)
        sign = 1.0 if regime.contrast == "bright" else -1.0
        image = image * (1.0 + sign * profile)
    if artefact:
        image = image + _zipper(grid, brain) * image.max() / 2.0
    image = image * _bias_field(grid, regime.bias, rng)
    image = _rician(image, regime.noise, rng)
    load = float(mask.sum()) / float(max(brain.sum(), 1))
    return RegimeSubject(
        image=image.astype(np.float32),
        mask=mask.astype(np.uint8),
        brain=brain.astype(np.uint8),
        affine=affine,
        lesion_load=load,
    )


def generate_regime(
    out_dir: str | os.PathLike[str],
    regime: Regime,
    *,
    data: DataSet = "heldout",
    workers: int = 1,
    progress: ProgressFn | None = None,
) -> list[SubjectRecord]:
    """Write a regime's data set (manifest and NIfTI files); reuse it when already complete.

    Args:
        out_dir: Folder of the data set.
        regime: The regime.
        data: Which data set: ``heldout`` (the default: results are reported on it), ``dev``
            (for tuning) or ``confirm`` (the second held-out draw).
        workers: Processes that synthesise subjects in parallel.
        progress: Called with (subjects done, subjects in all).

    Returns:
        The manifest records, in subject order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed = regime.seed(data)
    wanted = json.dumps({"regime": dataclasses.asdict(regime), "seed": seed}, sort_keys=True)
    manifest = out / MANIFEST_NAME
    config_file = out / _CONFIG_NAME
    if manifest.exists() and config_file.exists() and config_file.read_text() == wanted:
        return read_manifest(manifest)
    plan = _plan(regime, seed)
    jobs = [(str(out), regime, item, seed) for item in plan]
    records: list[SubjectRecord] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, record in enumerate(pool.map(_write_one, jobs), start=1):
                records.append(record)
                if progress:
                    progress(done, len(jobs))
    else:
        for done, job in enumerate(jobs, start=1):
            records.append(_write_one(job))
            if progress:
                progress(done, len(jobs))
    lines = [",".join(MANIFEST_COLUMNS)]
    for r in records:
        mask = f"{r.subject}/mask.nii.gz" if r.mask is not None else ""
        lines.append(
            f"{r.subject},{r.subject}/image.nii.gz,{mask},{r.label},{r.target:.4f},{r.split},{r.site}"
        )
    manifest.write_text("\n".join(lines) + "\n")
    config_file.write_text(wanted)
    return read_manifest(manifest)


# --- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    subject: str
    label: int
    split: str
    site: str
    artefact: bool
    index: int


def _plan(regime: Regime, seed: int) -> list[_Planned]:
    """Labels, splits and sites: half pathological; 50/25/25 % per label, or site B as test."""
    rng = np.random.default_rng(seed)
    n_path = regime.n_subjects // 2
    labels = [1] * n_path + [0] * (regime.n_subjects - n_path)
    plan = []
    for label in (0, 1):
        indices = [i for i, lab in enumerate(labels) if lab == label]
        order = rng.permutation(len(indices))
        n = len(indices)
        n_train, n_val = n // 2, n // 4
        for rank, position in enumerate(order):
            split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
            site = "B" if (regime.site_artefact and split == "test") else "A"
            artefact = regime.site_artefact and site == "A" and label == 1
            plan.append((indices[position], label, split, site, artefact))
    plan.sort()
    return [
        _Planned(f"sub-{i + 1:03d}", label, split, site, artefact, i)
        for i, label, split, site, artefact in plan
    ]


def _write_one(job: tuple[str, Regime, _Planned, int]) -> SubjectRecord:
    out, regime, item, seed = job
    rng = np.random.default_rng([seed, item.index])
    subject = make_regime_subject(
        regime, pathological=item.label == 1, rng=rng, artefact=item.artefact
    )
    folder = Path(out) / item.subject
    image = folder / "image.nii.gz"
    mask = folder / "mask.nii.gz"
    save_nifti(image, subject.image, subject.affine, dtype=np.float32)
    if regime.site_artefact:
        # Where the artefact would be drawn on this subject (drawn or not), for the shortcut
        # diagnostics; not a file the platform imports.
        save_nifti(
            folder / "artefact.nii.gz",
            artefact_mask(subject.image.shape, subject.brain),
            subject.affine,
            dtype=np.uint8,
        )
    if item.label == 1:
        save_nifti(mask, subject.mask, subject.affine, dtype=np.uint8)
    else:
        mask.unlink(missing_ok=True)
    return SubjectRecord(
        subject=item.subject,
        image=image,
        mask=mask if item.label == 1 else None,
        label=item.label,
        target=round(100.0 * subject.lesion_load, 4),
        split=item.split,
        site=item.site,
    )


# --- anatomy ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _template() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 1 mm template: T1 (white matter median 1), WM and GM probabilities, affine."""
    arrays = []
    for name in (_T1, _WM, _GM):
        img = load_image(template_dir() / name)
        arrays.append(np.asarray(img.dataobj, dtype=np.float32) / 255.0)
    t1, wm, gm = arrays
    wm, gm = np.clip(wm, 0, 1), np.clip(gm, 0, 1)
    t1 = t1 / np.median(t1[wm > 0.9])
    affine = load_image(template_dir() / _T1).affine
    return t1, wm, gm, affine


@functools.lru_cache(maxsize=2)
def _filtered_template(sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, WM and GM pre-filtered for a voxel size (anti-aliasing); cached per sigma."""
    t1, wm, gm, _ = _template()
    if sigma <= 0:
        return t1, wm, gm
    return (
        ndimage.gaussian_filter(t1, sigma),
        ndimage.gaussian_filter(wm, sigma),
        ndimage.gaussian_filter(gm, sigma),
    )


def _native_affine(grid: Sequence[int], spacing: float, rng: np.random.Generator) -> np.ndarray:
    """The scanner grid: centred on the head with a random shift of a few mm, RAS axes."""
    affine = np.diag([spacing, spacing, spacing, 1.0])
    centre = np.array([0.0, -18.0, 8.0]) + rng.uniform(-4, 4, size=3)
    affine[:3, 3] = centre - spacing * (np.asarray(grid, dtype=float) - 1) / 2.0
    return affine


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _template_in(
    grid: Sequence[int], affine: np.ndarray, regime: Regime, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template moved by a random rigid-plus-scale transform, sampled on the native grid.

    Sampling uses linear interpolation after a Gaussian pre-filter matched to the native
    voxel size, so coarse grids see an anti-aliased head, as a scanner's larger voxels would.
    """
    template_affine = _template()[3]
    head = np.eye(4)
    head[:3, :3] = _rotation(rng, regime.rotation_deg) * rng.uniform(0.93, 1.07)
    # native voxel -> world (native) -> world (template, through the head motion) -> template voxel
    to_template = np.linalg.inv(template_affine) @ np.linalg.inv(head) @ affine
    sigma = max(0.0, (regime.spacing_mm - 1.0) / 2.0)
    out = []
    for source in _filtered_template(round(sigma, 3)):
        out.append(
            ndimage.affine_transform(
                source,
                to_template[:3, :3],
                offset=to_template[:3, 3],
                output_shape=tuple(grid),
                order=1,
                mode="constant",
                cval=0.0,
            ).astype(np.float32)
        )
    return out[0], np.clip(out[1], 0, 1), np.clip(out[2], 0, 1)


def _smooth_field(grid: Sequence[int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """A smooth random field of unit standard deviation."""
    field = ndimage.gaussian_filter(rng.normal(size=tuple(grid)), sigma, mode="wrap")
    return (field / (field.std() + 1e-12)).astype(np.float32)


def _lesions(
    wm: np.ndarray, brain: np.ndarray, regime: Regime, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paint lesions in white matter until the drawn lesion load is reached.

    Returns the mask and the relative intensity change profile (>= 0, 0 outside lesions).
    """
    grid = wm.shape
    spacing = regime.spacing_mm
    target = rng.uniform(*regime.lesion_load) * float(brain.sum())
    allowed = (wm > 0.5) & brain
    candidates = np.flatnonzero(ndimage.binary_erosion(allowed, iterations=1))
    if candidates.size == 0:
        candidates = np.flatnonzero(allowed)
    mask = np.zeros(grid, dtype=bool)
    profile = np.zeros(grid, dtype=np.float32)
    # Radii in mm: a load of a few tenths of a percent is a few small lesions; 5 % needs large ones.
    brain_ml = float(brain.sum()) * spacing**3 / 1000.0
    mean_ml = max(0.15, float(target) * spacing**3 / 1000.0 / rng.uniform(3, 8))
    base_radius = (3.0 * mean_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    base_radius = float(np.clip(base_radius, 1.6 * spacing, 0.25 * brain_ml ** (1 / 3) * 10))
    for _ in range(200):
        if mask.sum() >= target:
            break
        centre = np.array(np.unravel_index(int(rng.choice(candidates)), grid))
        radius = base_radius * rng.uniform(0.6, 1.4)
        strength = rng.uniform(*regime.contrast_range)
        _paint(mask, profile, allowed, centre, radius, strength, regime, rng)
    return mask, profile


def _paint(
    mask: np.ndarray,
    profile: np.ndarray,
    allowed: np.ndarray,
    centre: np.ndarray,
    radius: float,
    strength: float,
    regime: Regime,
    rng: np.random.Generator,
) -> None:
    spacing = regime.spacing_mm
    grid = np.asarray(mask.shape)
    reach = int(np.ceil(1.8 * radius / spacing)) + 1
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, grid)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axes = [(np.arange(a, b) - c) * spacing for a, b, c in zip(lo, hi, centre, strict=True)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (..., 3) mm
    if regime.shape == "ellipsoid":
        semi = radius * np.exp(rng.uniform(-0.35, 0.35, size=3))
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        distance = np.sqrt((((offsets @ q) / semi) ** 2).sum(-1))
    else:
        # Irregular: the radius is modulated by a smooth random field, plus satellites.
        shape = tuple(int(n) for n in (hi - lo))
        wobble = _smooth_field(shape, rng, sigma=max(1.0, 0.5 * radius / spacing))
        distance = np.sqrt((offsets**2).sum(-1)) / (radius * (1.0 + 0.35 * wobble))
        for _ in range(int(rng.integers(1, 4))):
            shift = rng.normal(size=3)
            shift *= radius * rng.uniform(0.7, 1.2) / np.linalg.norm(shift)
            r2 = radius * rng.uniform(0.35, 0.6)
            distance = np.minimum(distance, np.sqrt(((offsets - shift) ** 2).sum(-1)) / r2)
    inside = (distance <= 1.0) & allowed[box]
    local = np.where(inside, strength * (1.0 - 0.4 * np.clip(distance, 0, 1) ** 2), 0.0)
    profile[box] = np.maximum(profile[box], local.astype(np.float32))
    mask[box] |= inside


def _zipper(grid: Sequence[int], brain: np.ndarray) -> np.ndarray:
    """A zipper artefact: a bright line along x across the whole field of view.

    It crosses the head (as a real zipper line from RF interference does), so brain masking
    does not remove it: a classifier can still take the shortcut. The band is 5 % of the field
    of view thick (3 voxels at 3 mm): the former 2 % (one voxel) faded in the resize to the
    working grid and was no easier to learn than the faint lesions, so the regime did not test
    shortcut resistance (docs/experiments.md).
    """
    out = np.zeros(tuple(grid), dtype=np.float32)
    inside = np.argwhere(brain)
    y, z = (inside.mean(axis=0)[1:] + np.array([0.2 * grid[1], 0.15 * grid[2]])).astype(int)
    width = max(2, round(5.0 * grid[1] / 100))
    out[:, y : y + width, z : z + width] = 0.8
    return out


def artefact_mask(grid: Sequence[int], brain: np.ndarray) -> np.ndarray:
    """Where ``_zipper`` draws (uint8), for the artefact share of the maps."""
    return (_zipper(grid, brain) > 0).astype(np.uint8)


def _bias_field(grid: Sequence[int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field in [1 - amplitude, 1 + amplitude] (mostly)."""
    if amplitude == 0:
        return np.ones(tuple(grid), dtype=np.float32)
    coords = np.meshgrid(*(np.linspace(-1, 1, n) for n in grid), indexing="ij")
    field = np.zeros(tuple(grid), dtype=np.float64)
    for _ in range(4):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        phase = rng.uniform(0, 2 * np.pi)
        frequency = rng.uniform(0.5, 1.5)
        field += np.sin(
            frequency * sum(d * c for d, c in zip(direction, coords, strict=True)) + phase
        )
    field /= np.abs(field).max() + 1e-12
    return (1.0 + amplitude * field).astype(np.float32)


def _rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the complex signal plus Gaussian noise: a noise floor everywhere."""
    if sigma == 0:
        return image
    real = image + rng.normal(0.0, sigma, size=image.shape)
    imaginary = rng.normal(0.0, sigma, size=image.shape)
    return np.sqrt(real**2 + imaginary**2).astype(np.float32)

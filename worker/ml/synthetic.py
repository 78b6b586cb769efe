"""Synthetic MR subjects built from the MNI152 template that ships inside nilearn's wheel.

No machine here can download data, yet a newcomer must see the platform work at once. Every
subject starts from the same real brain (the ICBM 2009a T1 template and its white- and
grey-matter probability maps), resampled to the working grid. Each subject then gets its own
random affine and elastic deformation (MONAI), lesions painted into its deformed white matter
(so the saved mask matches the image voxel for voxel), a smooth bias field (MONAI) and noise.

With ``site_shortcut`` the pathological subjects of site A also carry a bright stripe near the
edge of the field of view, outside the brain, and site B is held out as the test split: a model
that learnt the stripe instead of the lesions fails there, and its attribution maps show it.

Intensities are in units of the template's white matter (median 1.0 before the bias field);
the template is skull-stripped, and the background outside the head stays exactly 0.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import nibabel as nib
import nilearn
import numpy as np
import torch
from monai.transforms import Rand3DElastic, RandBiasField
from scipy import ndimage

from attrivue_core.io import save_nifti

__all__ = [
    "CONFIG_NAME",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "SubjectRecord",
    "SyntheticConfig",
    "SyntheticSubject",
    "TemplateOnGrid",
    "artefact_region",
    "ensure_dataset",
    "generate_dataset",
    "make_subject",
    "read_manifest",
    "template_dir",
    "template_on_grid",
    "working_affine",
]

Kind = Literal["ms", "tumour"]
ProgressFn = Callable[[int, int], None]

MANIFEST_NAME = "manifest.csv"
CONFIG_NAME = "synthetic_config.json"
MANIFEST_COLUMNS = ("subject", "image", "mask", "label", "target", "split", "site")
SPLITS = ("train", "val", "test")

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
}
_KIND_DEFAULTS: dict[str, dict[str, tuple]] = {
    "ms": {"lesion_count": (3, 8), "lesion_radius_mm": (4.0, 9.0)},
    "tumour": {"lesion_count": (1, 2), "lesion_radius_mm": (12.0, 22.0)},
}
# Deformation at strength 1: ranges chosen so subjects differ visibly but stay brain-shaped.
_ROTATE_RAD = 0.08
_SCALE = 0.05
_TRANSLATE_MM = 6.0
_ELASTIC_SIGMA_MM = 16.0
_ELASTIC_STD_MM = 2.0
# Half-width of the periventricular weight (distance from the ventricles, mm).
_PERIVENTRICULAR_MM = 8.0
# Where the template (after resampling) counts as head; noise is added only there.
_FOREGROUND = 0.01
_ARTEFACT_THICKNESS_MM = 8.0
_ARTEFACT_MARGIN_MM = 16.0


@dataclass(frozen=True)
class SyntheticConfig:
    """How to synthesise a data set.

    Attributes:
        n_healthy: Number of healthy subjects (label 0, no mask).
        n_lesion: Number of pathological subjects (label 1, with mask).
        grid: Working grid in voxels; 48x56x48 at 4 mm covers the whole template brain.
        spacing_mm: Isotropic voxel size of the working grid.
        kind: ``"ms"`` (small white-matter ellipsoids, periventricular bias) or ``"tumour"``
            (one or two large masses, allowed to reach into grey matter).
        lesion_count: Inclusive range of lesions per pathological subject; ``None`` means the
            default of ``kind``: (3, 8) for MS, (1, 2) for tumour (see ``lesion_count_range``).
        lesion_radius_mm: Range of the mean semi-axis of a lesion; ``None`` means the default
            of ``kind``: (4, 9) mm for MS, (12, 22) mm for tumour (see
            ``lesion_radius_range_mm``).
        lesion_intensity: Relative intensity change at a lesion's centre (half of it at its
            rim). Positive values make lesions hyperintense, brighter than any normal tissue
            (like FLAIR lesions); negative values give T1 "black holes".
        periventricular_bias: Extra weight for MS lesion centres next to the ventricles
            (0 spreads them uniformly over the white matter).
        noise_std: Standard deviation of the Gaussian noise, in white-matter units.
        bias_field: Range (-b, b) of the coefficients of MONAI's polynomial bias field.
        deformation: Strength of the random affine and elastic deformation (0 disables it).
        target_noise: Standard deviation (ml) of the noise on the continuous target, which is
            the lesion load in ml plus that noise, clipped at 0, for pathological subjects, and
            exactly 0 for healthy ones (no lesion, no disability: the subjects the regression
            constraint's ``zero_target`` option applies to).
        site_shortcut: Add the site shortcut: site A's pathological subjects carry a bright
            stripe near the edge of the field of view, and site B (no stripe) is the test split.
        artefact_intensity: Brightness of that stripe, in white-matter units.
        split_fractions: Train, validation and test fractions, applied per label.
        seed: Seed of everything random; the same seed gives byte-identical arrays.
    """

    n_healthy: int = 8
    n_lesion: int = 8
    grid: tuple[int, int, int] = (48, 56, 48)
    spacing_mm: float = 4.0
    kind: Kind = "ms"
    lesion_count: tuple[int, int] | None = None
    lesion_radius_mm: tuple[float, float] | None = None
    lesion_intensity: float = 0.5
    periventricular_bias: float = 2.0
    noise_std: float = 0.03
    bias_field: float = 0.1
    deformation: float = 1.0
    target_noise: float = 0.5
    site_shortcut: bool = False
    artefact_intensity: float = 1.0
    split_fractions: tuple[float, float, float] = (0.5, 0.25, 0.25)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KIND_DEFAULTS:
            raise ValueError(f"kind must be 'ms' or 'tumour', got {self.kind!r}")
        # None stays None (resolved by the properties below), so that
        # dataclasses.replace(config, kind="tumour") picks up the tumour defaults.
        for name in ("lesion_count", "lesion_radius_mm"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "grid", tuple(int(n) for n in self.grid))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        _validate_config(self)

    @property
    def lesion_count_range(self) -> tuple[int, int]:
        """Inclusive range of lesions per subject, with the default of ``kind`` filled in."""
        value = self.lesion_count or _KIND_DEFAULTS[self.kind]["lesion_count"]
        return int(value[0]), int(value[1])

    @property
    def lesion_radius_range_mm(self) -> tuple[float, float]:
        """Range of the mean lesion semi-axis, with the default of ``kind`` filled in."""
        value = self.lesion_radius_mm or _KIND_DEFAULTS[self.kind]["lesion_radius_mm"]
        return float(value[0]), float(value[1])

    @property
    def n_subjects(self) -> int:
        """Total number of subjects."""
        return self.n_healthy + self.n_lesion

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one working-grid voxel in millilitres."""
        return self.spacing_mm**3 / 1000.0


@dataclass(frozen=True)
class SubjectRecord:
    """One row of the manifest, with absolute paths.

    Attributes:
        subject: Subject name, ``sub-001`` onwards.
        image: Path of the float32 image.
        mask: Path of the uint8 lesion mask; ``None`` for healthy subjects.
        label: 0 healthy, 1 pathological.
        target: Continuous target (lesion load in ml plus noise, clipped at 0; 0 for healthy
            subjects), rounded to 3 decimals.
        split: ``"train"``, ``"val"`` or ``"test"``.
        site: ``"A"`` or ``"B"`` (all ``"A"`` without the site shortcut).
    """

    subject: str
    image: Path
    mask: Path | None
    label: int
    target: float
    split: str
    site: str


@dataclass(frozen=True, eq=False)
class SyntheticSubject:
    """One synthesised subject in memory.

    Attributes:
        image: float32 image on the working grid.
        mask: uint8 lesion mask (all zero for a healthy subject).
        wm: The subject's deformed white-matter probability map.
        lesion_load_ml: Mask volume in millilitres.
    """

    image: np.ndarray
    mask: np.ndarray
    wm: np.ndarray
    lesion_load_ml: float


@dataclass(frozen=True, eq=False)
class TemplateOnGrid:
    """The template resampled to a working grid (read-only arrays).

    Attributes:
        t1: T1 intensities, scaled so that the median of white matter is 1.
        wm: White-matter probability in [0, 1].
        gm: Grey-matter probability in [0, 1].
        periventricular: Weight in (0, 1], 1 at the ventricles, decaying with distance.
        affine: The working grid's 4x4 affine.
    """

    t1: np.ndarray
    wm: np.ndarray
    gm: np.ndarray
    periventricular: np.ndarray
    affine: np.ndarray


# --- public API --------------------------------------------------------------------------------


def template_dir() -> Path:
    """Return the folder of nilearn's packaged data that holds the MNI152 template files."""
    return Path(nilearn.__file__).resolve().parent / "datasets" / "data"


def working_affine(grid: Sequence[int], spacing_mm: float) -> np.ndarray:
    """Return the affine of a working grid centred on the template's centre.

    Args:
        grid: Grid size in voxels.
        spacing_mm: Isotropic voxel size.

    Returns:
        A 4x4 float64 RAS affine with ``spacing_mm`` on the diagonal.
    """
    header = _load_template(_TEMPLATE_FILES["t1"])
    centre = header.affine @ np.append((np.asarray(header.shape[:3]) - 1) / 2.0, 1.0)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = centre[:3] - spacing_mm * (np.asarray(grid, dtype=float) - 1) / 2.0
    return affine


def template_on_grid(grid: Sequence[int], spacing_mm: float) -> TemplateOnGrid:
    """Return the template resampled (with anti-aliasing) to a working grid; cached.

    Args:
        grid: Grid size in voxels.
        spacing_mm: Isotropic voxel size.

    Returns:
        The resampled T1, tissue maps and periventricular weight.
    """
    return _template_on_grid(tuple(int(n) for n in grid), float(spacing_mm))


def artefact_region(config: SyntheticConfig) -> np.ndarray:
    """Return where the site-A acquisition artefact is drawn.

    The stripe runs along the first axis, one voxel below the top (superior) edge of the field
    of view, over the middle half of the second axis: well outside the brain, so it never
    overlaps a lesion and any relevance on it is relevance on the shortcut.

    Args:
        config: The synthesis configuration (its grid and spacing).

    Returns:
        Boolean array of shape ``config.grid``.
    """
    nx, ny, nz = config.grid
    thickness = max(1, round(_ARTEFACT_THICKNESS_MM / config.spacing_mm))
    region = np.zeros(config.grid, dtype=bool)
    top = max(0, nz - 1 - thickness)
    region[:, ny // 4 : ny - ny // 4, top : nz - 1] = True
    return region


def make_subject(
    config: SyntheticConfig,
    *,
    pathological: bool,
    rng: np.random.Generator,
    artefact: bool = False,
) -> SyntheticSubject:
    """Synthesise one subject in memory.

    Args:
        config: The synthesis configuration.
        pathological: Paint lesions (and return their mask).
        rng: Source of all randomness, MONAI's transforms included.
        artefact: Draw the site-A stripe (see ``artefact_region``).

    Returns:
        The image, mask, deformed white matter and lesion load.
    """
    base = template_on_grid(config.grid, config.spacing_mm)
    t1, wm, gm, periventricular = _deform(base, config, rng)
    mask = np.zeros(config.grid, dtype=bool)
    change = np.zeros(config.grid, dtype=np.float32)
    if pathological:
        mask, change = _paint_lesions(wm, gm, periventricular, config, rng)
    image = t1 * (1.0 + change)
    foreground = t1 > _FOREGROUND
    if artefact:
        region = artefact_region(config)
        image[region] += config.artefact_intensity
        foreground |= region
    image = _apply_bias_field(image, config, rng)
    # Noise only on the head keeps the background exactly 0, as in skull-stripped study data.
    image += rng.normal(0.0, config.noise_std, size=image.shape).astype(np.float32) * foreground
    load = float(mask.sum()) * config.voxel_volume_ml
    return SyntheticSubject(
        image=image.astype(np.float32), mask=mask.astype(np.uint8), wm=wm, lesion_load_ml=load
    )


def generate_dataset(
    out_dir: str | os.PathLike[str],
    config: SyntheticConfig,
    *,
    progress: ProgressFn | None = None,
) -> list[SubjectRecord]:
    """Synthesise all subjects, write their files and the manifest.

    Subject files are written first and the manifest last, so a manifest on disk always
    describes a complete data set.

    Args:
        out_dir: Output folder (created if missing).
        config: The synthesis configuration.
        progress: Called as ``progress(done, total)`` after each subject.

    Returns:
        One record per subject, in subject order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A stale manifest must not vouch for files that are about to be rewritten.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (out_dir / CONFIG_NAME).unlink(missing_ok=True)
    if config.site_shortcut:
        _check_artefact_outside_brain(config)
    plan = _plan_subjects(config)
    seeds = np.random.SeedSequence(config.seed).spawn(len(plan) + 1)[1:]
    records = []
    for done, (item, seed) in enumerate(zip(plan, seeds, strict=True), start=1):
        records.append(_write_subject(out_dir, config, item, np.random.default_rng(seed)))
        if progress is not None:
            progress(done, len(plan))
    _write_text_atomically(out_dir / CONFIG_NAME, json.dumps(_config_dict(config), indent=2))
    _write_text_atomically(out_dir / MANIFEST_NAME, _manifest_text(records, out_dir))
    return records


def ensure_dataset(
    out_dir: str | os.PathLike[str],
    config: SyntheticConfig,
    *,
    progress: ProgressFn | None = None,
) -> list[SubjectRecord]:
    """Return the data set in ``out_dir``, generating it only if it is missing or different.

    An existing data set is reused when its manifest exists, every file it names exists, and
    it was generated with an equal configuration.

    Args:
        out_dir: Output folder.
        config: The synthesis configuration.
        progress: Passed to ``generate_dataset`` when generation is needed.

    Returns:
        One record per subject, in subject order.
    """
    out_dir = Path(out_dir)
    records = _complete_records(out_dir, config)
    if records is not None:
        return records
    return generate_dataset(out_dir, config, progress=progress)


def read_manifest(path: str | os.PathLike[str]) -> list[SubjectRecord]:
    """Read a manifest written by ``generate_dataset``.

    Args:
        path: The manifest file; relative paths in it refer to its folder.

    Returns:
        One record per row, with absolute paths.

    Raises:
        ValueError: The header is not the expected one.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path.name}: expected columns {','.join(MANIFEST_COLUMNS)}")
        return [_record_from_row(row, path.parent) for row in reader]


# --- configuration -------------------------------------------------------------------------------


def _validate_config(config: SyntheticConfig) -> None:
    """Refuse configurations that cannot produce a sensible data set."""
    if config.n_healthy < 0 or config.n_lesion < 0 or config.n_subjects == 0:
        raise ValueError("need a non-negative number of each kind of subject, and at least one")
    if len(config.grid) != 3 or min(config.grid) < 8:
        raise ValueError(f"grid must be three sizes of at least 8 voxels, got {config.grid}")
    if not config.spacing_mm > 0:
        raise ValueError("spacing_mm must be positive")
    low, high = config.lesion_count_range
    if not 1 <= low <= high:
        raise ValueError(f"lesion_count must satisfy 1 <= low <= high, got ({low}, {high})")
    r_low, r_high = config.lesion_radius_range_mm
    if not 0 < r_low <= r_high:
        raise ValueError(f"lesion_radius_mm must satisfy 0 < low <= high, got ({r_low}, {r_high})")
    fractions = config.split_fractions
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError("split_fractions must be three non-negative numbers summing to 1")
    if config.site_shortcut and fractions[2] == 0:
        raise ValueError("site_shortcut holds out site B as the test split; its fraction is 0")
    for name in ("noise_std", "bias_field", "deformation", "target_noise"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must not be negative")


def _config_dict(config: SyntheticConfig) -> dict:
    """Return the configuration as JSON-comparable data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# --- template ------------------------------------------------------------------------------------


def _load_template(filename: str) -> nib.Nifti1Image:
    """Open one packaged template file (the voxels are read only when asked for)."""
    # nilearn ships NIfTI-1 files; the cast only informs type checkers.
    return cast(nib.Nifti1Image, nib.load(template_dir() / filename))


@functools.lru_cache(maxsize=4)
def _template_on_grid(grid: tuple[int, int, int], spacing_mm: float) -> TemplateOnGrid:
    """Resample the template once per grid; every subject starts from this."""
    affine = working_affine(grid, spacing_mm)
    volumes = {}
    for name, filename in _TEMPLATE_FILES.items():
        img = _load_template(filename)
        data = np.asarray(img.dataobj, dtype=np.float32) / 255.0
        volumes[name] = _resample(data, img.affine, affine, grid)
    wm = np.clip(volumes["wm"], 0.0, 1.0)
    gm = np.clip(volumes["gm"], 0.0, 1.0)
    t1 = volumes["t1"] / np.median(volumes["t1"][wm > 0.9])
    periventricular = _periventricular_weight(t1, wm, gm, spacing_mm)
    arrays = (t1, wm, gm, periventricular, affine)
    for array in arrays:
        array.flags.writeable = False
    return TemplateOnGrid(*arrays)


def _resample(
    data: np.ndarray, source: np.ndarray, target: np.ndarray, grid: tuple[int, int, int]
) -> np.ndarray:
    """Resample a volume from its affine onto a coarser grid, with Gaussian anti-aliasing."""
    source_zooms = np.sqrt((source[:3, :3] ** 2).sum(axis=0))
    target_zooms = np.sqrt((target[:3, :3] ** 2).sum(axis=0))
    # Without smoothing, point sampling at 4 mm would alias 1 mm detail into noise.
    sigma = np.maximum(target_zooms / source_zooms - 1.0, 0.0) / 2.0
    if np.any(sigma > 0):
        data = ndimage.gaussian_filter(data, sigma)
    voxel_map = np.linalg.inv(source) @ target
    resampled = ndimage.affine_transform(
        data, voxel_map[:3, :3], offset=voxel_map[:3, 3], output_shape=grid, order=1, cval=0.0
    )
    return resampled.astype(np.float32)


def _periventricular_weight(
    t1: np.ndarray, wm: np.ndarray, gm: np.ndarray, spacing_mm: float
) -> np.ndarray:
    """Weight voxels by closeness to the ventricles (cavities enclosed by brain tissue)."""
    tissue = (wm + gm) > 0.5
    ventricles = ndimage.binary_fill_holes(tissue) & ~tissue & (t1 > _FOREGROUND)
    if not ventricles.any():
        # On very coarse grids the ventricles may vanish; fall back to no preference.
        return np.ones_like(t1)
    distance = ndimage.distance_transform_edt(~ventricles, sampling=spacing_mm)
    return np.exp(-distance / _PERIVENTRICULAR_MM).astype(np.float32)


def _check_artefact_outside_brain(config: SyntheticConfig) -> None:
    """Refuse grids so tight that the site stripe would fall on the brain."""
    base = template_on_grid(config.grid, config.spacing_mm)
    # Room for the largest shift that the deformation can give the brain's top.
    steps = int(np.ceil(_ARTEFACT_MARGIN_MM / config.spacing_mm))
    margin = ndimage.binary_dilation(artefact_region(config), iterations=steps)
    if (base.t1[margin] > _FOREGROUND).any():
        raise ValueError(
            f"grid {config.grid} at {config.spacing_mm} mm leaves no room above the brain "
            "for the site artefact; use a larger field of view"
        )


# --- one subject ---------------------------------------------------------------------------------


def _monai_seed(rng: np.random.Generator) -> int:
    """Draw a seed for a MONAI transform, whose RandomState takes 32-bit seeds."""
    return int(rng.integers(0, 2**31 - 1))


def _deform(
    base: TemplateOnGrid, config: SyntheticConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply one random affine + elastic deformation to the template and its maps alike."""
    channels = np.stack([base.t1, base.wm, base.gm, base.periventricular])
    strength = config.deformation
    if strength == 0:
        t1, wm, gm, periventricular = (np.array(c) for c in channels)
        return t1, wm, gm, periventricular
    sigma = _ELASTIC_SIGMA_MM / config.spacing_mm
    # MONAI smooths uniform(-1, 1) offsets with a Gaussian; this is the resulting standard
    # deviation per unit magnitude (0.9 corrects for the truncated kernel), used to express
    # the elastic strength in millimetres whatever the grid.
    unit_std = 0.9 * np.sqrt(1.0 / 3.0) / (2.0 * np.sqrt(np.pi) * sigma) ** 1.5
    magnitude = strength * _ELASTIC_STD_MM / config.spacing_mm / unit_std
    transform = Rand3DElastic(
        sigma_range=(sigma, sigma),
        magnitude_range=(0.5 * magnitude, 1.5 * magnitude),
        prob=1.0,
        rotate_range=(strength * _ROTATE_RAD,) * 3,
        scale_range=(strength * _SCALE,) * 3,
        translate_range=(strength * _TRANSLATE_MM / config.spacing_mm,) * 3,
        mode="bilinear",
        padding_mode="zeros",
    )
    # Separate seeds: MONAI would otherwise give the affine and the elastic offsets one seed,
    # which correlates the rotation with the first offsets.
    transform.set_random_state(seed=_monai_seed(rng))
    transform.rand_affine_grid.set_random_state(seed=_monai_seed(rng))
    with _single_torch_thread():
        warped = transform(torch.from_numpy(channels))
    out = np.asarray(torch.as_tensor(warped).detach().cpu().numpy(), dtype=np.float32)
    t1 = np.maximum(out[0], 0.0)
    wm, gm, periventricular = (np.clip(c, 0.0, 1.0) for c in out[1:])
    return t1, wm, gm, periventricular


@contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run torch on one thread for the duration, then restore the previous setting.

    Parallel convolutions round differently with different thread counts (about 1e-6 here),
    so without this the same seed would give different bytes on a 2-core and a 16-core
    machine. One thread is also the fastest choice for volumes this small. The setting is
    process-wide: a training loop running in another thread of the same process would be
    slowed for these few milliseconds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _apply_bias_field(
    image: np.ndarray, config: SyntheticConfig, rng: np.random.Generator
) -> np.ndarray:
    """Multiply by a smooth random field (MONAI's polynomial bias field)."""
    if config.bias_field == 0:
        return image
    transform = RandBiasField(degree=3, coeff_range=(-config.bias_field, config.bias_field), prob=1)
    transform.set_random_state(seed=_monai_seed(rng))
    biased = transform(image[None])
    return np.asarray(torch.as_tensor(biased).numpy()[0], dtype=np.float32)


def _paint_lesions(
    wm: np.ndarray,
    gm: np.ndarray,
    periventricular: np.ndarray,
    config: SyntheticConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw lesions as random ellipsoids; return the mask and the relative intensity change.

    MS lesions are confined to white matter (probability > 0.5); tumours to the brain.
    The intensity change is non-zero exactly on the mask, so mask and image agree.
    """
    ms = config.kind == "ms"
    allowed = wm > 0.5 if ms else (wm + gm) > 0.5
    weights = np.where(wm > 0.5, 1.0, 0.0)
    if ms:
        weights = weights * (1.0 + config.periventricular_bias * periventricular)
    candidates = np.flatnonzero(weights)
    if candidates.size == 0:
        raise ValueError(f"no white matter on grid {config.grid}; cannot place lesions")
    probabilities = weights.ravel()[candidates] / weights.ravel()[candidates].sum()
    mask = np.zeros(config.grid, dtype=bool)
    change = np.zeros(config.grid, dtype=np.float32)
    low, high = config.lesion_count_range
    for _ in range(int(rng.integers(low, high + 1))):
        centre = np.unravel_index(rng.choice(candidates, p=probabilities), config.grid)
        _paint_one(mask, change, allowed, np.asarray(centre), config, rng)
    return mask, change


def _paint_one(
    mask: np.ndarray,
    change: np.ndarray,
    allowed: np.ndarray,
    centre: np.ndarray,
    config: SyntheticConfig,
    rng: np.random.Generator,
) -> None:
    """Add one randomly oriented ellipsoid around ``centre`` to ``mask`` and ``change``."""
    radius = rng.uniform(*config.lesion_radius_range_mm)
    semi_axes = radius * np.exp(rng.uniform(-0.25, 0.25, size=3))
    rotation = _random_rotation(rng)
    strength = config.lesion_intensity * rng.uniform(0.8, 1.2)
    reach = int(np.ceil(semi_axes.max() / config.spacing_mm))
    lo = np.maximum(centre - reach, 0)
    hi = np.minimum(centre + reach + 1, config.grid)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offsets = (
        np.stack(
            np.meshgrid(
                *(np.arange(a, b) - c for a, b, c in zip(lo, hi, centre, strict=True)),
                indexing="ij",
            ),
            axis=-1,
        )
        * config.spacing_mm
    )
    q = (((offsets @ rotation) / semi_axes) ** 2).sum(axis=-1)
    inside = (q <= 1.0) & allowed[box]
    inside[tuple(centre - lo)] = True  # a small lesion keeps at least its centre voxel
    # Stronger at the centre, half as strong at the rim: lesions look like blobs, not discs.
    profile = (strength * (1.0 - 0.5 * np.minimum(q, 1.0))).astype(np.float32)
    # Where lesions overlap, keep the larger change so the union reads as one lesion.
    local = change[box]
    local[inside] = np.where(np.abs(profile) > np.abs(local), profile, local)[inside]
    mask[box] |= inside


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Return a uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# --- data set ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Planned:
    """What the data set decides about a subject before it is synthesised."""

    subject: str
    label: int
    split: str
    site: str
    artefact: bool


def _plan_subjects(config: SyntheticConfig) -> list[_Planned]:
    """Assign labels, stratified splits and sites to subject names."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(1)[0])
    labels = rng.permutation([0] * config.n_healthy + [1] * config.n_lesion)
    splits = np.empty(labels.size, dtype=object)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = _split_counts(members.size, config.split_fractions)
        splits[members] = np.repeat(SPLITS, counts)
    plan = []
    for index, (label, split) in enumerate(zip(labels, splits, strict=True)):
        # With the shortcut, site B is the held-out test site; all others are site A.
        site = "B" if config.site_shortcut and split == "test" else "A"
        artefact = config.site_shortcut and site == "A" and label == 1
        plan.append(_Planned(f"sub-{index + 1:03d}", int(label), str(split), site, artefact))
    return plan


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` by largest remainders, giving each non-empty split one subject if possible."""
    exact = np.asarray(fractions, dtype=float) * n
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[index] += 1
    wanted = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for index in wanted:
            if counts[index] == 0:
                donor = int(np.argmax(counts))
                counts[donor] -= 1
                counts[index] += 1
    return [int(c) for c in counts]


def _write_subject(
    out_dir: Path, config: SyntheticConfig, item: _Planned, rng: np.random.Generator
) -> SubjectRecord:
    """Synthesise one planned subject, save its files and return its record."""
    pathological = item.label == 1
    synthetic = make_subject(config, pathological=pathological, rng=rng, artefact=item.artefact)
    affine = template_on_grid(config.grid, config.spacing_mm).affine
    folder = out_dir / item.subject
    image = folder / "image.nii.gz"
    mask = folder / "mask.nii.gz"
    save_nifti(image, synthetic.image, affine, dtype=np.float32)
    if pathological:
        save_nifti(mask, synthetic.mask, affine, dtype=np.uint8)
    else:
        # A subject that was pathological in an earlier run must not keep its old mask.
        mask.unlink(missing_ok=True)
    noise = rng.normal(0.0, config.target_noise)
    noisy = synthetic.lesion_load_ml + noise if pathological else 0.0
    return SubjectRecord(
        subject=item.subject,
        image=image,
        mask=mask if pathological else None,
        label=item.label,
        target=round(max(0.0, float(noisy)), 3),
        split=item.split,
        site=item.site,
    )


def _manifest_text(records: Sequence[SubjectRecord], out_dir: Path) -> str:
    """Render the manifest CSV with paths relative to the data set folder."""
    lines = [",".join(MANIFEST_COLUMNS)]
    for r in records:
        mask = r.mask.relative_to(out_dir).as_posix() if r.mask is not None else ""
        image = r.image.relative_to(out_dir).as_posix()
        lines.append(f"{r.subject},{image},{mask},{r.label},{r.target:.3f},{r.split},{r.site}")
    return "\n".join(lines) + "\n"


def _record_from_row(row: dict[str, str], folder: Path) -> SubjectRecord:
    """Turn one manifest row into a record with absolute paths."""
    return SubjectRecord(
        subject=row["subject"],
        image=folder / row["image"],
        mask=folder / row["mask"] if row["mask"] else None,
        label=int(row["label"]),
        target=float(row["target"]),
        split=row["split"],
        site=row["site"],
    )


def _complete_records(out_dir: Path, config: SyntheticConfig) -> list[SubjectRecord] | None:
    """Return the existing records if they are complete and match ``config``, else None."""
    manifest, stored = out_dir / MANIFEST_NAME, out_dir / CONFIG_NAME
    if not (manifest.is_file() and stored.is_file()):
        return None
    try:
        if json.loads(stored.read_text()) != _config_dict(config):
            return None
        records = read_manifest(manifest)
    except (OSError, ValueError, KeyError):
        return None
    files = [r.image for r in records] + [r.mask for r in records if r.mask is not None]
    if len(records) != config.n_subjects or not all(f.is_file() for f in files):
        return None
    return records


def _write_text_atomically(path: Path, text: str) -> None:
    """Write a small text file via a temporary sibling, fsync and rename."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise

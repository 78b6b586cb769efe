"""The data-regime suite: each regime makes what it says, and held-out seeds are distinct."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from worker.ml.regimes import DATA_SETS, REGIMES, generate_regime, make_regime_subject
from worker.ml.synthetic import read_manifest

# Small fields of view keep the test fast; the regime's voxel size and contrast are kept.
FAST = {name: dataclasses.replace(r, fov_mm=(120.0, 144.0, 120.0)) for name, r in REGIMES.items()}


@pytest.mark.parametrize("name", ["bright_ellipsoid_2mm", "dark_irregular_3mm", "dark_large_4mm"])
def test_lesions_have_the_regime_contrast_and_load(name: str) -> None:
    regime = REGIMES[name]
    subject = make_regime_subject(regime, pathological=True, rng=np.random.default_rng(5))
    lesion = subject.mask > 0
    brain = subject.brain > 0
    assert subject.image.shape == regime.grid
    assert np.allclose(np.diag(subject.affine)[:3], regime.spacing_mm)
    low, high = regime.lesion_load
    assert low * 0.9 <= subject.lesion_load <= high * 1.5
    # Lesions lie in the brain, and read brighter or darker than the white matter around them.
    assert brain[lesion].all()
    ring = (np.logical_xor(_dilate(lesion, 2), lesion)) & brain
    around = np.median(subject.image[ring])
    inside = np.median(subject.image[lesion])
    if regime.contrast == "bright":
        assert inside > 1.15 * around
    else:
        assert inside < 0.85 * around


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=iterations)


def test_background_is_a_noise_floor_not_zero() -> None:
    regime = REGIMES["dark_irregular_3mm"]
    subject = make_regime_subject(regime, pathological=False, rng=np.random.default_rng(1))
    outside = subject.image[subject.brain == 0]
    assert (outside > 0).mean() > 0.99  # "non-zero voxels" is not the brain here
    assert 0.02 < outside.mean() < 0.2
    assert not subject.mask.any() and subject.lesion_load == 0.0


def test_site_artefact_crosses_the_head_on_site_a_only(tmp_path) -> None:
    regime = dataclasses.replace(FAST["site_artefact_faint"], n_subjects=16)
    records = generate_regime(tmp_path / "artefact", regime)
    assert {r.site for r in records if r.split == "test"} == {"B"}
    assert {r.site for r in records if r.split != "test"} == {"A"}
    with_line = [r for r in records if r.site == "A" and r.label == 1]
    without = [r for r in records if r.site == "A" and r.label == 0]
    line = nib.load(with_line[0].image.with_name("artefact.nii.gz")).get_fdata() > 0
    brain_centre = np.asarray(line.shape) // 2
    assert line.any() and line[:, :, :].sum() < 0.01 * line.size
    assert line[brain_centre[0]].any()  # it runs across the whole field of view
    bright = nib.load(with_line[0].image).get_fdata()[line].mean()
    plain = nib.load(without[0].image).get_fdata()[line].mean()
    assert bright > plain + 0.3


def test_generate_writes_a_manifest_and_reuses_it(tmp_path) -> None:
    regime = dataclasses.replace(FAST["bright_irregular_small_4mm"], n_subjects=8)
    records = generate_regime(tmp_path / "d", regime)
    assert len(records) == 8 and sum(r.label for r in records) == 4
    assert [r.split for r in records].count("train") == 4
    again = read_manifest(tmp_path / "d" / "manifest.csv")
    assert [r.image for r in again] == [r.image for r in records]
    before = records[0].image.stat().st_mtime_ns
    generate_regime(tmp_path / "d", regime)  # complete: nothing rewritten
    assert records[0].image.stat().st_mtime_ns == before
    for r in records:
        if r.mask is not None:
            mask = nib.load(r.mask)
            assert mask.shape == nib.load(r.image).shape
            assert np.asarray(mask.dataobj).any()


def test_the_three_data_sets_of_a_regime_are_different_draws(tmp_path) -> None:
    regime = dataclasses.replace(FAST["bright_irregular_small_4mm"], n_subjects=4)
    seeds = {data: regime.seed(data) for data in DATA_SETS}
    assert len(set(seeds.values())) == 3
    images = {
        data: nib.load(generate_regime(tmp_path / data, regime, data=data)[0].image).get_fdata()
        for data in DATA_SETS
    }
    assert not np.allclose(images["dev"], images["heldout"])
    assert not np.allclose(images["heldout"], images["confirm"])
    assert not np.allclose(images["dev"], images["confirm"])
    with pytest.raises(ValueError, match="unknown data set 'test'"):
        regime.seed("test")  # type: ignore[arg-type]


def test_every_regime_is_described_and_differs_from_the_demo_generator() -> None:
    spacings = {r.spacing_mm for r in REGIMES.values()}
    assert spacings == {1.0, 2.0, 3.0, 4.0}
    assert {r.contrast for r in REGIMES.values()} == {"bright", "dark"}
    assert {r.shape for r in REGIMES.values()} == {"ellipsoid", "irregular"}
    loads = [x for r in REGIMES.values() for x in r.lesion_load]
    assert min(loads) <= 0.001 and max(loads) >= 0.05
    assert any(r.site_artefact for r in REGIMES.values())
    assert all(r.n_subjects <= 128 for r in REGIMES.values())

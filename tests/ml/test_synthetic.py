"""Tests for the synthetic data generator (small 8 mm grids keep them fast)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from attrivue_core.io import load_nifti, validate_nifti
from worker.ml.synthetic import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    SyntheticConfig,
    artefact_region,
    ensure_dataset,
    generate_dataset,
    make_subject,
    read_manifest,
    template_on_grid,
    working_affine,
)

SMALL = SyntheticConfig(n_healthy=6, n_lesion=6, grid=(24, 28, 24), spacing_mm=8.0, seed=3)
# A 6 mm grid keeps lesions several voxels wide, for the intensity checks.
MEDIUM = SyntheticConfig(grid=(32, 38, 32), spacing_mm=6.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate_dataset(out, SMALL)


@pytest.fixture(scope="module")
def shortcut_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shortcut")
    return out, generate_dataset(out, dataclasses.replace(SMALL, site_shortcut=True))


def _lesion_subject(config: SyntheticConfig, seed: int = 0):
    return make_subject(config, pathological=True, rng=np.random.default_rng(seed))


def test_files_lie_on_the_requested_grid(dataset):
    _, records = dataset
    expected = working_affine(SMALL.grid, SMALL.spacing_mm)

    for record in records:
        info = validate_nifti(record.image)
        assert info.shape == SMALL.grid
        assert info.dtype == "float32"
        assert info.zooms == pytest.approx((8.0, 8.0, 8.0))
        np.testing.assert_allclose(info.affine, expected, atol=1e-4)
        if record.mask is not None:
            mask_info = validate_nifti(record.mask)
            assert mask_info.dtype == "uint8"
            np.testing.assert_allclose(mask_info.affine, expected, atol=1e-4)


def test_working_grid_is_centred_on_the_template():
    affine = working_affine((48, 56, 48), 4.0)
    centre = affine @ np.array([23.5, 27.5, 23.5, 1.0])

    np.testing.assert_allclose(np.diag(affine)[:3], 4.0)
    np.testing.assert_allclose(centre[:3], [0.0, -18.0, 22.0])


def test_template_on_grid_is_a_brain():
    base = template_on_grid(MEDIUM.grid, MEDIUM.spacing_mm)

    assert np.median(base.t1[base.wm > 0.9]) == pytest.approx(1.0, abs=0.02)
    # Grey matter is darker than white matter on T1, and the background is empty.
    assert np.median(base.t1[base.gm > 0.7]) < 0.9
    assert base.t1[0, 0, 0] == 0.0
    assert 0.2 < (base.t1 > 0.01).mean() < 0.8


def test_masks_only_on_lesion_subjects(dataset):
    out, records = dataset

    for record in records:
        assert record.image == out / record.subject / "image.nii.gz"
        if record.label == 0:
            assert record.mask is None
            assert not (out / record.subject / "mask.nii.gz").exists()
        else:
            assert record.mask == out / record.subject / "mask.nii.gz"
            mask, _ = load_nifti(record.mask)
            assert set(np.unique(mask)) <= {0.0, 1.0}
            assert mask.sum() > 0


def test_ms_lesions_lie_in_white_matter(dataset):
    subject = _lesion_subject(MEDIUM)
    mask = subject.mask.astype(bool)
    assert mask.any()
    assert (subject.wm[mask] > 0.5).all()

    # On disk, against the undeformed template: most lesion voxels are still white matter.
    _, records = dataset
    wm = template_on_grid(SMALL.grid, SMALL.spacing_mm).wm
    masks = [load_nifti(r.mask)[0] > 0 for r in records if r.mask is not None]
    inside = np.mean(np.concatenate([wm[m] for m in masks]) > 0.3)
    assert inside > 0.7


def test_lesions_differ_from_surrounding_tissue():
    for seed in range(3):
        subject = _lesion_subject(MEDIUM, seed)
        mask = subject.mask.astype(bool)
        ring = ndimage.binary_dilation(mask) & ~mask & (subject.wm > 0.5)
        contrast = subject.image[mask].mean() - subject.image[ring].mean()
        assert contrast > 3 * MEDIUM.noise_std


def test_negative_lesion_intensity_gives_dark_lesions():
    config = dataclasses.replace(MEDIUM, lesion_intensity=-0.5)
    subject = _lesion_subject(config)
    mask = subject.mask.astype(bool)
    ring = ndimage.binary_dilation(mask) & ~mask & (subject.wm > 0.5)

    assert subject.image[ring].mean() - subject.image[mask].mean() > 3 * config.noise_std


def test_ms_defaults_and_explicit_ranges():
    assert SyntheticConfig().lesion_count_range == (3, 8)
    assert SyntheticConfig().lesion_radius_range_mm == (4.0, 9.0)
    config = SyntheticConfig(kind="tumour", lesion_count=[2, 3])
    assert config.lesion_count == (2, 3) and config.lesion_count_range == (2, 3)


def test_healthy_subject_has_empty_mask_and_zero_background():
    subject = make_subject(MEDIUM, pathological=False, rng=np.random.default_rng(0))

    assert subject.mask.sum() == 0
    assert subject.lesion_load_ml == 0.0
    assert subject.image.dtype == np.float32
    assert subject.image[0, 0, 0] == 0.0


def test_tumour_kind_paints_one_or_two_large_masses():
    config = dataclasses.replace(MEDIUM, kind="tumour")
    assert config.lesion_count_range == (1, 2)
    assert config.lesion_radius_range_mm == (12.0, 22.0)

    for seed in range(3):
        subject = _lesion_subject(config, seed)
        _, n_masses = ndimage.label(subject.mask)
        assert 1 <= n_masses <= 2
        assert subject.lesion_load_ml > 5.0


def test_same_seed_gives_identical_arrays(tmp_path):
    config = dataclasses.replace(SMALL, n_healthy=2, n_lesion=2)
    first = generate_dataset(tmp_path / "a", config)
    second = generate_dataset(tmp_path / "b", config)
    other = generate_dataset(tmp_path / "c", dataclasses.replace(config, seed=4))

    for a, b in zip(first, second, strict=True):
        assert (a.label, a.target, a.split) == (b.label, b.target, b.split)
        assert load_nifti(a.image)[0].tobytes() == load_nifti(b.image)[0].tobytes()
        if a.mask is not None:
            assert load_nifti(a.mask)[0].tobytes() == load_nifti(b.mask)[0].tobytes()
    images = [load_nifti(r.image)[0] for r in first]
    assert any(
        not np.array_equal(x, load_nifti(r.image)[0]) for x, r in zip(images, other, strict=True)
    )


def test_make_subject_is_deterministic():
    a = _lesion_subject(SMALL, seed=7)
    b = _lesion_subject(SMALL, seed=7)
    c = _lesion_subject(SMALL, seed=8)

    assert a.image.tobytes() == b.image.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes()
    assert not np.array_equal(a.image, c.image)


def test_arrays_do_not_depend_on_the_torch_thread_count():
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _lesion_subject(MEDIUM, seed=2)
        torch.set_num_threads(2)
        double = _lesion_subject(MEDIUM, seed=2)
    finally:
        torch.set_num_threads(previous)

    assert single.image.tobytes() == double.image.tobytes()
    assert torch.get_num_threads() == previous


def test_manifest_columns_and_stratified_splits(dataset):
    out, records = dataset
    with (out / MANIFEST_NAME).open(newline="") as handle:
        rows = list(csv.DictReader(handle))

    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert [row["subject"] for row in rows] == [f"sub-{i:03d}" for i in range(1, 13)]
    for row in rows:
        assert row["image"] == f"{row['subject']}/image.nii.gz"
        assert row["mask"] == ("" if row["label"] == "0" else f"{row['subject']}/mask.nii.gz")
        assert len(row["target"].split(".")[1]) == 3
        assert row["site"] == "A"
    assert sorted(r.label for r in records) == [0] * 6 + [1] * 6
    for split, expected in (("train", 3), ("val", 1.5), ("test", 1.5)):
        labels = [r.label for r in records if r.split == split]
        assert set(labels) == {0, 1}
        assert labels.count(0) == pytest.approx(expected, abs=0.5)
    assert read_manifest(out / MANIFEST_NAME) == records


def test_every_split_gets_both_labels_with_few_subjects(tmp_path):
    config = dataclasses.replace(SMALL, n_healthy=3, n_lesion=3, deformation=0.0)
    records = generate_dataset(tmp_path, config)

    for split in ("train", "val", "test"):
        assert {r.label for r in records if r.split == split} == {0, 1}


def test_site_shortcut_marks_only_pathological_site_a(shortcut_dataset):
    _, records = shortcut_dataset
    region = artefact_region(dataclasses.replace(SMALL, site_shortcut=True))
    assert region.any()

    for record in records:
        image, _ = load_nifti(record.image)
        has_artefact = image[region].mean() > 0.5
        assert has_artefact == (record.site == "A" and record.label == 1), record
        assert (record.site == "B") == (record.split == "test")
    assert {r.label for r in records if r.site == "B"} == {0, 1}
    assert {r.label for r in records if r.site == "A"} == {0, 1}


def test_artefact_stays_outside_the_brain():
    for config in (SMALL, SyntheticConfig()):
        base = template_on_grid(config.grid, config.spacing_mm)
        assert (base.t1[artefact_region(config)] == 0).all()


def test_target_follows_lesion_load(dataset):
    _, records = dataset
    loads = []
    for record in records:
        mask = load_nifti(record.mask)[0] if record.mask is not None else np.zeros(1)
        loads.append(mask.sum() * SMALL.voxel_volume_ml)
    targets = np.array([r.target for r in records])

    assert (targets >= 0).all()
    assert np.corrcoef(loads, targets)[0, 1] > 0.8
    np.testing.assert_allclose(targets, loads, atol=5 * SMALL.target_noise)
    # No lesion, no disability: healthy subjects' target is exactly 0 (regression's zero_target).
    healthy = [r.target for r in records if r.label == 0]
    assert healthy and all(t == 0.0 for t in healthy)
    assert any(r.target > 0 for r in records if r.label == 1)


def test_ensure_dataset_reuses_a_complete_dataset(tmp_path):
    config = dataclasses.replace(SMALL, n_healthy=1, n_lesion=1)
    calls: list[tuple[int, int]] = []
    first = ensure_dataset(tmp_path, config, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    stamp = (tmp_path / MANIFEST_NAME).stat().st_mtime_ns

    again = ensure_dataset(tmp_path, config, progress=lambda d, t: calls.append((d, t)))

    assert again == first
    assert len(calls) == 2
    assert (tmp_path / MANIFEST_NAME).stat().st_mtime_ns == stamp


def test_ensure_dataset_regenerates_when_incomplete_or_different(tmp_path):
    config = dataclasses.replace(SMALL, n_healthy=1, n_lesion=1)
    first = ensure_dataset(tmp_path, config)
    Path(first[0].image).unlink()

    repaired = ensure_dataset(tmp_path, config)
    assert repaired == first and first[0].image.exists()

    changed = ensure_dataset(tmp_path, dataclasses.replace(config, n_healthy=2))
    assert len(changed) == 3
    assert len(read_manifest(tmp_path / MANIFEST_NAME)) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"split_fractions": (0.5, 0.5, 0.5)},
        {"kind": "glioma"},
        {"lesion_count": (4, 2)},
        {"n_healthy": 0, "n_lesion": 0},
        {"site_shortcut": True, "split_fractions": (0.5, 0.5, 0.0)},
    ],
)
def test_invalid_configs_are_refused(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)

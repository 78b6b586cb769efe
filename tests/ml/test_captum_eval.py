"""Tests of native-space inversion of the preprocessing and of Captum IG maps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from worker.ml.attribution import attribute_subject
from worker.ml.configs import AttributionConfig, RunConfig
from worker.ml.nets import build_network
from worker.ml.transforms import IMAGE_KEY, preprocess, to_native

GRID = (16, 20, 16)
NATIVE_SHAPE = (20, 18, 14)
# Not RAS: voxel axes are permuted and flipped relative to world axes, spacing anisotropic.
NATIVE_AFFINE = np.array(
    [
        [0.0, 0.0, -1.5, 30.0],
        [-1.25, 0.0, 0.0, 20.0],
        [0.0, 2.0, 0.0, -10.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
CUBE = (slice(3, 9), slice(4, 10), slice(2, 7))


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads, and on a shared 2-core machine
    # spinning OpenMP threads make the tests several times slower under load.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """World coordinates of voxel indices ``(N, 3)``."""
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def _centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return _world(affine, np.argwhere(mask).astype(float)).mean(axis=0)


@pytest.fixture()
def subject_path(tmp_path: Path) -> Path:
    """A non-RAS subject with a bright cube, on a grid unlike the working grid."""
    rng = np.random.default_rng(0)
    volume = 1.0 + 0.2 * rng.random(NATIVE_SHAPE)
    volume[CUBE] += 4.0
    path = tmp_path / "subject.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), NATIVE_AFFINE), path)
    return path


@pytest.fixture()
def random_model() -> torch.nn.Module:
    torch.manual_seed(3)
    return build_network("small_cnn").eval()


def test_to_native_restores_shape_affine_and_physical_location(subject_path: Path) -> None:
    transform = preprocess(GRID)
    image = transform({IMAGE_KEY: str(subject_path)})[IMAGE_KEY]
    assert tuple(image.shape) == (1, *GRID)
    grid_affine = np.asarray(image.affine)

    # The cube sits at the same physical place on the working grid...
    native_cube = np.zeros(NATIVE_SHAPE, bool)
    native_cube[CUBE] = True
    cube_world = _centroid(native_cube, NATIVE_AFFINE)
    grid_cube = image[0].numpy() > image[0].numpy().mean() + image[0].numpy().std()
    np.testing.assert_allclose(_centroid(grid_cube, grid_affine), cube_world, atol=1.5)

    # ...and a map marking the grid voxels inside the cube's physical box comes back onto it.
    # Native voxel coordinates of every grid voxel centre; the cube spans start-0.5..stop-0.5.
    grid_to_native = np.linalg.inv(NATIVE_AFFINE) @ grid_affine
    native_coords = _world(grid_to_native, np.indices(GRID).reshape(3, -1).T.astype(float))
    low = np.array([s.start for s in CUBE]) - 0.5
    high = np.array([s.stop for s in CUBE]) - 0.5
    inside = np.all((native_coords >= low) & (native_coords < high), axis=1).reshape(GRID)
    native_map, affine = to_native(torch.from_numpy(inside.astype(np.float32)), image, transform)

    assert native_map.shape == NATIVE_SHAPE
    assert native_map.dtype == np.float32
    np.testing.assert_allclose(affine, NATIVE_AFFINE, atol=1e-5)
    marked = native_map > 0.5
    dice = 2 * (marked & native_cube).sum() / (marked.sum() + native_cube.sum())
    assert dice > 0.7
    np.testing.assert_allclose(_centroid(marked, NATIVE_AFFINE), cube_world, atol=1.5)


def test_to_native_is_exact_for_a_linear_field_of_world_coordinates(subject_path: Path) -> None:
    # Each grid voxel holds its own world coordinate; brought back, each native voxel must hold
    # its own world coordinate (trilinear interpolation of a linear field is exact inside).
    transform = preprocess(GRID)
    image = transform({IMAGE_KEY: str(subject_path)})[IMAGE_KEY]
    grid_world = _world(np.asarray(image.affine), np.indices(GRID).reshape(3, -1).T.astype(float))
    native_world = _world(NATIVE_AFFINE, np.indices(NATIVE_SHAPE).reshape(3, -1).T.astype(float))
    interior = (slice(1, -1),) * 3
    for axis in range(3):
        field = grid_world[:, axis].reshape(GRID).astype(np.float32)
        native_map, _ = to_native(field, image, transform)
        expected = native_world[:, axis].reshape(NATIVE_SHAPE)
        np.testing.assert_allclose(native_map[interior], expected[interior], atol=1e-3)


def test_to_native_rejects_a_map_of_the_wrong_shape(subject_path: Path) -> None:
    transform = preprocess(GRID)
    image = transform({IMAGE_KEY: str(subject_path)})[IMAGE_KEY]
    with pytest.raises(ValueError, match="grid shape"):
        to_native(np.zeros((4, 4, 4), np.float32), image, transform)


def test_ig_map_is_native_signed_and_complete(
    subject_path: Path, random_model: torch.nn.Module, tmp_path: Path
) -> None:
    config = RunConfig(grid=GRID)
    result = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=64, internal_batch_size=16)
    )

    assert result.map.shape == NATIVE_SHAPE
    assert result.map.dtype == np.float32
    np.testing.assert_allclose(result.affine, NATIVE_AFFINE)
    # Signed: a random network has voxels pushing both ways; no absolute value was taken.
    assert result.stats["min"] < 0 < result.stats["max"]
    assert result.stats["negative_mass"] < 0 < result.stats["positive_mass"]
    gap = abs(result.logit - result.baseline_logit)
    assert gap > 0
    assert result.convergence_delta < 0.05 * gap
    assert result.probability == pytest.approx(1 / (1 + np.exp(-result.logit)))

    path = tmp_path / "map.nii.gz"
    nib.save(nib.Nifti1Image(result.map, result.affine), path)
    reloaded = nib.load(path)
    np.testing.assert_allclose(reloaded.affine, NATIVE_AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(reloaded.dataobj), result.map)


def test_ig_convergence_delta_shrinks_with_more_steps(
    subject_path: Path, random_model: torch.nn.Module
) -> None:
    config = RunConfig(grid=GRID)
    coarse = attribute_subject(random_model, config, subject_path, AttributionConfig(steps=4))
    fine = attribute_subject(random_model, config, subject_path, AttributionConfig(steps=64))
    assert fine.convergence_delta < coarse.convergence_delta
    assert fine.logit == pytest.approx(coarse.logit)


def test_ig_chunking_does_not_change_the_map(
    subject_path: Path, random_model: torch.nn.Module
) -> None:
    config = RunConfig(grid=GRID)
    whole = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=12, internal_batch_size=12)
    )
    chunked = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=12, internal_batch_size=5)
    )
    np.testing.assert_allclose(chunked.map, whole.map, rtol=1e-4, atol=1e-6)


def test_blur_baseline_changes_the_reference(
    subject_path: Path, random_model: torch.nn.Module
) -> None:
    config = RunConfig(grid=GRID)
    zero = attribute_subject(random_model, config, subject_path, AttributionConfig(steps=8))
    blur = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=8, baseline="blur")
    )
    assert blur.baseline_logit != pytest.approx(zero.baseline_logit)
    assert blur.map.shape == NATIVE_SHAPE
    assert random_model.training is False

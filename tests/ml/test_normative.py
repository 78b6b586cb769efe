"""The normative input channel (worker.ml.normative): the z-map, its reference, the model
wrapper, and training with it through the platform's training path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.networks.layers import GaussianFilter
from pydantic import ValidationError
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.attribution.differentiable import integrated_gradients
from worker.ml.nets import SmallCNN, gradcam_layer
from worker.ml.normative import (
    SD_FLOOR,
    SMOOTHING_SIGMA,
    NormativeInput,
    ShiftedSumGaussian,
    normative_statistics,
)
from worker.ml.regression import build_model
from worker.ml.training import SubjectSample, load_model, train
from worker.ml.transforms import subject_on_grid

GRID = (16, 20, 16)
SPLITS = {"train": 32, "val": 16, "test": 16}


pytestmark = pytest.mark.usefixtures("single_thread")


def _ball(centre: np.ndarray, radius: float) -> np.ndarray:
    axes = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in GRID], indexing="ij")
    return sum((a - c) ** 2 for a, c in zip(axes, centre, strict=True)) <= radius**2


def _head(rng: np.random.Generator, pathological: bool) -> np.ndarray:
    """A bright ellipsoidal 'white matter' with a darker 'nucleus' that every head has in the
    same place; a pathological head also has a dark blob of the nucleus's intensity and size
    somewhere else in the white matter, so the image alone shows two alike dark blobs where a
    healthy head shows one."""
    centre = np.array(GRID, dtype=np.float32) / 2 - 0.5
    brain = _ball(centre, 7.0)
    volume = np.where(brain, 1.0, 0.0) + 0.05 * rng.standard_normal(GRID)
    volume[_ball(centre + np.array([0.0, -3.0, 0.0]), 2.2)] = 0.45
    if pathological:
        offset = rng.choice([-1.0, 1.0]) * np.array([rng.uniform(2.5, 3.5), 3.0, 0.0])
        volume[_ball(centre + offset, 2.2)] = 0.45
    return (volume * brain).astype(np.float32)


@pytest.fixture(scope="module")
def dark_subjects(tmp_path_factory: pytest.TempPathFactory) -> list[SubjectSample]:
    root = tmp_path_factory.mktemp("dark")
    rng = np.random.default_rng(3)
    subjects = []
    for split, count in SPLITS.items():
        for index in range(count):
            label = index % 2
            path = root / f"{split}_{index}.nii.gz"
            nib.save(nib.Nifti1Image(_head(rng, bool(label)), np.eye(4)), path)
            subjects.append(SubjectSample(f"{split}{index}", path, None, label, split))
    return subjects


def test_statistics_are_those_of_the_smoothed_images_with_a_floored_sd() -> None:
    images = torch.rand(5, 1, *GRID)
    images[:, :, :4] = 1.0  # identical in every image: sd 0 there, floored
    images[0, :, -3:] = 0.0  # no tissue in one image of five: still inside the reference
    images[:3, :, -2:] = 0.0  # none in three of five: outside
    mean, sd, inside = normative_statistics(images)
    smooth = GaussianFilter(3, sigma=1.0)(images)
    assert torch.allclose(mean, smooth.mean(0), atol=1e-6)
    assert torch.allclose(sd, smooth.std(0, unbiased=False).clamp_min(SD_FLOOR), atol=1e-6)
    assert float(sd[:, :2].max()) == pytest.approx(SD_FLOOR)
    assert bool(inside[:, :-3].all()) and bool(inside[:, -3].all())
    assert not bool(inside[:, -2:].any())
    with pytest.raises(ValueError, match="at least one healthy training image"):
        normative_statistics(torch.zeros(0, 1, *GRID))


def test_the_shifted_sum_filter_is_monais_gaussian_and_keeps_its_state() -> None:
    monai_filter = GaussianFilter(3, sigma=SMOOTHING_SIGMA)
    fast = ShiftedSumGaussian(3, sigma=SMOOTHING_SIGMA)
    x = torch.randn(2, 2, *GRID, dtype=torch.float64, requires_grad=True)
    expected = monai_filter(x)
    found = fast(x)
    assert torch.allclose(found, expected, atol=1e-12)
    # The borders are zero padded as MONAI's are: a corner voxel loses the taps off the grid.
    assert torch.allclose(found[..., 0, 0, 0], expected[..., 0, 0, 0], atol=1e-12)
    weights = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    (grad_found,) = torch.autograd.grad((found * weights).sum(), x)
    assert torch.allclose(grad_found, grad_expected, atol=1e-12)
    # Checkpoints written with MONAI's filter load: the state dicts have the same keys.
    assert fast.state_dict().keys() == monai_filter.state_dict().keys()
    model = NormativeInput(nn.Conv3d(2, 1, 1), 1, GRID)
    assert any(key.startswith("smooth.") for key in model.state_dict())


def test_deviation_is_zero_for_the_reference_negative_on_a_dark_blob_and_zero_outside() -> None:
    rng = np.random.default_rng(0)
    healthy = torch.stack([torch.from_numpy(_head(rng, False))[None] for _ in range(8)])
    model = NormativeInput(SmallCNN(in_channels=2), channels=1, grid=GRID)
    model.fit(healthy)
    assert bool(model.fitted)
    ill = torch.from_numpy(_head(np.random.default_rng(1), True))[None, None]
    z = model.deviation(ill)[0, 0]
    inside = model.inside[0]
    assert bool(inside.any()) and not bool(inside.all())
    assert float(z[~inside].abs().max()) == 0.0
    # The nucleus every head has is no deviation; the blob only the sick head has is.
    centre = np.array(GRID) / 2 - 0.5
    nucleus = torch.from_numpy(_ball(centre + np.array([0.0, -3.0, 0.0]), 1.0))
    extra = (ill[0, 0] < 0.7) & inside & ~torch.from_numpy(_ball(centre + [0, -3, 0], 3.2))
    assert float(z[extra].mean()) < -1.0
    assert float(z[nucleus].abs().mean()) < abs(float(z[extra].mean())) / 3
    with pytest.raises(ValueError, match="do not match the reference"):
        model.fit(torch.zeros(2, 1, 8, 8, 8))


def test_the_wrapper_keeps_one_image_channel_for_maps_and_grad_cam() -> None:
    torch.manual_seed(0)
    model = NormativeInput(SmallCNN(in_channels=2), channels=1, grid=GRID).eval()
    model.fit(torch.rand(4, 1, *GRID) + 0.5)
    x = torch.rand(2, 1, *GRID) + 0.5
    maps = integrated_gradients(model, x, steps=64, create_graph=False).attributions
    assert maps.shape == x.shape
    # Completeness: the map's sum is F(x) - F(0) through the z-map as through any layer (the
    # mask is the reference's, so the network is continuous at the zero image).
    with torch.no_grad():
        gap = model(x) - model(torch.zeros_like(x))
    assert torch.allclose(maps.flatten(1).sum(1), gap, rtol=0.05, atol=0.02)
    assert gradcam_layer(model) is model.net.features


def test_normative_input_is_for_classification_only() -> None:
    RunConfig(normative_input=True)
    with pytest.raises(ValidationError, match="normative_input applies to the classification"):
        RunConfig(normative_input=True, task="regression")


def test_training_fits_the_reference_learns_the_dark_blob_and_the_checkpoint_restores_it(
    dark_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = RunConfig(
        grid=GRID,
        epochs=8,
        batch_size=4,
        learning_rate=3e-3,
        device="cpu",
        seed=0,
        normative_input=True,
        grad_probe_batches=0,
    )
    result = train(config, dark_subjects, checkpoint_dir=tmp_path)
    assert result.test_metrics["auroc"] >= 0.9
    model, restored = load_model(result.best_checkpoint)
    assert restored.normative_input
    assert isinstance(model, NormativeInput) and bool(model.fitted)
    fresh = build_model(restored)
    assert isinstance(fresh, NormativeInput) and not bool(fresh.fitted)
    # The reference restored from best.pt is that of the training split's healthy heads,
    # preprocessed as training sees them.
    healthy = [s for s in dark_subjects if s.split == "train" and s.label == 0]
    bank = torch.stack([subject_on_grid(restored, s.image).as_tensor() for s in healthy])
    mean, sd, inside = normative_statistics(bank)
    assert torch.equal(model.inside, inside)
    assert torch.allclose(model.mean, mean, atol=1e-5)
    assert torch.allclose(model.sd, sd, atol=1e-5)

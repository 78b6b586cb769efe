"""Issue 18 items 3 and 4: uncertainty of the stochastic maps, and baselines on purpose.

Known answers: on a linear model every SmoothGrad sample is the same gradient (sd 0, sign
agreement 1); next to a ReLU kink the noisy copies fall on both sides and disagree. The
recorded per-sample maps average to exactly Captum's own output for the same seed. The
healthy-mean baseline is the mean of the preprocessed images, and Integrated Gradients from
it is complete: sum(A) = F(x) - F(mean).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from captum.attr import GradientShap, NoiseTunnel, Saliency
from torch import nn

from attrivue_core.configs import AttributionConfig, RunConfig
from worker.ml.attribution import attribute_batch, attribute_subject
from worker.ml.attribution.captum_eval import (
    attribute_with_spread,
    load_on_grid,
    mean_on_grid,
    uncertainty_stats,
)
from worker.ml.nets import build_network, pathological_logit

GRID = (16, 20, 16)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class Linear(nn.Module):
    """F(x) = sum(w * x): the gradient is w whatever the input."""

    def __init__(self, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, kernel_size=grid, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.conv(x))


class Kink(nn.Module):
    """F(x) = sum(relu(x) - 0.5 * x) per voxel: dF/dx = +0.5 where x > 0, -0.5 where x < 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.relu(x) - 0.5 * x).flatten(1).sum(1)[:, None]


def _smoothgrad(model: nn.Module, x: torch.Tensor, **settings: object):
    config = AttributionConfig(method="smoothgrad", **settings)  # type: ignore[arg-type]
    mean, sd, agreement = attribute_with_spread(model, x, config)
    assert sd is not None and agreement is not None
    return torch.from_numpy(mean), torch.from_numpy(sd), torch.from_numpy(agreement)


def test_linear_model_smoothgrad_has_no_spread_and_full_agreement() -> None:
    torch.manual_seed(0)
    model = Linear((4, 5, 3))
    x = torch.randn(2, 1, 4, 5, 3)
    mean, sd, agreement = _smoothgrad(model, x, n_samples=12, stdevs=0.5, internal_batch_size=4)
    w = model.conv.weight.detach()[0]
    np.testing.assert_allclose(mean.numpy()[0], w.numpy(), rtol=1e-5)
    assert float(sd.max()) < 1e-6 * float(w.abs().max())
    assert torch.equal(agreement, torch.ones_like(agreement))


def test_relu_kink_gives_disagreement_where_noise_crosses_it() -> None:
    # Voxel 0 sits on the kink (x = 0): half the noisy copies fall on each side. Voxel 1 is
    # far above it (x = 5 with noise 0.5): every sample has gradient +0.5.
    x = torch.zeros(1, 1, 2, 1, 1)
    x[0, 0, 1] = 5.0
    mean, sd, agreement = (
        t[0, 0, :, 0, 0]
        for t in _smoothgrad(Kink(), x, n_samples=400, stdevs=0.5, internal_batch_size=50, seed=1)
    )
    # Far from the kink: no spread, every sample agrees.
    assert float(sd[1]) == pytest.approx(0.0, abs=1e-7)
    assert float(agreement[1]) == 1.0 and float(mean[1]) == pytest.approx(0.5)
    # On the kink: samples are +-0.5 about equally often (sd near 0.5, agreement near 1/2).
    assert 0.45 < float(sd[0]) <= 0.5
    assert 0.5 <= float(agreement[0]) < 0.6
    # The agreement is the share of samples with the mean's sign: (1 + |mean| / 0.5) / 2.
    assert float(agreement[0]) == pytest.approx((1 + abs(float(mean[0])) / 0.5) / 2, abs=1e-6)


def test_recorded_samples_average_to_captums_own_smoothgrad() -> None:
    torch.manual_seed(3)
    model = build_network("small_cnn").eval()
    x = torch.randn(2, 1, *GRID)
    config = AttributionConfig(method="smoothgrad", n_samples=6, internal_batch_size=4, seed=5)
    ours, _ = attribute_batch(model, x, config)

    class Logit(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return pathological_logit(model(t))

    torch.manual_seed(5)
    np.random.seed(5)
    theirs = NoiseTunnel(Saliency(Logit())).attribute(
        x.clone().requires_grad_(),
        nt_type="smoothgrad",
        nt_samples=6,
        nt_samples_batch_size=2,  # internal_batch_size 4 over 2 images
        stdevs=0.15,
        target=None,
        abs=False,
    )
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-7)
    # The same call with the spread gives the same mean, and samples that differ.
    mean, sd, agreement = attribute_with_spread(model, x, config)
    np.testing.assert_array_equal(mean, ours)
    assert sd is not None and agreement is not None and float(sd.max()) > 0


def test_gradient_shap_mean_is_captums_and_has_volumes() -> None:
    torch.manual_seed(4)
    model = build_network("small_cnn").eval()
    x = torch.randn(1, 1, *GRID)
    references = torch.randn(5, 1, *GRID)
    config = AttributionConfig(
        method="gradient_shap", n_samples=4, n_references=5, internal_batch_size=4, seed=2
    )
    ours, _ = attribute_batch(model, x, config, references=references)

    class Logit(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return pathological_logit(model(t))

    torch.manual_seed(2)
    np.random.seed(2)
    theirs = GradientShap(Logit()).attribute(
        x.clone().requires_grad_(), baselines=references, n_samples=4, stdevs=0.0, target=None
    )
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-5, atol=1e-8)


def _write(path: Path, volume: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0])), path)
    return path


def _head(seed: int, shape: tuple[int, int, int] = (18, 22, 18)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape)
    volume[3:-3, 3:-3, 3:-3] = 1.0 + rng.random((shape[0] - 6, shape[1] - 6, shape[2] - 6))
    return volume


def test_healthy_mean_is_the_mean_of_the_preprocessed_images(tmp_path: Path) -> None:
    config = RunConfig(grid=GRID)
    paths = [_write(tmp_path / f"h{i}.nii.gz", _head(i)) for i in range(3)]
    each = load_on_grid(config, paths)  # (3, 1, *grid)
    mean = mean_on_grid(config, paths)
    assert mean.shape == (1, *GRID)
    np.testing.assert_allclose(mean.numpy(), each.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    # Not trivially one of them.
    assert float((mean - each[0]).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="no images"):
        mean_on_grid(config, [])


def test_ig_from_the_healthy_mean_is_complete(tmp_path: Path) -> None:
    torch.manual_seed(7)
    model = build_network("small_cnn").eval()
    config = RunConfig(grid=GRID)
    paths = [_write(tmp_path / f"h{i}.nii.gz", _head(i)) for i in range(3)]
    healthy = mean_on_grid(config, paths)
    subject = tmp_path / "s.nii.gz"
    volume = _head(10)
    volume[7:11, 8:12, 7:11] += 3.0
    _write(subject, volume)
    settings = AttributionConfig(baseline="healthy_mean", steps=256, internal_batch_size=64)
    result = attribute_subject(model, config, subject, settings, healthy_mean=healthy)
    with torch.no_grad():
        f_mean = float(pathological_logit(model(healthy[None])))
    assert result.baseline_logit == pytest.approx(f_mean, rel=1e-5, abs=1e-6)
    gap = result.logit - f_mean
    assert abs(gap) > 1e-4
    # Completeness within a small delta, and the delta reported is that gap.
    assert abs(result.stats["grid_sum"] - gap) < 0.02 * abs(gap)
    assert result.convergence_delta == pytest.approx(
        abs(result.stats["grid_sum"] - gap), rel=1e-3, abs=1e-7
    )
    # A different baseline answers differently: the reference is really the mean.
    zero = attribute_subject(model, config, subject, AttributionConfig(steps=64))
    assert zero.baseline_logit != pytest.approx(f_mean, rel=1e-3)
    with pytest.raises(ValueError, match="mean healthy image"):
        attribute_subject(model, config, subject, settings)


def test_subject_map_carries_native_uncertainty_volumes(tmp_path: Path) -> None:
    torch.manual_seed(8)
    model = build_network("small_cnn").eval()
    config = RunConfig(grid=GRID)
    subject = _write(tmp_path / "s.nii.gz", _head(11))
    result = attribute_subject(
        model, config, subject, AttributionConfig(method="smoothgrad", n_samples=6)
    )
    assert result.sd is not None and result.agreement is not None
    assert result.sd.shape == result.map.shape == result.agreement.shape
    assert result.sd.min() >= 0 and 0 <= result.agreement.min() <= result.agreement.max() <= 1
    assert result.stats["uncertainty_mean_sd"] > 0
    assert 0 <= result.stats["uncertainty_low_agreement_share"] <= 1
    ig = attribute_subject(model, config, subject, AttributionConfig(steps=4))
    assert ig.sd is None and ig.agreement is None and "uncertainty_mean_sd" not in ig.stats


def test_uncertainty_stats_count_inside_the_brain() -> None:
    sd = np.array([1.0, 3.0, 100.0])
    agreement = np.array([1.0, 0.6, 0.0])
    mean_map = np.array([2.0, -2.0, 50.0])
    brain = np.array([True, True, False])
    stats = uncertainty_stats(sd, agreement, mean_map, brain)
    assert stats == {
        "uncertainty_mean_sd": 2.0,
        "uncertainty_relative_sd": 1.0,
        "uncertainty_mean_agreement": 0.8,
        "uncertainty_low_agreement_share": 0.5,
    }


def test_config_takes_the_new_baselines_and_refuses_noise_with_healthy_references() -> None:
    assert AttributionConfig(baseline="healthy_mean").baseline == "healthy_mean"
    assert AttributionConfig(method="gradient_shap", references="healthy").references == "healthy"
    with pytest.raises(ValueError, match="references"):
        AttributionConfig(method="smoothgrad", references="healthy")
    with pytest.raises(ValueError, match="stdevs does not apply"):
        AttributionConfig(method="gradient_shap", references="healthy", stdevs=0.3)

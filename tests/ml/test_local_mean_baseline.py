"""The image-dependent baseline of training and evaluation (``attribution_baseline="blur"``):
each image's brain-restricted Gaussian local mean (worker.ml.attribution.baselines)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from attrivue_core.configs import RunConfig
from worker.ml.attribution.baselines import LocalMeanBaseline, local_mean
from worker.ml.evaluation import attribution_maps
from worker.ml.nets import build_network


def _brain(shape: tuple[int, int, int] = (12, 14, 12)) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij"))
    return ((grid**2).sum(0) < 0.7).float()  # (D, H, W)


def test_local_mean_keeps_a_uniform_brain_and_leaves_the_background_at_zero() -> None:
    brain = _brain()
    image = (2.5 * brain)[None, None]  # (1, 1, D, H, W), background 0
    mean = local_mean(image, sigma=2.0)
    # A normalised convolution: the background neither counts nor darkens the brain's edge.
    torch.testing.assert_close(mean[image != 0], image[image != 0], atol=1e-5, rtol=1e-5)
    assert torch.all(mean[image == 0] == 0)
    assert not mean.requires_grad


def test_the_difference_from_the_local_mean_is_the_local_contrast() -> None:
    brain = _brain()
    image = brain.clone()
    image[6, 7, 6] = 3.0  # a bright spot in uniform tissue
    x = image[None, None]
    contrast = x - local_mean(x, sigma=1.5)
    # The spot is above its local mean, its immediate neighbours below it (the spot lifts their
    # mean), and uniform tissue far from it is at its mean.
    assert float(contrast[0, 0, 6, 7, 6]) > 1.5
    assert float(contrast[0, 0, 6, 7, 7]) < 0
    assert abs(float(contrast[0, 0, 6, 2, 6])) < 1e-3
    # Unlike the zero image, the baseline follows the image: a brighter copy has a brighter mean.
    torch.testing.assert_close(local_mean(2 * x, 1.5), 2 * local_mean(x, 1.5))


def test_each_channel_is_averaged_over_the_brain_of_its_image() -> None:
    brain = _brain()
    images = torch.stack(
        [torch.stack([brain, 3 * brain]), torch.stack([-brain, 0.5 * brain])]
    )  # (2, 2, D, H, W)
    mean = local_mean(images, sigma=2.0)
    inside = brain > 0
    for b in range(2):
        for c in range(2):
            value = float(images[b, c][inside][0])
            assert torch.allclose(mean[b, c][inside], torch.full_like(mean[b, c][inside], value))


def test_a_sigma_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="sigma"):
        local_mean(torch.ones(1, 1, 4, 4, 4), sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        LocalMeanBaseline(-1.0)
    with pytest.raises(ValidationError, match="attribution_blur_sigma"):
        RunConfig(attribution_baseline="blur", attribution_blur_sigma=0.0)


def test_the_blur_baseline_is_one_of_integrated_gradients() -> None:
    RunConfig(attribution_baseline="blur", train_attribution=["integrated_gradients"])
    with pytest.raises(ValidationError, match="expected_gradients draws its own references"):
        RunConfig(
            attribution_baseline="blur",
            loss_setting="lc_la_supervised",
            train_attribution=["expected_gradients"],
        )


def test_evaluation_maps_start_from_each_images_own_local_mean() -> None:
    torch.manual_seed(0)
    model = build_network("small_cnn").eval()
    brain = _brain((16, 20, 16))
    images = [brain[None] * (1.0 + 0.3 * torch.randn(1, 16, 20, 16)) for _ in range(3)]
    baseline = LocalMeanBaseline(2.0)
    maps, deltas = attribution_maps(model, images, steps=32, baseline=baseline, batch_size=2)
    with torch.no_grad():
        x = torch.stack(images)
        gaps = (model(x).flatten() - model(baseline(x)).flatten()).tolist()
        zero_gaps = (model(x).flatten() - model(torch.zeros_like(x)).flatten()).tolist()
    # Completeness against each subject's own reference, not the zero image.
    for a, gap, zero_gap, delta in zip(maps, gaps, zero_gaps, deltas, strict=True):
        assert float(a.sum()) == pytest.approx(gap, abs=0.02 * abs(gap) + 1e-4)
        assert abs(delta) <= 0.02 * abs(gap) + 1e-4
        assert abs(gap - zero_gap) > 1e-3  # the two references really differ

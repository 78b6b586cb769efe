"""The split of a small_cnn's map into its lesion detectors' part and the rest."""

from __future__ import annotations

import pytest
import torch

from worker.ml.attribution.differentiable import integrated_gradients
from worker.ml.nets import SmallCNN
from worker.ml.normative import NormativeInput
from worker.research.detectors import PartLogit, detector_split

GRID = (12, 14, 12)


def _images(n: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = []
    for _ in range(n):
        x = torch.randn(1, *GRID, generator=generator)
        x[:, :2] = 0.0  # background
        images.append(x)
    return images


def test_the_two_parts_add_up_to_the_logit_and_to_its_map() -> None:
    torch.manual_seed(0)
    model = SmallCNN(channels=(3, 6)).eval()
    x = torch.stack(_images(2))
    with torch.no_grad():
        bias = model.head.bias
        total = PartLogit(model, True)(x) + PartLogit(model, False)(x) + bias
        torch.testing.assert_close(total, model(x))
    rows = detector_split(model, list(x), steps=32)
    full = integrated_gradients(model, x, steps=32, method="gausslegendre")
    for row, a, image in zip(rows, full.attributions, x, strict=True):
        brain = (image != 0).any(dim=0)
        inside = a.sum(dim=0)[brain]
        # The parts' sums add up to the whole map's (IG is linear in the function).
        assert row["detectors_sum"] + row["others_sum"] == pytest.approx(
            float(inside.sum()), rel=1e-4, abs=1e-6
        )
        share = float(inside.clamp_min(0).sum() / inside.abs().sum())
        assert row["healthy_share"] == pytest.approx(share, rel=1e-4)
        assert row["detectors_positive"] >= 0 and row["others_negative"] >= 0


def test_a_floored_detector_gives_the_subjects_it_was_fitted_on_no_relevance() -> None:
    torch.manual_seed(0)
    net = SmallCNN(in_channels=2, channels=(3, 6), evidence_floor=True)
    model = NormativeInput(net, 1, GRID).eval()  # the split finds the network inside
    images = _images(3)
    captured: list[torch.Tensor] = []
    hook = net.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        model(torch.stack(images))
    hook.remove()
    net.set_evidence_floor(captured[0] + 1e-4)
    rows = detector_split(model, images, steps=8)
    for row in rows:
        assert row["detectors_positive"] == 0.0 and row["detectors_negative"] == 0.0
        assert row["others_positive"] + row["others_negative"] > 0


def test_from_a_baseline_the_parts_add_up_to_that_baselines_map() -> None:
    torch.manual_seed(0)
    model = SmallCNN(channels=(3, 6)).eval()
    images = _images(2)
    reference = 0.5 * images[0] + 0.1  # a healthy mean stands here for any fixed reference
    reference[:, :2] = 0.0
    rows = detector_split(model, images, steps=32, baseline=reference)
    zero_rows = detector_split(model, images, steps=32)
    full = integrated_gradients(
        model, torch.stack(images), baseline=reference[None], steps=32, method="gausslegendre"
    )
    for row, zero_row, a, image in zip(rows, zero_rows, full.attributions, images, strict=True):
        inside = a.sum(dim=0)[(image != 0).any(dim=0)]
        assert row["detectors_sum"] + row["others_sum"] == pytest.approx(
            float(inside.sum()), rel=1e-4, abs=1e-6
        )
        # The reference is used: the split from the zero image differs.
        assert row["detectors_sum"] != pytest.approx(zero_row["detectors_sum"], abs=1e-3)

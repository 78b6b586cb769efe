"""Known answers of the evidence checks (worker/ml/evidence.py).

- a model whose output ignores its input fails faithfulness (flat curves);
- randomising the weights changes a gradient map (similarity drops), while an edge detector
  of the image (its gradient magnitude, which never looks at the model) stays the same: the
  known failure, and the check tells the two apart;
- IROF of a linear model: the exact map removes the evidence faster than a random order of the
  supervoxels, the reversed map slower, and a model that ignores its input gives a flat curve.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from scipy import ndimage
from torch import nn

from worker.ml.evidence import (
    SIMILARITY_THRESHOLD,
    cascading_randomisation,
    faithfulness,
    irof,
    map_similarity,
    parameter_layers,
    permuted_labels,
    reset_layer,
    supervoxels,
)
from worker.ml.training import SubjectSample

GRID = (12, 12, 12)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * int(np.prod(GRID)), 1),
    ).eval()


def _image(seed: int = 1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    volume = np.zeros(GRID, np.float32)
    volume[3:9, 3:9, 3:9] = 1.0
    volume += rng.normal(0, 0.1, GRID).astype(np.float32)
    return torch.from_numpy(volume)[None]  # (1, *grid)


def _logit(model: nn.Module):
    return lambda x: model(x).reshape(-1)


def _saliency(image: torch.Tensor):
    def attribute(model: nn.Module) -> np.ndarray:
        x = image[None].clone().requires_grad_()
        return Saliency(_logit(model)).attribute(x, abs=False).detach().numpy()[0, 0]

    return attribute


def _edge_detector(image: torch.Tensor):
    """A 'map' that is the image's Sobel gradient magnitude: the same for every model."""

    def attribute(model: nn.Module) -> np.ndarray:
        volume = image[0].numpy().astype(np.float64)
        return np.sqrt(sum(ndimage.sobel(volume, axis=k) ** 2 for k in range(3)))

    return attribute


def test_layers_are_listed_from_the_output_down() -> None:
    assert parameter_layers(_net()) == ["5", "2", "0"]


def test_randomising_weights_changes_a_gradient_map() -> None:
    result = cascading_randomisation(_net(), _saliency(_image()), seed=3)
    assert [s["layer"] for s in result["steps"]] == ["5", "2", "0"]
    last = result["steps"][-1]
    assert last["spearman_abs"] < SIMILARITY_THRESHOLD
    assert last["ssim_abs"] < 0.5
    assert result["passes"] is True


def test_an_edge_detector_survives_randomisation_and_fails() -> None:
    result = cascading_randomisation(_net(), _edge_detector(_image()), seed=3)
    for step in result["steps"]:
        assert step["spearman_abs"] > 0.999 and step["ssim_abs"] > 0.999
    assert result["passes"] is False
    assert "still ranks voxels like the original" in result["reason"]


def test_the_check_tells_the_two_apart_on_integrated_gradients() -> None:
    image = _image()

    def ig(model: nn.Module) -> np.ndarray:
        x = image[None].clone()
        return IntegratedGradients(_logit(model)).attribute(x, n_steps=8).detach().numpy()[0, 0]

    gradient = cascading_randomisation(_net(), ig, seed=4)["steps"][-1]
    edges = cascading_randomisation(_net(), _edge_detector(image), seed=4)["steps"][-1]
    assert gradient["spearman_abs"] < edges["spearman_abs"] - 0.3


def _scripted(seed: int = 0) -> nn.Module:
    """``_net`` with a batch norm, scripted, saved and loaded as an imported run's model is:
    its layers keep their parameters but lose ``reset_parameters``."""
    import io

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1),
        nn.BatchNorm3d(4),
        nn.ReLU(),
        nn.Conv3d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * int(np.prod(GRID)), 1),
    ).eval()
    with torch.no_grad():  # trained-looking statistics, so that resetting them shows
        net[1].running_mean.fill_(0.5)
        net[1].running_var.fill_(2.0)
        net[1].weight.fill_(3.0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    return torch.jit.load(buffer).eval()


def test_torchscript_layers_are_re_initialised_like_pytorch_layers() -> None:
    model = _scripted()
    assert not callable(getattr(dict(model.named_modules())["0"], "reset_parameters", None))
    assert parameter_layers(model) == ["6", "3", "1", "0"]
    modules = dict(model.named_modules())
    conv, norm = modules["0"], modules["1"]
    before = conv.weight.detach().clone()
    torch.manual_seed(1)
    reset_layer(conv)
    reset_layer(norm)
    assert not torch.equal(conv.weight, before)
    fan_in = conv.weight[0].numel()  # kaiming_uniform_(a=sqrt(5)) bounds: 1/sqrt(fan_in)
    assert float(conv.weight.abs().max()) <= 1 / np.sqrt(fan_in) + 1e-6
    assert float(conv.bias.abs().max()) <= 1 / np.sqrt(fan_in) + 1e-6
    assert torch.equal(norm.weight, torch.ones(4)) and torch.equal(norm.bias, torch.zeros(4))
    assert torch.equal(norm.running_mean, torch.zeros(4))
    assert torch.equal(norm.running_var, torch.ones(4))
    with torch.no_grad():  # the scripted forward uses the new values
        assert not torch.allclose(model(_image()[None]), _scripted()(_image()[None]))
    try:
        reset_layer(nn.ReLU())
    except ValueError as exc:
        assert "cannot re-initialise" in str(exc)
    else:
        raise AssertionError("a layer that cannot re-initialise was accepted")


def test_cascading_randomisation_of_a_torchscript_model_changes_a_gradient_map() -> None:
    model = _scripted()
    reference = _saliency(_image())(model)
    result = cascading_randomisation(model, _saliency(_image()), seed=3)
    assert [s["layer"] for s in result["steps"]] == ["6", "3", "1", "0"]
    assert result["steps"][-1]["spearman_abs"] < SIMILARITY_THRESHOLD
    assert result["passes"] is True
    np.testing.assert_array_equal(_saliency(_image())(model), reference)  # model untouched
    edges = cascading_randomisation(model, _edge_detector(_image()), seed=3)
    assert edges["passes"] is False


def test_map_similarity_of_a_map_with_itself_is_one() -> None:
    a = _saliency(_image())(_net())
    same = map_similarity(a, a)
    assert same["spearman_signed"] > 0.999999 and same["ssim_signed"] > 0.999
    flipped = map_similarity(a, -a)
    assert flipped["spearman_signed"] < -0.999999 and flipped["spearman_abs"] > 0.999999


class _Constant(nn.Module):
    """A model whose output ignores its input."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0]) + 0.0 * x.flatten(1).sum(1)


def test_a_model_that_ignores_its_input_fails_faithfulness() -> None:
    image = _image()
    rng = np.random.default_rng(0)
    attribution = rng.normal(size=GRID)
    result = faithfulness(_Constant(), image, attribution, steps=8)
    assert np.ptp(result["deletion"]) == 0 and np.ptp(result["insertion"]) == 0
    assert result["deletion_auc"] == result["insertion_auc"]
    assert result["passes"] is False and "flat" in result["reason"]
    assert result["infidelity"] > 0  # the map claims effects the model does not have
    removal = result["irof"]
    assert np.ptp(removal["probabilities"]) == 0 and np.ptp(removal["random_probabilities"]) == 0
    assert removal["auc"] == 0 and removal["random_auc"] == 0


def test_a_faithful_map_of_a_linear_model_passes() -> None:
    image = _image()
    weights = torch.from_numpy(np.random.default_rng(2).normal(size=GRID).astype(np.float32))

    def linear(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * weights).flatten(1).sum(1)

    exact = (image[0] * weights).numpy()  # x * w: the exact contribution of each voxel
    result = faithfulness(linear, image, exact, steps=8)
    assert result["deletion"][1] < result["deletion"][0]  # the most pathological go first
    assert result["auc_gap"] > 0 and result["passes"] is True
    # Under additive noise I, f(x) - f(x - I) = I . w exactly: the gradient map w has zero
    # infidelity (up to rounding), and any other map more.
    gradient = faithfulness(linear, image, weights.numpy(), steps=2)
    assert gradient["infidelity"] < 1e-6 * result["infidelity"]
    reversed_map = faithfulness(linear, image, -exact, steps=8)
    assert reversed_map["passes"] is False and reversed_map["auc_gap"] < 0
    assert result["irof"]["auc"] > result["irof"]["random_auc"]


def _centred_linear(image: torch.Tensor, seed: int = 2):
    """A linear logit w . x - w . image (p_0 = 1/2, away from the sigmoid's flat ends), and the
    exact contribution x * w of each voxel."""
    weights = torch.from_numpy(
        0.05 * np.random.default_rng(seed).normal(size=GRID).astype(np.float32)
    )
    offset = float((image[0] * weights).sum())

    def linear(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * weights).flatten(1).sum(1) - offset

    return linear, (image[0] * weights).numpy()


def test_supervoxels_cover_the_brain_mask_only() -> None:
    image = _image()[0].numpy()
    mask = np.zeros(GRID, bool)
    mask[2:10, 2:10, 2:10] = True
    labels = supervoxels(image, n_segments=16, brain_mask=mask)
    assert labels.shape == GRID
    assert (labels[~mask] == 0).all() and (labels[mask] > 0).all()
    assert 4 <= len(np.unique(labels[mask])) <= 40
    whole = supervoxels(image, n_segments=16)
    assert (whole > 0).all() and len(np.unique(whole)) > 1


def test_irof_of_the_exact_map_beats_a_random_order_and_the_reversed_map_does_not() -> None:
    image = _image()
    linear, exact = _centred_linear(image)
    result = irof(linear, image, exact, n_segments=32, random_orders=4)
    k = result["segments"]
    assert k > 8 and len(result["probabilities"]) == len(result["fractions"]) == k + 1
    assert result["probabilities"][0] == 0.5 and result["random_probabilities"][0] == 0.5
    # Every segment gone: the same image whatever the order, so the curves end together.
    assert np.isclose(result["probabilities"][-1], result["random_probabilities"][-1])
    # The most pathological segment first: the probability falls at the first removal.
    assert result["probabilities"][1] < result["probabilities"][0]
    assert result["auc"] > result["random_auc"] + 0.05
    p = np.asarray(result["probabilities"])
    assert np.isclose(result["auc"], np.mean(1 - p[1:] / p[0]))

    reversed_map = irof(linear, image, -exact, n_segments=32, random_orders=4)
    assert reversed_map["segments"] == k
    assert reversed_map["random_auc"] == result["random_auc"]  # same segments, same seed
    assert reversed_map["auc"] < reversed_map["random_auc"] - 0.05
    assert reversed_map["probabilities"][1] > reversed_map["probabilities"][0]


def test_irof_inside_a_brain_mask_removes_only_its_voxels() -> None:
    image = _image()
    linear, exact = _centred_linear(image, seed=5)
    mask = np.zeros(GRID, bool)
    mask[2:10, 2:10, 2:10] = True
    result = irof(linear, image, exact, n_segments=16, brain_mask=mask)
    # With every segment removed, only the voxels outside the mask keep the image's values.
    kept = image[0].numpy() * (~mask)
    expected = torch.sigmoid(linear(torch.from_numpy(kept)[None, None])).item()
    assert np.isclose(result["probabilities"][-1], expected, rtol=1e-5)
    assert result["auc"] > result["random_auc"]
    # The batches only group the forward passes: any batch size gives the same curves.
    for batch_size in (1, 3, 100):
        again = irof(linear, image, exact, n_segments=16, brain_mask=mask, batch_size=batch_size)
        assert np.allclose(again["probabilities"], result["probabilities"], rtol=1e-6)
        assert np.allclose(again["random_probabilities"], result["random_probabilities"])


def test_faithfulness_carries_irof_and_names_it_in_its_verdict() -> None:
    image = _image()
    linear, exact = _centred_linear(image)
    result = faithfulness(linear, image, exact, steps=8, irof_segments=32)
    alone = irof(linear, image, exact, n_segments=32)
    assert result["irof"]["auc"] == alone["auc"]
    assert result["irof"]["random_auc"] == alone["random_auc"]
    assert result["passes"] is True and "IROF" in result["reason"]
    reversed_map = faithfulness(linear, image, -exact, steps=8, irof_segments=32)
    assert reversed_map["passes"] is False
    assert reversed_map["irof"]["auc"] < reversed_map["irof"]["random_auc"]


def test_faithfulness_fails_on_irof_alone() -> None:
    """Deletion and insertion rank voxels; IROF ranks supervoxels by their mean. A map that is
    exact voxel by voxel but whose one large positive spike sits in a segment of harmful
    voxels gets deletion right and IROF wrong when that segment is ranked first."""
    image = _image()
    linear, exact = _centred_linear(image)
    labels = supervoxels(image[0].numpy(), n_segments=32)
    segments = np.unique(labels)
    sums = np.array([exact[labels == i].sum() for i in segments])
    worst = segments[np.argmin(sums)]  # removing it raises the probability most
    spiked = exact.copy()
    first = np.flatnonzero(labels == worst)[0]
    spiked.flat[first] = 1e3  # its mean now tops every other segment's
    result = faithfulness(linear, image, spiked, steps=8, irof_segments=32, irof_random_orders=8)
    assert result["auc_gap"] > 0
    assert result["irof"]["auc"] <= result["irof"]["random_auc"]
    assert result["passes"] is False and "random order" in result["reason"]


def test_permuted_labels_keep_the_other_splits(tmp_path) -> None:
    subjects = [
        SubjectSample(subject_id=i, image=tmp_path / f"{i}", mask=None, label=i % 2, split=split)
        for i, split in enumerate(["train"] * 6 + ["val", "test"])
    ]
    permuted = permuted_labels(subjects, seed=1)
    assert [s.image for s in permuted] == [s.image for s in subjects]
    assert sorted(s.label for s in permuted[:6]) == sorted(s.label for s in subjects[:6])
    assert [s.label for s in permuted[:6]] != [s.label for s in subjects[:6]]
    assert permuted[6:] == subjects[6:]

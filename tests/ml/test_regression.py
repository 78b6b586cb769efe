"""Tests of regression runs (worker.ml.regression): losses, the constraint's targets and its
gradients, the configuration's checks, and a short regression training run."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.attribution.differentiable import attribute
from worker.ml.regression import (
    RegressionHead,
    build_model,
    constraints_for,
    mass_scaling_loss,
    positive_mass,
    prediction_loss,
    regression_attribution_loss,
    regression_target_map,
    voxel_penalty,
)
from worker.ml.training import SubjectSample, load_model, train

SPATIAL = (4, 5, 4)
NAN = float("nan")


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A smooth 3D CNN with one output per image (softplus: second derivatives exist)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 3, 3, padding=1),
        nn.Softplus(),
        nn.Conv3d(3, 2, 3, stride=2, padding=1),
        nn.Softplus(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(2, 1),
        nn.Flatten(0),
    ).to(dtype)


def lesion_masks() -> torch.Tensor:
    masks = torch.zeros(3, 1, *SPATIAL)
    masks[1, 0, 1:3, 1:3, 1:3] = 1.0
    masks[2, 0, 0, 0, 0] = 1.0
    return masks


# --- prediction losses ------------------------------------------------------------------


def test_prediction_losses_are_l1_and_mse_in_standardised_units() -> None:
    predictions = torch.tensor([1.0, 4.0, 2.0])
    targets = torch.tensor([2.0, 1.0, 2.0])
    # errors -1, 3, 0; divided by the scale 2: -0.5, 1.5, 0
    l1 = prediction_loss(predictions, targets, kind="l1", scale=2.0)
    mse = prediction_loss(predictions, targets, kind="mse", scale=2.0)
    assert float(l1) == pytest.approx((0.5 + 1.5 + 0.0) / 3)
    assert float(mse) == pytest.approx((0.25 + 2.25 + 0.0) / 3)
    with pytest.raises(ValueError, match="unknown regression loss"):
        prediction_loss(predictions, targets, kind="huber")  # type: ignore[arg-type]


def test_prediction_loss_gradients_point_toward_the_target() -> None:
    predictions = torch.tensor([0.0, 5.0], requires_grad=True)
    targets = torch.tensor([1.0, 2.0])
    for kind in ("l1", "mse"):
        (grad,) = torch.autograd.grad(prediction_loss(predictions, targets, kind=kind), predictions)
        assert grad[0] < 0 < grad[1]  # a step against the gradient moves toward the targets


def test_regression_head_maps_the_output_to_target_units_and_keeps_its_standardisation() -> None:
    net = tiny_net()
    head = RegressionHead(net, offset=3.0, scale=2.0)
    x = torch.randn(2, 1, *SPATIAL)
    torch.testing.assert_close(head(x), 3.0 + 2.0 * net(x))
    restored = RegressionHead(tiny_net(seed=1))
    restored.load_state_dict(head.state_dict())
    assert float(restored.offset) == 3.0 and float(restored.scale) == 2.0
    assert RegressionHead(net, scale=0.0).scale > 0  # constant targets still get a usable scale


def test_build_model_standardises_by_the_training_targets_only() -> None:
    subjects = [
        SubjectSample("a", Path("a"), None, 0, "train", 0.0),
        SubjectSample("b", Path("b"), None, 1, "train", 4.0),
        SubjectSample("c", Path("c"), None, 1, "test", 100.0),
    ]
    model = build_model(RunConfig(task="regression"), subjects)
    assert isinstance(model, RegressionHead)
    assert float(model.offset) == pytest.approx(2.0) and float(model.scale) == pytest.approx(2.0)
    assert not isinstance(build_model(RunConfig(), subjects), RegressionHead)


# --- the constraint's targets -------------------------------------------------------------


def test_zero_target_constrains_every_voxel_of_zero_target_subjects_only() -> None:
    targets = torch.tensor([0.0, 2.5, 0.05])
    t = regression_target_map(
        targets, None, constraints=["zero_target"], zero_tolerance=0.1, spatial_shape=SPATIAL
    )
    assert t.shape == (3, 1, *SPATIAL)
    assert (t[0] == 0).all() and (t[2] == 0).all()  # 0.05 <= tolerance counts as zero
    assert t[1].isnan().all()


def test_outside_lesions_frees_the_lesions_and_constrains_the_rest() -> None:
    masks = lesion_masks()
    targets = torch.tensor([1.0, 2.0, 3.0])
    t = regression_target_map(targets, masks, constraints=["outside_lesions"])
    lesion = masks > 0.5
    assert t[lesion].isnan().all()
    assert (t[~lesion] == 0).all()  # outside the lesion: must not raise the prediction
    # A subject without a mask is free; one with a NaN voxel in its mask keeps it free.
    available = torch.tensor([True, False, True])
    masks[2, 0, 3, 4, 3] = NAN
    t = regression_target_map(
        targets, masks, constraints=["outside_lesions"], mask_available=available
    )
    assert t[1].isnan().all() and t[2, 0, 3, 4, 3].isnan() and t[2, 0, 1, 1, 1] == 0


def test_zero_target_overrides_lesion_freedom_and_the_brain_mask_limits_everything() -> None:
    masks = lesion_masks()
    targets = torch.tensor([0.0, 0.0, 5.0])
    brain = torch.ones(1, 1, *SPATIAL)
    brain[..., 0, :, :] = 0.0
    t = regression_target_map(
        targets, masks, constraints=["outside_lesions", "zero_target"], brain_mask=brain
    )
    assert t[:, :, 0].isnan().all()  # outside the brain nothing is constrained
    assert (t[1, :, 1:] == 0).all()  # zero target: even its lesion voxels
    assert t[2, 0, 1, 1, 1] == 0 and t[2, 0, 0, 0, 0].isnan()  # lesion at (0,0,0) is free
    only_mass = regression_target_map(targets, masks, constraints=["mass_scaling"])
    assert only_mass.isnan().all()  # mass_scaling has no voxel targets
    with pytest.raises(ValueError, match="unknown regression constraints"):
        regression_target_map(targets, masks, constraints=["inside"])


def test_constraints_follow_the_loss_setting_unless_given() -> None:
    assert constraints_for(RunConfig(task="regression")) == ()
    supervised = RunConfig(task="regression", loss_setting="lc_la_supervised")
    assert constraints_for(supervised) == ("outside_lesions", "zero_target")
    weak = RunConfig(task="regression", loss_setting="lc_la_unsupervised")
    assert constraints_for(weak) == ("zero_target",)
    chosen = RunConfig(
        task="regression",
        loss_setting="lc_la_unsupervised",
        regression={"constraints": ["mass_scaling"]},
    )
    assert constraints_for(chosen) == ("mass_scaling",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"loss_setting": "la_only"}, "not defined for regression"),
        (
            {
                "loss_setting": "lc_la_unsupervised",
                "regression": {"constraints": ["outside_lesions"]},
            },
            "needs lesion masks",
        ),
        ({"loss_setting": "lc_la_supervised", "regression": {"constraints": []}}, "at least one"),
        ({"regression": {"constraints": ["zero_target"]}}, "trains no L_A"),
        ({"attribution_loss": "rrr"}, "regression.penalty"),
        ({"regression": {"loss": "huber"}}, "regression.loss"),
    ],
)
def test_regression_configs_that_would_mislead_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RunConfig(task="regression", **fields)


def test_classification_configs_are_unchanged() -> None:
    config = RunConfig()
    assert config.task == "classification"
    # A stored config from before regression existed still validates, as classification.
    old = RunConfig.model_validate({"epochs": 2, "loss_setting": "la_only"})
    assert old.task == "classification"


# --- penalties and their gradients ----------------------------------------------------------


def test_voxel_penalties_have_the_documented_values() -> None:
    relevance = torch.tensor([-2.0, 0.0, 1.5, 3.0]).view(1, 1, 4, 1, 1)
    targets = torch.tensor([0.0, 0.0, 0.0, NAN]).view(1, 1, 4, 1, 1)
    softplus = voxel_penalty(relevance, targets, penalty="softplus")
    expected = (math.log1p(math.exp(-2.0)) + math.log(2.0) + math.log1p(math.exp(1.5))) / 3
    assert float(softplus) == pytest.approx(expected)
    hinge = voxel_penalty(relevance, targets, penalty="relu_squared")
    assert float(hinge) == pytest.approx(1.5**2 / 3)  # negative relevance costs nothing
    empty = voxel_penalty(relevance.requires_grad_(), torch.full_like(relevance, NAN))
    assert float(empty.detach()) == 0.0
    empty.backward()  # still connected to the graph


def test_penalty_gradients_push_positive_relevance_down_only_where_constrained() -> None:
    relevance = torch.tensor([-1.0, 2.0, 2.0]).view(1, 1, 3, 1, 1).requires_grad_()
    targets = torch.tensor([0.0, 0.0, NAN]).view(1, 1, 3, 1, 1)
    for penalty, negative_grad_zero in (("softplus", False), ("relu_squared", True)):
        (grad,) = torch.autograd.grad(voxel_penalty(relevance, targets, penalty=penalty), relevance)
        g = grad.flatten()
        assert g[1] > 0  # descent lowers the constrained positive relevance
        assert g[2] == 0  # the free voxel is untouched
        assert (g[0] == 0) == negative_grad_zero


def test_mass_scaling_is_zero_for_proportional_masses_and_scale_free() -> None:
    targets = torch.tensor([0.0, 1.0, 3.0])
    base = torch.zeros(3, 1, *SPATIAL)
    proportional = base + targets.view(3, 1, 1, 1, 1) * 0.2  # positive mass = 0.2 * y
    assert float(mass_scaling_loss(proportional, targets)) == pytest.approx(0.0, abs=1e-6)
    assert float(mass_scaling_loss(10 * proportional, targets)) == pytest.approx(0.0, abs=1e-6)
    reversed_mass = base + torch.tensor([3.0, 1.0, 0.0]).view(3, 1, 1, 1, 1)
    loss = float(mass_scaling_loss(reversed_mass, targets))
    assert loss == pytest.approx(1 - 1 / 10)  # 1 - <(3,1,0),(0,1,3)> / (sqrt(10) sqrt(10))
    torch.testing.assert_close(positive_mass(reversed_mass - 2.0), torch.tensor([1.0, 0.0, 0.0]))
    assert float(mass_scaling_loss(-proportional, targets)) == 1.0  # no positive mass: constant


class _WithWeight(nn.Module):
    """``net`` with its first convolution's weight replaced by the tensor ``weight``."""

    def __init__(self, net: nn.Module, weight: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.net, {"0.weight": self.weight}, (x,))


def _constraint_of_weights(constraints: list[str], penalty: str, method: str):
    """L_A of a tiny double-precision net as a function of its first convolution's weight."""
    net = tiny_net(dtype=torch.float64)
    torch.manual_seed(3)
    x = torch.randn(3, 1, *SPATIAL, dtype=torch.float64)
    targets = torch.tensor([0.0, 1.5, 4.0], dtype=torch.float64)
    masks = lesion_masks().double()
    params = {"steps": 3} if method == "integrated_gradients" else {}

    def loss_of(weight: torch.Tensor) -> torch.Tensor:
        out = attribute(_WithWeight(net, weight), x, [method], create_graph=True, **params)
        return regression_attribution_loss(
            out.attributions, targets, masks, constraints=constraints, scale=50.0, penalty=penalty
        )

    return loss_of, net[0].weight.detach().clone().requires_grad_()


@pytest.mark.parametrize(
    ("constraints", "penalty", "method"),
    [
        (["outside_lesions", "zero_target"], "softplus", "gradient"),
        (["outside_lesions", "zero_target"], "relu_squared", "integrated_gradients"),
        (["zero_target", "mass_scaling"], "softplus", "gradient_x_input"),
    ],
)
def test_constraint_gradients_match_finite_differences(
    constraints: list[str], penalty: str, method: str
) -> None:
    """Double back-propagation through the attribution gives the true gradient of L_A with
    respect to the weights (torch.autograd.gradcheck: central finite differences)."""
    loss_of, weight = _constraint_of_weights(constraints, penalty, method)
    assert float(loss_of(weight)) > 0
    assert torch.autograd.gradcheck(loss_of, (weight,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_a_gradient_step_on_the_constraint_reduces_positive_relevance_outside_lesions() -> None:
    loss_of, weight = _constraint_of_weights(
        ["outside_lesions", "zero_target"], "softplus", "gradient"
    )
    before = loss_of(weight)
    (grad,) = torch.autograd.grad(before, weight)
    after = loss_of((weight - 1e-3 * grad / grad.norm()).detach())
    assert float(after) < float(before)


# --- a short regression run -----------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_subjects(tmp_path_factory: pytest.TempPathFactory) -> list[SubjectSample]:
    """Ellipsoid 'brains'; pathological subjects get a bright blob whose volume is the target;
    healthy subjects have target 0."""
    root = tmp_path_factory.mktemp("regression")
    rng = np.random.default_rng(5)
    shape = (14, 16, 14)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    subjects = []
    for split, count in {"train": 8, "val": 4, "test": 4}.items():
        for index in range(count):
            label = index % 2
            volume = ((grid**2).sum(axis=0) < 0.8) * (1.0 + 0.1 * rng.standard_normal(shape))
            radius = rng.uniform(0.2, 0.4) if label else 0.0
            centre = rng.uniform(-0.3, 0.3, size=3)[:, None, None, None]
            blob = ((grid - centre) ** 2).sum(axis=0) < radius**2
            image = root / f"{split}{index}.nii.gz"
            nib.save(nib.Nifti1Image((volume + 2.0 * blob).astype(np.float32), np.eye(4)), image)
            mask = None
            if label:
                mask = root / f"{split}{index}_mask.nii.gz"
                nib.save(nib.Nifti1Image(blob.astype(np.uint8), np.eye(4)), mask)
            target = float(blob.sum()) / 10.0
            subjects.append(SubjectSample(f"{split}{index}", image, mask, label, split, target))  # type: ignore[arg-type]
    return subjects


def test_a_constrained_regression_run_reports_regression_and_attribution_metrics(
    regression_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = RunConfig(
        task="regression",
        loss_setting="lc_la_supervised",
        regression={
            "loss": "mse",
            "constraints": ["outside_lesions", "zero_target", "mass_scaling"],
        },
        epochs=2,
        batch_size=4,
        grid=(12, 16, 12),
        device="cpu",
        early_stopping_metric="val_mae",
    )
    result = train(config, regression_subjects, checkpoint_dir=tmp_path)
    metrics = result.test_metrics
    assert {"mae", "rmse", "pearson", "spearman", "loss", "attr_lesion_mass"} <= set(metrics)
    assert "auroc" not in metrics
    assert metrics["n"] == 4 and metrics["mae"] >= 0 and metrics["rmse"] >= metrics["mae"]
    epoch = result.history[-1]
    assert epoch["val_mae"] is not None and epoch["train_loss_a"] > 0
    assert epoch["train_loss"] == pytest.approx(epoch["train_loss_c"] + epoch["train_loss_a"])

    model, stored = load_model(result.best_checkpoint)
    assert stored.task == "regression" and isinstance(model, RegressionHead)
    train_targets = [s.target for s in regression_subjects if s.split == "train"]
    assert float(model.offset) == pytest.approx(np.mean(train_targets), rel=1e-5)
    # The reloaded model reproduces the reported test MAE (its prediction is in target units).
    from worker.ml.transforms import IMAGE_KEY, preprocess_for

    transform = preprocess_for(config)
    test = [s for s in regression_subjects if s.split == "test"]
    with torch.no_grad():
        predicted = [
            float(model(transform({IMAGE_KEY: str(s.image)})[IMAGE_KEY].as_tensor()[None]))
            for s in test
        ]
    mae = float(np.mean([abs(p - s.target) for p, s in zip(predicted, test, strict=True)]))
    assert mae == pytest.approx(metrics["mae"], rel=1e-4)


def test_regression_needs_a_target_on_every_training_subject(
    regression_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    subjects = list(regression_subjects)
    subjects[1] = SubjectSample("train1", subjects[1].image, subjects[1].mask, 1, "train", None)
    with pytest.raises(ValueError, match=r"missing: \['train1'\]"):
        train(RunConfig(task="regression", epochs=1), subjects, checkpoint_dir=tmp_path)

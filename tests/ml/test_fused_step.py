"""The constrained step's gradient against a reference two-pass computation.

``ConstrainedTask.constrained_step`` may share work between L_C and L_A (one backward of
L_C + lambda L_A, chunked path points, batch norm folded into the convolutions while the
attribution runs in eval mode); whatever it shares, the gradient it hands to the optimiser
and the losses it reports must be those of the plain computation written out here: a
train-mode forward for L_C, the attribution with its own graph, and one
``torch.autograd.grad`` per term, summed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.attribution.differentiable import attribute, training_attribution_params
from worker.ml.gradients import GradientBalancer
from worker.ml.nets import build_network, pathological_logit
from worker.ml.training.classification import ClassificationTask
from worker.ml.training.constrained import mode_dependent
from worker.ml.training.datatypes import MASK_AVAILABLE_KEY
from worker.ml.training.engine import build_optimizer
from worker.ml.training.loop import Loop
from worker.ml.transforms import IMAGE_KEY, MASK_KEY

GRID = (10, 12, 10)
BATCH = 4
LAMBDA = 0.7
ATTRIBUTIONS = {
    "G": ("gradient", {}),
    "EG k=1": ("expected_gradients", {"eg_k": 1}),
    "IG m=4": ("integrated_gradients", {"ig_steps": 4}),
    "IG m=4 stratified": (
        "integrated_gradients",
        {"ig_steps": 4, "ig_method": "riemann_stratified"},
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _batch() -> dict[str, Any]:
    g = torch.Generator().manual_seed(11)
    images = torch.randn(BATCH, 1, *GRID, generator=g)
    images[..., :2, :, :] = 0.0  # a background outside the "brain"
    labels = torch.tensor([0.0, 1.0] * (BATCH // 2))
    masks = (torch.rand(BATCH, 1, *GRID, generator=g) > 0.9).float()
    masks = masks * labels.view(-1, 1, 1, 1, 1)
    return {
        IMAGE_KEY: images,
        "label": labels,
        MASK_KEY: masks,
        MASK_AVAILABLE_KEY: torch.ones(BATCH),
    }


def _loop(model: nn.Module, config: RunConfig, tmp_path: Path) -> Loop:
    return Loop(
        config=config,
        model=model,
        optimizer=build_optimizer(config, model),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        device=torch.device("cpu"),
        use_amp=False,
        checkpoint_dir=tmp_path,
        fingerprint="test",
        progress=None,
        should_stop=None,
        balancer=GradientBalancer(config),
    )


def _reference(
    task: ClassificationTask, loop: Loop, batch: dict[str, Any], seed: int
) -> tuple[list[torch.Tensor | None], float, float]:
    """grad(L_C) + grad(lambda L_A), each from its own ``autograd.grad``; L_C and L_A."""
    config, model = loop.config, loop.model
    images, labels = batch[IMAGE_KEY], batch["label"]
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = training_attribution_params(config, torch.Generator().manual_seed(seed))
    # Train-mode forward first (it updates the batch-norm running statistics), then the
    # attribution in eval mode, as docs/method.md's eval attribution mode prescribes.
    logits = pathological_logit(model(images))
    model.eval()
    out = attribute(model, images, config.train_attribution, **kwargs)
    model.train()
    loss_c = F.binary_cross_entropy_with_logits(logits, labels)
    loss_a = task.constraint_loss(
        loop,
        batch,
        setting=config.loss_setting,
        labels=labels,
        attributions=out.attributions,
        masks=batch[MASK_KEY],
        available=batch[MASK_AVAILABLE_KEY] > 0.5,
        brain=(images != 0).any(dim=1, keepdim=True),
        gain=1.0,
    )
    grads_c = torch.autograd.grad(loss_c, params, allow_unused=True)
    grads_a = torch.autograd.grad(LAMBDA * loss_a, params, allow_unused=True)
    total = [
        None if c is None and a is None else (0 if c is None else c) + (0 if a is None else a)
        for c, a in zip(grads_c, grads_a, strict=True)
    ]
    return total, float(loss_c.detach()), float(loss_a.detach())  # type: ignore[misc]


@pytest.mark.parametrize("instrument", [False, True], ids=["fused", "instrumented"])
@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("setting", ["lc_la_supervised", "lc_la_unsupervised"])
@pytest.mark.parametrize("name", sorted(ATTRIBUTIONS))
def test_step_gradient_equals_the_two_pass_reference(
    name: str, setting: str, norm: str, instrument: bool, tmp_path: Path
) -> None:
    method, extra = ATTRIBUTIONS[name]
    config = RunConfig(
        loss_setting=setting,
        train_attribution=[method],
        grid=GRID,
        device="cpu",
        batch_size=BATCH,
        lambda_a={"value": LAMBDA},
        grad_probe_batches=0,
        **extra,
    )
    torch.manual_seed(3)
    model = build_network("small_cnn", channels=(3, 4), norm=norm)
    # Batch norm: a separate train-mode forward for L_C; instance norm: one forward for both.
    assert mode_dependent(model) == (norm == "batch")
    reference_model = copy.deepcopy(model)
    task = ClassificationTask()
    batch = _batch()

    expected, loss_c, loss_a = _reference(
        task, _loop(reference_model, config, tmp_path), batch, seed=5
    )
    loop = _loop(model, config, tmp_path)
    stats = task.constrained_step(
        loop, batch, 0.0, torch.Generator().manual_seed(5), instrument=instrument
    )

    assert stats.loss_c == pytest.approx(loss_c, rel=1e-5)
    assert stats.loss_a == pytest.approx(loss_a, rel=1e-5)
    assert stats.loss == pytest.approx(loss_c + LAMBDA * loss_a, rel=1e-5)
    # Instrumented steps measure each term's gradient; fused ones only their sum.
    assert (stats.grad_norm_a is not None) == instrument
    assert stats.grad_norm_total is not None and stats.grad_norm_total > 0.0
    got = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None for g in got) >= len(got) - 1  # only the head bias may be unused
    scale = max(float(g.abs().max()) for g in expected if g is not None)
    assert scale > 0.0
    for index, (g, e) in enumerate(zip(got, expected, strict=True)):
        if e is None:
            assert g is None or float(g.abs().max()) == 0.0
            continue
        assert g is not None, index
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5 * scale)
    # The running statistics moved as one train-mode forward of the batch moves them.
    for mine, theirs in zip(model.buffers(), reference_model.buffers(), strict=True):
        torch.testing.assert_close(mine, theirs)

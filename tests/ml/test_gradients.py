"""Unit tests of the gradient instrumentation and remedies (worker.ml.gradients) and of their
RunConfig fields."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from attrivue_core.configs import LambdaSchedule, RunConfig
from worker.ml.gradients import (
    GradientBalancer,
    clip,
    combine,
    cosine,
    grad_norm,
    la_due,
    measure,
    project_conflict,
)


def _grads(*values: list[float] | None) -> list[torch.Tensor | None]:
    return [None if v is None else torch.tensor(v) for v in values]


def test_cosine_of_identical_opposite_and_orthogonal_gradients() -> None:
    g = _grads([1.0, 2.0], None, [3.0])
    assert cosine(g, g) == pytest.approx(1.0)
    assert cosine(g, [None if t is None else -2.5 * t for t in g]) == pytest.approx(-1.0)
    assert cosine(_grads([1.0, 0.0]), _grads([0.0, 4.0])) == pytest.approx(0.0)
    # A parameter missing from one gradient counts as 0 there.
    assert cosine(_grads([1.0], [1.0]), _grads([1.0], None)) == pytest.approx(1 / math.sqrt(2))
    assert cosine(_grads([0.0]), _grads([1.0])) is None


def test_measure_gives_norms_ratio_and_cosine_of_known_gradients() -> None:
    g_c = _grads([3.0, 0.0], [4.0])  # norm 5
    g_a = _grads([0.0, 10.0], None)  # norm 10, orthogonal to g_c
    stats = measure(g_c, g_a)
    assert stats.norm_c == pytest.approx(5.0) and stats.norm_a == pytest.approx(10.0)
    assert stats.ratio == pytest.approx(2.0) and stats.cosine == pytest.approx(0.0)
    # A GradScaler's scale divides the norms and leaves ratio and cosine alone.
    scaled = measure([t * 8 for t in g_c], [None if t is None else t * 8 for t in g_a], 8.0)
    assert scaled.norm_c == pytest.approx(5.0) and scaled.ratio == pytest.approx(2.0)
    only_a = measure(None, g_a)
    assert only_a.norm_c is None and only_a.ratio is None and only_a.cosine is None


def test_fixed_ratio_balancing_yields_the_configured_ratio_and_follows_the_warm_up() -> None:
    config = RunConfig(
        loss_setting="lc_la_supervised",
        grad_balance="fixed_ratio",
        grad_balance_ratio=0.25,
        lambda_a={"kind": "linear_warmup", "value": 4.0, "warmup_epochs": 2.0},
    )
    balancer = GradientBalancer(config)
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    g_c = _grads([3.0, 0.0], [4.0])
    g_a = _grads([0.0, 50.0], [-20.0])
    for lam, expected in ((4.0, 0.25), (2.0, 0.125)):
        w_c, w_a = balancer.weights(measure(g_c, g_a), lam=lam, loss_c=0.7, loss_a=0.7)
        combine(params, g_c, g_a, w_c=w_c, w_a=w_a)
        applied_a = [p.grad - c for p, c in zip(params, g_c, strict=True)]
        assert w_c == 1.0
        assert grad_norm(applied_a) / grad_norm(g_c) == pytest.approx(expected)


def test_no_balancing_sums_the_two_gradients() -> None:
    balancer = GradientBalancer(RunConfig(loss_setting="lc_la_supervised"))
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    g_c, g_a = _grads([1.0, 2.0], None), _grads([0.5, 0.5], None)
    assert balancer.weights(measure(g_c, g_a), lam=1.0, loss_c=1.0, loss_a=1.0) == (1.0, 1.0)
    combine(params, g_c, g_a)
    assert params[0].grad.tolist() == [1.5, 2.5] and params[1].grad is None


def test_project_removes_only_the_conflicting_component_of_the_constraint_gradient() -> None:
    g_c = _grads([1.0, 0.0], [0.0])
    conflicting = _grads([-2.0, 3.0], [1.0])  # dot with g_c: -2
    projected = project_conflict(conflicting, g_c)
    assert [t.tolist() for t in projected] == [[0.0, 3.0], [1.0]]
    # After projection the step no longer opposes g_C, and what was orthogonal is kept.
    assert cosine(projected, g_c) == pytest.approx(0.0)
    agreeing = _grads([2.0, 3.0], [1.0])
    assert project_conflict(agreeing, g_c) is agreeing
    # Through the balancer: only in "project" mode, and it leaves the weights at 1.
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    balancer = GradientBalancer(RunConfig(loss_setting="lc_la_supervised", grad_balance="project"))
    assert balancer.weights(measure(g_c, conflicting), lam=5.0, loss_c=1.0, loss_a=1.0) == (
        1.0,
        1.0,
    )
    combine(params, g_c, balancer.adjust(g_c, conflicting))
    assert params[0].grad.tolist() == [1.0, 3.0] and params[1].grad.tolist() == [1.0]
    plain = GradientBalancer(RunConfig(loss_setting="lc_la_supervised"))
    assert plain.adjust(g_c, conflicting) is conflicting


def test_gradnorm_raises_the_weight_of_the_slower_term_and_keeps_the_sum() -> None:
    balancer = GradientBalancer(
        RunConfig(loss_setting="lc_la_unsupervised", grad_balance="gradnorm")
    )
    g_c, g_a = _grads([1.0]), _grads([1.0])  # equal norms
    balancer.weights(measure(g_c, g_a), lam=1.0, loss_c=1.0, loss_a=1.0)  # initial losses
    for _ in range(5):
        # L_C halves, L_A does not move: L_A trains slower and must get the larger weight.
        w_c, w_a = balancer.weights(measure(g_c, g_a), lam=1.0, loss_c=0.5, loss_a=1.0)
    assert w_a > 1.0 > w_c and w_c + w_a == pytest.approx(2.0)
    # An overflowed (infinite) norm under mixed precision leaves the weights alone.
    inf = measure(_grads([math.inf]), g_a)
    assert balancer.weights(inf, lam=1.0, loss_c=0.5, loss_a=1.0) == (w_c, w_a)
    state = balancer.state_dict()
    restored = GradientBalancer(
        RunConfig(loss_setting="lc_la_unsupervised", grad_balance="gradnorm")
    )
    restored.load_state_dict(state)
    assert restored.state_dict() == state


def test_clipping_bounds_the_norm_and_reports_the_norm_before() -> None:
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    for param, grad in zip(params, _grads([3.0, 0.0], [4.0]), strict=True):
        param.grad = grad
    before, clipped = clip(params, 1.0)
    assert before == pytest.approx(5.0) and clipped is True
    assert grad_norm([p.grad for p in params]) == pytest.approx(1.0, rel=1e-4)
    before, clipped = clip(params, 10.0)
    assert clipped is False and grad_norm([p.grad for p in params]) == pytest.approx(before)
    assert clip(params, None)[1] is None


def test_la_every_n_steps_is_due_on_every_nth_step_of_the_run() -> None:
    assert [s for s in range(10) if la_due(s, 3)] == [0, 3, 6, 9]
    assert all(la_due(s, 1) for s in range(5))


def test_lambda_warm_up_schedule() -> None:
    schedule = LambdaSchedule(kind="linear_warmup", value=5.0, warmup_epochs=2.0)
    assert [schedule.at(e) for e in (0.0, 0.5, 1.0, 2.0, 7.0)] == [0.0, 1.25, 2.5, 5.0, 5.0]
    assert LambdaSchedule(value=3.0).at(0.0) == 3.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grad_balance": "fixed_ratio"}, "needs lc_la_supervised or lc_la_unsupervised"),
        ({"loss_setting": "la_only", "grad_balance": "gradnorm"}, "not 'la_only'"),
        ({"loss_setting": "la_only", "la_every_n_steps": 2}, "la_every_n_steps > 1"),
        (
            {
                "loss_setting": "lc_la_supervised",
                "grad_balance": "fixed_ratio",
                "lambda_a": {"value": 0.0},
            },
            "lambda_a.value > 0",
        ),
        ({"grad_clip_norm": 0.0}, "greater than 0"),
        ({"la_every_n_steps": 0}, "greater than or equal to 1"),
        ({"grad_probe_batches": -1}, "greater than or equal to 0"),
        ({"grad_balance": "equal"}, "'none', 'fixed_ratio', 'gradnorm' or 'project'"),
    ],
)
def test_remedy_fields_are_validated(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RunConfig(**fields)


def test_remedy_fields_accepted_where_they_apply() -> None:
    config = RunConfig(
        loss_setting="lc_la_unsupervised",
        grad_balance="gradnorm",
        gradnorm_alpha=0.5,
        la_every_n_steps=3,
        grad_clip_norm=2.0,
        grad_probe_batches=0,
    )
    assert RunConfig.model_validate(config.model_dump(mode="json")) == config
    # Clipping and the probe apply to every setting.
    RunConfig(loss_setting="lc_only", grad_clip_norm=1.0, grad_probe_batches=4)

"""Instrumentation of the two loss terms and the remedies of docs/method.md section 6.1.

Training with the attribution constraint takes two gradients per step: that of L_C and that of
lambda * L_A (the double back-propagation through the attribution). This module measures how
they relate (their norms, the ratio, the cosine between them) and combines them into the
gradient the optimiser applies, with the remedies a run config selects:

- ``fixed_ratio`` balancing: the L_A gradient is rescaled so that its norm is a fixed multiple
  of the L_C gradient's norm on every step (lambda then only sets the warm-up ramp);
- ``gradnorm`` balancing, after GradNorm (Chen et al., ICML 2018): two weights ``w_c``, ``w_a``
  (summing to 2) bring the weighted gradient norms ``G_i = w_i ||g_i||`` toward their mean
  times ``r_i ** alpha``, where ``r_i`` is the relative inverse training rate
  ``(L_i / L_i(0)) / mean_j(L_j / L_j(0))``: the term that trains slower gets the larger
  weight. Two simplifications against the paper, both because the two terms here share all
  the weights: the norms are those of the whole network's gradient (the paper takes one
  shared layer, which is not cheaper here, both gradients being taken in full anyway), and
  each weight moves by a multiplicative step ``exp(-rate * sign(dL_grad / dw_i))`` instead of
  an Adam step on ``L_grad = sum_i |G_i - target_i|`` (same direction, bounded steps);
- ``project``, after PCGrad (Yu et al., NeurIPS 2020): where g_A conflicts with g_C
  (negative dot product), its component along g_C is removed, ``g_A - (g_A.g_C / |g_C|^2) g_C``,
  so that the applied step does not raise L_C on its batch to first order; the constraint
  keeps every direction that does not cost the classification;
- clipping of the total gradient norm (``torch.nn.utils.clip_grad_norm_``).

Both gradients are lists aligned with the parameters (``None`` where a parameter does not
reach the loss), possibly multiplied by a ``GradScaler`` scale: norms are divided by it,
ratios and cosines are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attrivue_core.configs import RunConfig

__all__ = [
    "GRADNORM_RATE",
    "GradientBalancer",
    "project_conflict",
    "GradientStats",
    "cosine",
    "grad_norm",
    "la_due",
]

Grads = Sequence[torch.Tensor | None]
# Multiplicative step of the GradNorm weights per optimisation step (5 %).
GRADNORM_RATE = 0.05
_TINY = 1e-12


def grad_norm(grads: Grads) -> float:
    """L2 norm of a list of gradients taken together (``None`` entries count as 0)."""
    norms = [g.detach().float().norm(2) for g in grads if g is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _dot(a: Grads, b: Grads) -> float:
    total = torch.zeros((), dtype=torch.float64)
    for x, y in zip(a, b, strict=True):
        if x is not None and y is not None:
            total = total + (x.detach().double() * y.detach().double()).sum().cpu()
    return float(total)


def cosine(a: Grads, b: Grads) -> float | None:
    """Cosine between two gradients taken as one vector each; ``None`` if either is zero."""
    na, nb = grad_norm(a), grad_norm(b)
    if na <= _TINY or nb <= _TINY:
        return None
    return max(-1.0, min(1.0, _dot(a, b) / (na * nb)))


def la_due(global_step: int, every_n: int) -> bool:
    """Whether the 0-based ``global_step`` computes L_A when it is due every ``every_n`` steps.

    The first step of a run always does; counting over the whole run (not per epoch) keeps the
    share of L_A steps at 1 / n whatever the number of steps per epoch.
    """
    return global_step % every_n == 0


@dataclass
class GradientStats:
    """What one step measured about its two gradients (norms of the true, unscaled gradients).

    Attributes:
        norm_c: ||g_C||, the gradient of L_C w.r.t. the weights (``None`` where L_C is not
            trained or not measured).
        norm_a: ||g_A||, the gradient of lambda * L_A as computed, before balancing (``la_only``
            and the ``lc_only`` probe: of L_A itself).
        ratio: ``norm_a / norm_c`` (``None`` if either is missing or ``norm_c`` is 0).
        cosine: Cosine between g_C and g_A: 1 when they agree, 0 when orthogonal, below 0 when
            the constraint pulls against the classifier.
        weight_a: Factor applied to g_A after balancing (1 without balancing).
        norm_total: ||g|| of the combined gradient, before clipping.
        clipped: Whether clipping reduced the norm on this step.
    """

    norm_c: float | None = None
    norm_a: float | None = None
    ratio: float | None = None
    cosine: float | None = None
    weight_a: float | None = None
    norm_total: float | None = None
    clipped: bool | None = None


def measure(grads_c: Grads | None, grads_a: Grads | None, scale: float = 1.0) -> GradientStats:
    """Norms, ratio and cosine of the two (possibly scaled) gradients."""
    norm_c = None if grads_c is None else grad_norm(grads_c) / scale
    norm_a = None if grads_a is None else grad_norm(grads_a) / scale
    ratio = None
    if norm_c is not None and norm_a is not None and norm_c > _TINY:
        ratio = norm_a / norm_c
    return GradientStats(
        norm_c=norm_c,
        norm_a=norm_a,
        ratio=ratio,
        cosine=None if grads_c is None or grads_a is None else cosine(grads_c, grads_a),
    )


class GradientBalancer:
    """Combines g_C and g_A into the applied gradient, per ``RunConfig.grad_balance``.

    Its state (the GradNorm weights and initial losses) is saved in ``last.pt`` so that a
    resumed run continues with the same weights.
    """

    def __init__(self, config: RunConfig) -> None:
        self.mode = config.grad_balance
        self.ratio = config.grad_balance_ratio
        self.alpha = config.gradnorm_alpha
        self.lambda_final = config.lambda_a.value
        self.w_c = 1.0
        self.w_a = 1.0
        self.initial_c: float | None = None
        self.initial_a: float | None = None

    # ------------------------------------------------------------------ combination

    def weights(
        self,
        stats: GradientStats,
        *,
        lam: float | None,
        loss_c: float | None,
        loss_a: float | None,
    ) -> tuple[float, float]:
        """Factors ``(on g_C, on g_A)`` of this step; updates the GradNorm weights.

        Args:
            stats: Norms of this step's gradients (``measure``).
            lam: Lambda of this step (``None`` for ``la_only``).
            loss_c: L_C of this step.
            loss_a: L_A of this step (unweighted).
        """
        if self.mode in ("none", "project") or stats.norm_a is None or stats.norm_c is None:
            return 1.0, 1.0
        if stats.norm_a <= _TINY:
            return 1.0, 1.0
        if not (math.isfinite(stats.norm_a) and math.isfinite(stats.norm_c)):
            # An overflow under mixed precision: the GradScaler skips this step anyway; keep
            # the GradNorm weights as they were.
            return (1.0, 1.0) if self.mode == "fixed_ratio" else (self.w_c, self.w_a)
        if self.mode == "fixed_ratio":
            ramp = 1.0 if lam is None else lam / self.lambda_final
            return 1.0, self.ratio * ramp * stats.norm_c / stats.norm_a
        return self._gradnorm_step(stats, loss_c, loss_a)

    def _gradnorm_step(
        self, stats: GradientStats, loss_c: float | None, loss_a: float | None
    ) -> tuple[float, float]:
        assert stats.norm_c is not None and stats.norm_a is not None
        if loss_c is None or loss_a is None or not (loss_c > 0 and loss_a > 0):
            return self.w_c, self.w_a
        if self.initial_c is None or self.initial_a is None:
            self.initial_c, self.initial_a = loss_c, loss_a
        rate_c = loss_c / self.initial_c
        rate_a = loss_a / self.initial_a
        mean_rate = (rate_c + rate_a) / 2.0
        g_c = self.w_c * stats.norm_c
        g_a = self.w_a * stats.norm_a
        mean_g = (g_c + g_a) / 2.0
        target_c = mean_g * (rate_c / mean_rate) ** self.alpha
        target_a = mean_g * (rate_a / mean_rate) ** self.alpha
        # d|G_i - target_i| / dw_i = sign(G_i - target_i) * ||g_i||: only the sign is used.
        self.w_c *= math.exp(-GRADNORM_RATE * _sign(g_c - target_c))
        self.w_a *= math.exp(-GRADNORM_RATE * _sign(g_a - target_a))
        total = self.w_c + self.w_a
        self.w_c, self.w_a = 2.0 * self.w_c / total, 2.0 * self.w_a / total
        return self.w_c, self.w_a

    def adjust(self, grads_c: Grads | None, grads_a: Grads | None) -> Grads | None:
        """The L_A gradient to apply: projected off g_C where they conflict (``project``)."""
        if self.mode != "project" or grads_c is None or grads_a is None:
            return grads_a
        return project_conflict(grads_a, grads_c)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "w_c": self.w_c,
            "w_a": self.w_a,
            "initial_c": self.initial_c,
            "initial_a": self.initial_a,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.w_c = float(state["w_c"])
        self.w_a = float(state["w_a"])
        self.initial_c = state["initial_c"]
        self.initial_a = state["initial_a"]


def _sign(value: float) -> float:
    return 0.0 if value == 0 else math.copysign(1.0, value)


def project_conflict(grads: Grads, onto: Grads) -> Grads:
    """``grads`` without its component along ``onto`` when their dot product is negative.

    Returns ``grads`` itself when they do not conflict or ``onto`` is zero.
    """
    dot = _dot(grads, onto)
    squared = grad_norm(onto) ** 2
    if dot >= 0.0 or squared <= _TINY:
        return grads
    factor = dot / squared
    return [
        g if g is None or o is None else g - factor * o for g, o in zip(grads, onto, strict=True)
    ]


def combine(
    params: Sequence[nn.Parameter],
    grads_c: Grads | None,
    grads_a: Grads | None,
    *,
    w_c: float = 1.0,
    w_a: float = 1.0,
) -> None:
    """Set ``p.grad = w_c * g_C + w_a * g_A`` (missing terms left out, ``None`` if neither)."""
    for index, param in enumerate(params):
        parts: list[torch.Tensor] = []
        for grads, weight in ((grads_c, w_c), (grads_a, w_a)):
            grad = None if grads is None else grads[index]
            if grad is not None:
                parts.append(grad if weight == 1.0 else grad * weight)
        total = None
        for part in parts:
            total = part if total is None else total + part
        param.grad = total


def clip(params: Sequence[nn.Parameter], max_norm: float | None) -> tuple[float, bool | None]:
    """Norm of the (unscaled) total gradient before clipping, and whether it was clipped.

    Without ``max_norm`` the norm is only measured.
    """
    if max_norm is None:
        return grad_norm([p.grad for p in params]), None
    total = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return total, total > max_norm

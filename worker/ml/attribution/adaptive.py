"""Integrated Gradients to a requested completeness delta (docs/method.md, "IG to a requested
accuracy").

The user gives a relative target ``t`` (0.01 for 1 %): the map must satisfy
``|sum(A) - (F(x) - F(x'))| <= t |F(x) - F(x')|``. Each image's path integral is a composite
trapezoid rule on points that start as ``0, 1/2, 1`` and are refined by bisecting intervals;
every gradient evaluated is kept and reused, so the points a map ends with are all the points
that were evaluated for it.

Where to bisect comes from an exact local error. Along the path, the integrand of the
completeness sum is ``g(a) = (x - x') . dF/dx(x' + a (x - x'))`` and its integral over an
interval ``[a_j, a_{j+1}]`` is exactly ``F(a_{j+1}) - F(a_j)``, which the forward pass of each
point gives for free. The trapezoid's error on that interval,
``e_j = (a_{j+1} - a_j) (g_j + g_{j+1}) / 2 - (F(a_{j+1}) - F(a_j))``, is therefore known, and
the completeness delta is ``|sum_j e_j|``. After each round every interval whose ``|e_j|`` is
at least half the largest one is bisected (a few intervals per round, so one pass evaluates
several points); an image stops when its relative delta is at most the target, or when its
points reach ``max_points`` (the map then records that the target was not reached).

Why not Gauss-Legendre doubling (issue 21's suggestion): Gauss-Legendre nodes do not nest, so
doubling the order would evaluate every point again and a run ending at m points would have
paid about 2m. Why not a nested global rule (Clenshaw-Curtis or the trapezoid doubled
everywhere): along the path of a network built with (Leaky)ReLU, F is piecewise linear with
kinks, so ``g`` jumps; a global high-order rule gains nothing there, and the jumps that matter
are few and local, which the exact local error finds (docs/method.md has the comparison).

Numerics: as in Captum, the gradient at each point is taken with unit output gradients and
multiplied by its weight afterwards (a weight pushed through the backward pass meets TF32
rounding in cuDNN convolutions; docs/benchmarks.md). The weighted sum is kept in float64, so
the map equals a fresh evaluation at the same points (``integrated_gradients_at``) to float32
rounding (the updates add in another order; and the convolutions' results may depend on the
batch size).

Example:
    >>> result = adaptive_integrated_gradients(forward, x, torch.zeros_like(x), 0.01, 129)
    >>> result.points, result.reached
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from worker.ml.attribution.quadrature import trapezoid

__all__ = [
    "MIN_INTERVAL",
    "AdaptiveResult",
    "Progress",
    "adaptive_integrated_gradients",
    "integrated_gradients_at",
    "relative_gap",
]

# Intervals are not bisected below this width (2^-20; the points stay dyadic, exact in binary).
MIN_INTERVAL = 2.0**-20

# Called after each round with (points per image so far, the worst relative delta of the batch).
Progress = Callable[[int, float], None]


@dataclass
class AdaptiveResult:
    """An IG map of B images with what it took.

    Attributes:
        attributions: ``(B, C, *grid)`` float32, ``(x - x') * sum_k w_k dF/dx(p_k)``.
        delta: ``(B,)`` float64 absolute completeness gap ``|sum(A) - (F(x) - F(x'))|``.
        relative_delta: ``(B,)`` float64, ``delta / |F(x) - F(x')|`` (``relative_gap``).
        logits: ``(B,)`` F(x); ``baseline_logits``: ``(B,)`` F(x').
        alphas: Each image's points along the path, increasing from 0 to 1.
        reached: Whether every image's relative delta is at most the target.
        rounds: ``(largest number of points of an image, worst relative delta)`` per round.
    """

    attributions: torch.Tensor
    delta: torch.Tensor
    relative_delta: torch.Tensor
    logits: torch.Tensor
    baseline_logits: torch.Tensor
    alphas: list[np.ndarray]
    reached: bool = True
    rounds: list[tuple[int, float]] = field(default_factory=list)

    @property
    def points(self) -> int:
        """The most points any image used (what the recorded ``ig_points`` is)."""
        return max(len(a) for a in self.alphas)


def relative_gap(delta: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """``delta / |gap|``, with 0 for ``0 / 0`` and ``inf`` for ``d / 0`` with ``d > 0``."""
    gap = gap.abs()
    safe = torch.where(gap > 0, gap, torch.ones_like(gap))
    undefined = torch.where(delta > 0, torch.full_like(delta, math.inf), torch.zeros_like(delta))
    return torch.where(gap > 0, delta / safe, undefined)


class _Path:
    """One image's evaluated points, kept in path order: alphas, gradients and logits."""

    def __init__(self) -> None:
        self.alphas: list[float] = []
        self.grads: list[torch.Tensor] = []  # (C, *grid) dF/dx at each point
        self.logits: list[float] = []
        self.slopes: list[float] = []  # g(a) = (x - x') . dF/dx, float64
        # sum_k w_k dF/dx(p_k) (float64) and the weights it holds, by alpha: a refinement
        # adds only the weights that changed (the new points and their neighbours).
        self.total: torch.Tensor | None = None
        self.held: dict[float, float] = {}

    def weighted_sum(self) -> torch.Tensor:
        """``sum_k w_k dF/dx(p_k)`` of the trapezoid on the current points, ``(C, *grid)``."""
        weights = trapezoid(np.asarray(self.alphas)).tolist()
        if self.total is None:
            self.total = torch.zeros_like(self.grads[0], dtype=torch.float64)
        for alpha, weight, grad in zip(self.alphas, weights, self.grads, strict=True):
            change = weight - self.held.get(alpha, 0.0)
            if change != 0.0:
                self.total += change * grad.double()
                self.held[alpha] = weight
        return self.total

    def insert(self, alpha: float, grad: torch.Tensor, logit: float, slope: float) -> None:
        at = int(np.searchsorted(np.asarray(self.alphas), alpha))
        self.alphas.insert(at, alpha)
        self.grads.insert(at, grad)
        self.logits.insert(at, logit)
        self.slopes.insert(at, slope)

    def local_errors(self) -> np.ndarray:
        """``e_j`` of each interval (see the module's docstring), float64."""
        a, g, f = np.asarray(self.alphas), np.asarray(self.slopes), np.asarray(self.logits)
        return np.diff(a) * 0.5 * (g[1:] + g[:-1]) - np.diff(f)

    def to_refine(self, max_points: int) -> list[float]:
        """Midpoints of the intervals to bisect next, within the cap on points."""
        errors = np.abs(self.local_errors())
        widths = np.diff(np.asarray(self.alphas))
        candidates = np.flatnonzero((errors >= 0.5 * errors.max()) & (widths > MIN_INTERVAL))
        room = max_points - len(self.alphas)
        chosen = candidates[np.argsort(-errors[candidates], kind="stable")][:room]
        return [0.5 * (self.alphas[j] + self.alphas[j + 1]) for j in sorted(chosen)]


def _evaluate(
    forward: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    points: Sequence[tuple[int, float]],
    chunk: int,
) -> list[tuple[torch.Tensor, float]]:
    """dF/dx and F at ``x'_b + a (x_b - x'_b)`` for each ``(b, a)``, ``chunk`` images per
    pass, with unit output gradients (as Captum does)."""
    results: list[tuple[torch.Tensor, float]] = []
    spatial = (-1,) + (1,) * (x.ndim - 1)
    with torch.enable_grad():
        for start in range(0, len(points), chunk):
            part = points[start : start + chunk]
            sample = torch.tensor([b for b, _ in part], device=x.device)  # (n,)
            scale = torch.tensor([a for _, a in part], dtype=x.dtype, device=x.device)
            image = baseline[sample] + scale.view(spatial) * (x[sample] - baseline[sample])
            image = image.detach().requires_grad_(True)  # (n, C, *grid)
            out = forward(image)  # (n,)
            (grad,) = torch.autograd.grad(out, image, grad_outputs=torch.ones_like(out))
            logits = out.detach().double().cpu().tolist()
            results.extend(zip(grad.detach().unbind(0), logits, strict=True))
    return results


def _combine(
    paths: Sequence[_Path], x: torch.Tensor, baseline: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maps ``(B, C, *grid)`` from the paths' trapezoid rules, with delta, relative delta,
    F(x) and F(x') ``(B,)`` (float64; the logits of the points a = 1 and a = 0)."""
    maps = []
    for b, path in enumerate(paths):
        maps.append(((x[b] - baseline[b]).double() * path.weighted_sum()).float())
    attributions = torch.stack(maps)  # (B, C, *grid)
    f_x = torch.tensor([p.logits[-1] for p in paths], dtype=torch.float64)
    f_baseline = torch.tensor([p.logits[0] for p in paths], dtype=torch.float64)
    sums = attributions.double().flatten(1).sum(1).cpu()
    delta = (sums - (f_x - f_baseline)).abs()
    return attributions, delta, relative_gap(delta, f_x - f_baseline), f_x, f_baseline


def _add(
    paths: Sequence[_Path],
    x: torch.Tensor,
    baseline: torch.Tensor,
    points: Sequence[tuple[int, float]],
    results: Sequence[tuple[torch.Tensor, float]],
) -> None:
    for (b, alpha), (grad, logit) in zip(points, results, strict=True):
        slope = float(((x[b] - baseline[b]).double() * grad.double()).sum())
        paths[b].insert(alpha, grad, logit, slope)


def integrated_gradients_at(
    forward: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    alphas: Sequence[np.ndarray],
    *,
    internal_batch_size: int = 8,
) -> AdaptiveResult:
    """IG of each image with the composite trapezoid on the given points (increasing from 0
    to 1, one array per image), all evaluated at once: what ``adaptive_integrated_gradients``
    computes at the points it ends with."""
    x, baseline = x.detach(), baseline.detach().to(x)
    paths = [_Path() for _ in range(x.shape[0])]
    points = [(b, float(a)) for b, image in enumerate(alphas) for a in image]
    _add(paths, x, baseline, points, _evaluate(forward, x, baseline, points, internal_batch_size))
    attributions, delta, relative, f_x, f_baseline = _combine(paths, x, baseline)
    return AdaptiveResult(
        attributions, delta, relative, f_x, f_baseline, [np.asarray(p.alphas) for p in paths]
    )


def adaptive_integrated_gradients(
    forward: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target_delta: float,
    max_points: int,
    *,
    internal_batch_size: int = 8,
    progress: Progress | None = None,
) -> AdaptiveResult:
    """Integrated Gradients refined until each image's relative completeness delta is at most
    ``target_delta`` or its points reach ``max_points`` (see the module's docstring).

    Args:
        forward: ``(N, C, *grid) -> (N,)`` logits, in the mode it should run in (eval).
        x: ``(B, C, *grid)`` images; ``baseline``: their references x', same shape.
        target_delta: Relative target, > 0 (0.01: 1 % of |F(x) - F(x')|).
        max_points: Most points per image (>= 3: the first rule is 0, 1/2, 1).
        internal_batch_size: Images per forward/backward pass (points of all images).
        progress: Called after each round (see ``Progress``).

    Raises:
        ValueError: For a target <= 0, a cap below 3 points or a batch size below 1.
    """
    if not target_delta > 0:
        raise ValueError(f"target_delta must be > 0, got {target_delta}")
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3, got {max_points}")
    if internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
    x, baseline = x.detach(), baseline.detach().to(x)
    paths = [_Path() for _ in range(x.shape[0])]
    points = [(b, a) for b in range(x.shape[0]) for a in (0.0, 0.5, 1.0)]
    rounds: list[tuple[int, float]] = []
    while True:
        _add(
            paths, x, baseline, points, _evaluate(forward, x, baseline, points, internal_batch_size)
        )
        attributions, delta, relative, f_x, f_baseline = _combine(paths, x, baseline)
        rounds.append((max(len(p.alphas) for p in paths), float(relative.max())))
        if progress is not None:
            progress(*rounds[-1])
        points = [
            (b, alpha)
            for b, path in enumerate(paths)
            if float(relative[b]) > target_delta
            for alpha in path.to_refine(max_points)
        ]
        if not points:
            break
    return AdaptiveResult(
        attributions,
        delta,
        relative,
        f_x,
        f_baseline,
        [np.asarray(p.alphas) for p in paths],
        reached=bool((relative <= target_delta).all()),
        rounds=rounds,
    )

"""The project's Integrated Gradients against Captum's, on the same network, input and steps.

Three implementations of the same map (docs/method.md section 2), timed on one batch of synthetic
subjects with the network in eval mode:

- ``project``: ``worker.ml.attribution.differentiable.integrated_gradients`` with
  ``create_graph=False`` (the evaluation path);
- ``project, graph``: the same with ``create_graph=True`` (the training path; the graph to the
  weights is built but not back-propagated);
- ``Captum``: ``captum.attr.IntegratedGradients``.

All three evaluate every interpolation point in one pass (no chunking: the project's
``internal_batch_size=None``, Captum's ``internal_batch_size = steps * batch``) from the zero
baseline, and all three compute F(x) and F(x') for the convergence delta. Each repetition runs
the three back to back, in an order that rotates between repetitions; the table reports the
median of each and the median of the per-repetition ratios project / Captum. The maximum
absolute difference between the project's maps and Captum's is the sanity column: the two
must agree to float32 rounding.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from captum.attr import IntegratedGradients
from torch import nn

from bench.bench_training import Log, NetworkSpec, fmt
from worker.ml.attribution.adaptive import AdaptiveResult, adaptive_integrated_gradients
from worker.ml.attribution.differentiable import QuadratureMethod, integrated_gradients
from worker.ml.nets import pathological_logit

__all__ = [
    "AccuracyResult",
    "AccuracySettings",
    "IgResult",
    "IgSettings",
    "render_accuracy",
    "render_ig",
    "run_accuracy",
    "run_ig",
]

IMPLEMENTATIONS = ("project", "project_graph", "captum")
# Relative agreement (max |difference| / max |A|) below which the maps count as equal.
AGREEMENT = 1e-4


@dataclass(frozen=True)
class IgSettings:
    """What the IG benchmark runs.

    Attributes:
        networks: Networks (randomly initialised with ``seed``), each with the numbers of
            integration points to run it with.
        methods: Quadrature rules (Captum's names).
        repetitions: Least number of timed repetitions per case (after one untimed warm-up
            run of each).
        min_seconds: Repetitions go on until a case has been timed this long in total
            (cheap cases get more repetitions, so background noise averages out)...
        max_repetitions: ... but no more than this.
        seed: Seed of the weights.
        device: Device to compute on.
    """

    networks: tuple[tuple[NetworkSpec, tuple[int, ...]], ...]
    methods: tuple[str, ...]
    repetitions: int
    min_seconds: float = 0.0
    max_repetitions: int = 30
    seed: int = 0
    device: str = "cpu"


@dataclass
class IgResult:
    """Timings and agreement of one (network, steps, method)."""

    network: NetworkSpec
    steps: int
    method: str
    batch: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    max_abs_diff: float = 0.0
    max_abs_diff_graph: float = 0.0
    max_abs_map: float = 0.0

    @property
    def repetitions(self) -> int:
        return len(self.seconds.get("captum", []))

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def ratio(self, name: str) -> float:
        """Median over repetitions of ``name``'s time / Captum's."""
        pairs = zip(self.seconds[name], self.seconds["captum"], strict=True)
        return statistics.median(a / b for a, b in pairs)

    @property
    def relative_diff(self) -> float:
        worst = max(self.max_abs_diff, self.max_abs_diff_graph)
        return worst / self.max_abs_map if self.max_abs_map > 0 else worst

    @property
    def agree(self) -> bool:
        return self.relative_diff <= AGREEMENT


class _Logit(nn.Module):
    """One scalar per image, as Captum expects."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.model(x))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _implementations(
    model: nn.Module, x: torch.Tensor, steps: int, method: str
) -> dict[str, Callable[[], torch.Tensor]]:
    forward = _Logit(model)
    captum_ig = IntegratedGradients(forward, multiply_by_inputs=True)
    baseline = torch.zeros_like(x)
    captum_input = x.detach().clone().requires_grad_(True)

    def project(create_graph: bool) -> torch.Tensor:
        out = integrated_gradients(
            model,
            x,
            steps=steps,
            method=cast(QuadratureMethod, method),
            create_graph=create_graph,
        )
        return out.attributions.detach()

    def captum() -> torch.Tensor:
        attributions, _delta = captum_ig.attribute(
            captum_input,
            baselines=baseline,
            target=None,
            n_steps=steps,
            method=method,
            internal_batch_size=steps * x.shape[0],
            return_convergence_delta=True,
        )
        return attributions.detach()

    return {
        "project": lambda: project(False),
        "project_graph": lambda: project(True),
        "captum": captum,
    }


def run_ig(settings: IgSettings, images: torch.Tensor, log: Log = print) -> list[IgResult]:
    """Time the three implementations on ``images`` ``(B, 1, *grid)``.

    Returns:
        One result per (network, steps, method).
    """
    device = torch.device(settings.device)
    x = images.to(device=device, dtype=torch.float32)
    results = []
    for network, network_steps in settings.networks:
        torch.manual_seed(settings.seed)
        model = network.build().to(device).eval()
        for steps in network_steps:
            for method in settings.methods:
                result = IgResult(network, steps, method, batch=int(x.shape[0]))
                functions = _implementations(model, x, steps, method)
                maps = {name: function() for name, function in functions.items()}  # warm-up
                result.max_abs_map = float(maps["captum"].abs().max())
                result.max_abs_diff = float((maps["project"] - maps["captum"]).abs().max())
                result.max_abs_diff_graph = float(
                    (maps["project_graph"] - maps["captum"]).abs().max()
                )
                del maps
                result.seconds = {name: [] for name in IMPLEMENTATIONS}
                rep, case_started = 0, time.perf_counter()
                while rep < settings.repetitions or (
                    rep < settings.max_repetitions
                    and time.perf_counter() - case_started < settings.min_seconds
                ):
                    shift = rep % len(IMPLEMENTATIONS)
                    for name in IMPLEMENTATIONS[shift:] + IMPLEMENTATIONS[:shift]:
                        _sync(device)
                        started = time.perf_counter()
                        functions[name]()
                        _sync(device)
                        result.seconds[name].append(time.perf_counter() - started)
                    rep += 1
                log(
                    f"[ig] {network.label} m={steps} {method}: project "
                    f"{result.median('project'):.3f} s, graph "
                    f"{result.median('project_graph'):.3f} s, Captum "
                    f"{result.median('captum'):.3f} s, max |diff| {result.max_abs_diff:.1e}"
                )
                results.append(result)
    return results


def render_ig(settings: IgSettings, results: Sequence[IgResult], grid: Sequence[int]) -> str:
    """Markdown: settings, the table and a note generated from the numbers."""
    batch = results[0].batch if results else 0
    lines = [
        f"Setup: one batch of {batch} synthetic subjects on the "
        f"{'x'.join(map(str, grid))} grid, randomly initialised networks (seed "
        f"{settings.seed}) in eval mode, zero baseline, every interpolation point in one "
        "pass, convergence delta computed by all. Seconds: median over the repetitions (at "
        f"least {settings.repetitions}, more for cheap cases until {settings.min_seconds:g} s "
        "of timing; after one untimed warm-up of each), the three implementations run back "
        "to back in a rotating order. Ratio: median over "
        'repetitions of (project / Captum). "project, graph" is `create_graph=True` (the '
        "training path: the graph to the weights is built, not back-propagated). Max |diff|: "
        "largest absolute difference between the project's maps (either path) and Captum's; "
        "relative: divided by the largest |A|.",
        "",
        "| network | steps | method | repetitions | project s | project, graph s | Captum s "
        "| ratio project/Captum | ratio graph/Captum | max abs diff | relative diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.network.label} | {r.steps} | {r.method} | {r.repetitions} "
            f"| {fmt(r.median('project'))} "
            f"| {fmt(r.median('project_graph'))} | {fmt(r.median('captum'))} "
            f"| {fmt(r.ratio('project'))} | {fmt(r.ratio('project_graph'))} "
            f"| {max(r.max_abs_diff, r.max_abs_diff_graph):.1e} | {r.relative_diff:.1e} |"
        )
    lines += ["", *_ig_notes(results)]
    return "\n".join(lines)


def _verdict(ratio: float) -> str:
    if ratio < 0.9:
        return "it is faster than Captum."
    if ratio <= 1.1:
        return "it is on par with Captum (within 10%)."
    return "it is slower than Captum."


def _ig_notes(results: Sequence[IgResult]) -> list[str]:
    if not results:
        return []
    ratios = [r.ratio("project") for r in results]
    graph = [r.ratio("project_graph") for r in results]
    notes = [
        f"- The project's IG (evaluation path) takes {min(ratios):.2f}x to {max(ratios):.2f}x "
        f"Captum's time (median {statistics.median(ratios):.2f}x over the "
        f"{len(results)} cases); "
        + _verdict(statistics.median(ratios))
        + f" Building the training graph (`create_graph=True`) costs {min(graph):.2f}x to "
        f"{max(graph):.2f}x Captum's time before any back-propagation.",
    ]
    bad = [r for r in results if not r.agree]
    worst = max(r.relative_diff for r in results)
    if bad:
        cases = ", ".join(f"{r.network.label} m={r.steps} {r.method}" for r in bad)
        notes.append(
            f"- DISAGREEMENT: the maps differ by more than {AGREEMENT:.0e} of max |A| in {cases}."
        )
    else:
        notes.append(
            f"- The maps agree in every case: the largest difference is {worst:.1e} of "
            "max |A|, float32 rounding."
        )
    by_network: dict[NetworkSpec, list[IgResult]] = {}
    for r in results:
        by_network.setdefault(r.network, []).append(r)
    for network, rows in by_network.items():
        steps = sorted({r.steps for r in rows})
        if len(steps) > 1:
            low = statistics.median(r.median("project") for r in rows if r.steps == steps[0])
            high = statistics.median(r.median("project") for r in rows if r.steps == steps[-1])
            notes.append(
                f"- {network.label}: going from {steps[0]} to {steps[-1]} points multiplies "
                f"the project's time by {high / low:.1f} (points: x{steps[-1] / steps[0]:.0f})."
            )
    return notes


# --------------------------------------------------------------------------- IG to an accuracy

# Issue 21 goal 4: time to reach the target at most this share of Captum's default.
ACCURACY_GOAL = 0.5
CAPTUM_DEFAULT_STEPS = 50  # captum.attr.IntegratedGradients.attribute's n_steps default


@dataclass(frozen=True)
class AccuracySettings:
    """IG to a requested accuracy against Captum's default (50 Gauss-Legendre points).

    Attributes:
        networks: Networks (randomly initialised with ``seed``).
        target: Relative completeness delta to reach (0.01: 1 %).
        max_points: The adaptive scheme's cap on points per image.
        repetitions: Timed repetitions of each (after one untimed warm-up of each).
        seed: Seed of the weights.
        device: Device to compute on.
    """

    networks: tuple[NetworkSpec, ...]
    target: float = 0.01
    max_points: int = 129
    repetitions: int = 3
    seed: int = 0
    device: str = "cpu"


@dataclass
class AccuracyResult:
    """Times and deltas of one network: the adaptive scheme and Captum's default."""

    network: NetworkSpec
    batch: int
    points: list[int] = field(default_factory=list)  # adaptive, per image
    rounds: int = 0
    adaptive_delta: list[float] = field(default_factory=list)  # relative, per image
    captum_delta: list[float] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self) -> float:
        pairs = zip(self.seconds["adaptive"], self.seconds["captum"], strict=True)
        return statistics.median(a / b for a, b in pairs)


def _accuracy_functions(
    forward: nn.Module, x: torch.Tensor, settings: AccuracySettings, chunk: int
) -> tuple[Callable[[], AdaptiveResult], Callable[[], torch.Tensor]]:
    """The adaptive scheme to the target, and Captum's IG with its defaults (returns its delta)."""
    baseline = torch.zeros_like(x)
    captum_ig = IntegratedGradients(forward, multiply_by_inputs=True)
    captum_input = x.detach().clone().requires_grad_(True)

    def adaptive() -> AdaptiveResult:
        return adaptive_integrated_gradients(
            forward,
            x,
            baseline,
            settings.target,
            settings.max_points,
            internal_batch_size=chunk,
        )

    def captum() -> torch.Tensor:
        _, delta = captum_ig.attribute(
            captum_input,
            baselines=baseline,
            target=None,
            internal_batch_size=chunk,
            return_convergence_delta=True,
        )  # n_steps and method: Captum's defaults (50, gausslegendre)
        return delta

    return adaptive, captum


def run_accuracy(
    settings: AccuracySettings, images: torch.Tensor, log: Log = print
) -> list[AccuracyResult]:
    """Time the adaptive scheme to ``settings.target`` and Captum's default on the same maps,
    side by side (alternating order), every point of a round (or all 50) in one pass."""
    device = torch.device(settings.device)
    x = images.to(device=device, dtype=torch.float32)
    chunk = CAPTUM_DEFAULT_STEPS * x.shape[0]
    results = []
    for network in settings.networks:
        torch.manual_seed(settings.seed)
        forward = _Logit(network.build().to(device).eval())
        adaptive, captum = _accuracy_functions(forward, x, settings, chunk)
        result = AccuracyResult(network, batch=int(x.shape[0]))
        ran = adaptive()
        result.points = [len(a) for a in ran.alphas]
        result.rounds = len(ran.rounds)
        result.adaptive_delta = ran.relative_delta.tolist()
        gap = (ran.logits - ran.baseline_logits).abs()
        result.captum_delta = (captum().detach().double().abs().cpu() / gap).tolist()
        functions: dict[str, Callable[[], object]] = {"adaptive": adaptive, "captum": captum}
        result.seconds = {name: [] for name in functions}
        for rep in range(settings.repetitions):
            order = list(functions) if rep % 2 == 0 else list(functions)[::-1]
            for name in order:
                _sync(device)
                started = time.perf_counter()
                functions[name]()
                _sync(device)
                result.seconds[name].append(time.perf_counter() - started)
        log(
            f"[ig-accuracy] {network.label}: adaptive {statistics.median(result.seconds['adaptive']):.3f} s "
            f"({result.points} points), Captum {statistics.median(result.seconds['captum']):.3f} s"
        )
        results.append(result)
    return results


def render_accuracy(
    settings: AccuracySettings, results: Sequence[AccuracyResult], grid: Sequence[int]
) -> str:
    """Markdown: setup, the table and whether the goal (<= 0.5x Captum's default) is met."""
    batch = results[0].batch if results else 0
    lines = [
        f"Setup: the maps of the section above (one batch of {batch} synthetic subjects on the "
        f"{'x'.join(map(str, grid))} grid, randomly initialised networks, seed {settings.seed}, "
        f"eval mode, zero baseline). Adaptive: `worker.ml.attribution.adaptive` to a relative "
        f"completeness delta of {settings.target:.0%} (at most {settings.max_points} points per "
        "image; every point of a round in one pass). Captum: `IntegratedGradients.attribute` "
        f"with its defaults ({CAPTUM_DEFAULT_STEPS} Gauss-Legendre points, all in one pass) and "
        "its convergence delta. Seconds: median of "
        f"{settings.repetitions} repetitions run side by side in alternating order, after one "
        "untimed run of each; ratio: median of the per-repetition ratios. Relative delta: "
        "|sum(A) - (F(x) - F(0))| / |F(x) - F(0)| of each image.",
        "",
        "| network | adaptive points per image | rounds | adaptive relative delta (max) "
        "| Captum 50 relative delta (max) | adaptive s | Captum 50 s | ratio adaptive/Captum |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.network.label} | {', '.join(map(str, r.points))} | {r.rounds} "
            f"| {max(r.adaptive_delta):.2%} | {max(r.captum_delta):.2%} "
            f"| {fmt(statistics.median(r.seconds['adaptive']))} "
            f"| {fmt(statistics.median(r.seconds['captum']))} | {fmt(r.ratio())} |"
        )
    lines.append("")
    for r in results:
        met = r.ratio() <= ACCURACY_GOAL
        reached = max(r.adaptive_delta) <= settings.target
        captum_reached = max(r.captum_delta) <= settings.target
        lines.append(
            f"- {r.network.label}: the adaptive scheme "
            + (
                f"reaches {settings.target:.0%} on every image"
                if reached
                else f"does NOT reach {settings.target:.0%} on every image within its cap"
            )
            + f" in {r.ratio():.2f}x the time of Captum's default, which "
            + (
                "reaches it"
                if captum_reached
                else f"does not reach {settings.target:.0%} on every image"
            )
            + f". Goal (<= {ACCURACY_GOAL}x): "
            + ("MET." if met and reached else "NOT MET.")
            + f" Points: {sum(r.points)} against {CAPTUM_DEFAULT_STEPS * r.batch} "
            f"({sum(r.points) / (CAPTUM_DEFAULT_STEPS * r.batch):.2f}x); the time ratio also "
            "carries the pass sizes (Captum's one pass of all its points against the adaptive "
            "scheme's smaller rounds), which is why it differs from the ratio of points."
        )
    return "\n".join(lines)

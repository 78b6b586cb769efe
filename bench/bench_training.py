"""Seconds per training epoch: L_C only against L_C + L_A with G, EG and IG (docs/method.md section 6.1).

Every variant trains the same network on the same synthetic subjects with the same seed,
through the project's own ``worker.ml.training.train``. All subjects are in the training
split, so an epoch is optimisation steps only: no validation or test evaluation runs. The
epoch time is the sum of the steps' ``ProgressEvent.step_seconds`` (the whole optimisation
step: forward, attribution, both backward passes, optimiser update).

Interleaving: ``train`` resumes from ``last.pt`` when called again with more epochs, so the
benchmark trains one epoch of every (network, variant) in turn, then the next epoch of each,
and so on, rotating the order every round. Background load therefore hits every variant
alike. The first epoch of each variant includes warm-up and is reported apart; the median is
taken over the epochs after it, and the ratio to L_C only is the median of the per-round
ratios (each variant's epoch against L_C's epoch of the same round and network).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from attrivue_core.configs import LossSetting, NetworkName, RunConfig, TrainAttributionName
from worker.ml import conv_grad, training
from worker.ml.nets import build_network
from worker.ml.training import ProgressEvent, SubjectSample

__all__ = [
    "GOAL_RATIO",
    "NetworkSpec",
    "TrainingResult",
    "TrainingSettings",
    "Variant",
    "fmt",
    "predicted_ig_ratio",
    "render_training",
    "run_training",
    "variants",
]

Log = Callable[[str], None]

# The goals of the constrained step (issue 21, goal 3): G and EG k = 1 at most this many times
# L_C only; IG with m points at most 1 + m x (G's extra cost), G's extra cost being its ratio
# minus 1.
GOAL_RATIO = 2.5
GOAL_VARIANTS = ("g", "eg")


@dataclass(frozen=True)
class NetworkSpec:
    """A network of the registry, with the keyword options it is built with.

    ``RunConfig`` names a network only; ``train`` builds it with its defaults. A width other
    than the default is obtained by wrapping ``build_network`` where ``training.build_model`` finds it while the
    benchmark trains (``options``).
    """

    name: NetworkName
    base_width: int | None = None

    @property
    def key(self) -> str:
        return self.name if self.base_width is None else f"{self.name}-w{self.base_width}"

    @property
    def label(self) -> str:
        return (
            self.name if self.base_width is None else f"{self.name} (base width {self.base_width})"
        )

    @property
    def kwargs(self) -> dict[str, Any]:
        return {} if self.base_width is None else {"base_width": self.base_width}

    def build(self):
        return build_network(self.name, **self.kwargs)

    @contextlib.contextmanager
    def options(self) -> Iterator[None]:
        """Make ``train`` build this network with ``kwargs``."""
        if not self.kwargs:
            yield
            return
        builder = functools.partial(build_network, **self.kwargs)
        # ``train`` builds through ``training.build_model``; patch the name where that
        # function looks it up, wherever the model builder lives.
        home = importlib.import_module(training.build_model.__module__)
        with mock.patch.object(home, "build_network", builder):
            yield


@dataclass(frozen=True)
class Variant:
    """One loss setting of the comparison."""

    key: str
    label: str
    loss_setting: LossSetting
    attribution: TrainAttributionName | None


def variants(ig_steps: int, eg_k: int) -> tuple[Variant, ...]:
    """L_C only, then L_C + L_A (supervised targets) with G, EG and IG."""
    return (
        Variant("lc", "L_C only", "lc_only", None),
        Variant("g", "L_C + L_A, G", "lc_la_supervised", "gradient"),
        Variant("eg", f"L_C + L_A, EG k={eg_k}", "lc_la_supervised", "expected_gradients"),
        Variant("ig", f"L_C + L_A, IG m={ig_steps}", "lc_la_supervised", "integrated_gradients"),
    )


@dataclass(frozen=True)
class TrainingSettings:
    """What the training benchmark runs.

    Attributes:
        grid: Working grid of the synthetic subjects and of the runs.
        networks: Networks compared (each with every variant), each with its number of epochs
            per variant (at least 2: the first is warm-up, the others are measured; a cheap
            network can afford more).
        batch_size: Subjects per step.
        ig_steps: Integration points of IG inside L_A.
        eg_k: Expected Gradients samples per image inside L_A.
        seed: Seed of every run.
        device: ``RunConfig.device``.
    """

    grid: tuple[int, int, int]
    networks: tuple[tuple[NetworkSpec, int], ...]
    batch_size: int = 4
    ig_steps: int = 8
    eg_k: int = 1
    seed: int = 0
    device: str = "auto"


@dataclass
class TrainingResult:
    """Measured epochs of one (network, variant)."""

    network: NetworkSpec
    variant: Variant
    steps_per_epoch: int = 0
    warmup_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    attribution_seconds: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.epoch_seconds)

    @property
    def median_attribution(self) -> float:
        return statistics.median(self.attribution_seconds)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def _config(
    settings: TrainingSettings, network: NetworkSpec, variant: Variant, epochs: int
) -> RunConfig:
    # Validated as a whole: ``settings.device`` is the name of the torch device picked.
    return RunConfig.model_validate(
        dict(
            network=network.name,
            loss_setting=variant.loss_setting,
            train_attribution=[variant.attribution or "gradient"],
            ig_steps=settings.ig_steps,
            eg_k=settings.eg_k,
            epochs=epochs,
            batch_size=settings.batch_size,
            seed=settings.seed,
            grid=settings.grid,
            val_attribution=False,
            # The L_C-only baseline without the probe of L_A's gradient (an extra attribution);
            # the constrained variants without instrumented steps (one fused backward each).
            grad_probe_batches=0,
            device=settings.device,
        )
    )


def _train_epoch(
    settings: TrainingSettings,
    network: NetworkSpec,
    variant: Variant,
    epoch: int,
    subjects: list[SubjectSample],
    checkpoint_dir: Path,
) -> ProgressEvent:
    """Train epoch ``epoch`` (resuming the earlier ones from ``checkpoint_dir``)."""
    events: list[ProgressEvent] = []
    with network.options():
        training.train(
            _config(settings, network, variant, epoch),
            subjects,
            checkpoint_dir=checkpoint_dir,
            progress=events.append,
        )
    done = [e for e in events if e.kind == "epoch"]
    if len(done) != 1 or done[0].epoch != epoch or done[0].step_seconds is None:
        raise RuntimeError(f"expected one report of epoch {epoch}, got {done}")
    return done[0]


def run_training(
    settings: TrainingSettings,
    subjects: list[SubjectSample],
    workdir: Path,
    log: Log = print,
) -> list[TrainingResult]:
    """Train every (network, variant) for its network's epochs, round-robin.

    Round ``e`` trains epoch ``e`` of every (network, variant) whose network has that many
    epochs, starting at a position that moves by one every round.

    Args:
        settings: What to run.
        subjects: Synthetic subjects, all in the ``train`` split, with lesion masks for the
            pathological ones (L_A takes its targets from them).
        workdir: Empty folder for the checkpoints.
        log: Progress messages.

    Returns:
        One result per (network, variant), in network then variant order.
    """
    epochs = dict(settings.networks)
    if min(epochs.values()) < 2:
        raise ValueError("need at least 2 epochs per network: the first is warm-up")
    if any(s.split != "train" for s in subjects):
        raise ValueError("every subject must be in the train split (no evaluation is timed)")
    combos = [
        TrainingResult(network, variant)
        for network, _ in settings.networks
        for variant in variants(settings.ig_steps, settings.eg_k)
    ]
    for epoch in range(1, max(epochs.values()) + 1):
        active = [r for r in combos if epochs[r.network] >= epoch]
        shift = (epoch - 1) % len(active)
        for result in active[shift:] + active[:shift]:
            started = time.perf_counter()
            event = _train_epoch(
                settings,
                result.network,
                result.variant,
                epoch,
                subjects,
                workdir / f"{result.network.key}-{result.variant.key}",
            )
            seconds = float(event.step_seconds or 0.0)
            attribution = float(event.attribution_seconds or 0.0)
            result.steps_per_epoch = event.steps
            if epoch == 1:
                result.warmup_seconds = seconds
            else:
                result.epoch_seconds.append(seconds)
                result.attribution_seconds.append(attribution)
            log(
                f"[training] epoch {epoch}/{epochs[result.network]} {result.network.label}, "
                f"{result.variant.label}: steps {seconds:.2f} s "
                f"(call {time.perf_counter() - started:.1f} s)"
            )
    for result in combos:
        reference = next(r for r in combos if r.network == result.network and r.variant.key == "lc")
        result.ratios = [
            s / ref for s, ref in zip(result.epoch_seconds, reference.epoch_seconds, strict=True)
        ]
    return combos


def fmt(value: float) -> str:
    """A number for a table cell: three significant digits, plain notation where sensible."""
    if value == 0.0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1e-3:
        return f"{value:.3g}"
    return f"{value:.1e}"


def render_training(settings: TrainingSettings, results: Sequence[TrainingResult]) -> str:
    """Markdown: settings, the table and a note generated from the numbers."""
    lines = [
        f"Setup: synthetic subjects on the {'x'.join(map(str, settings.grid))} grid, "
        f"batch {settings.batch_size}, seed {settings.seed}, supervised targets "
        f"(lc_la_supervised), IG with {settings.ig_steps} {RunConfig().ig_method} points, EG "
        f"with k = {settings.eg_k}. The variants are trained round-robin, one epoch of each "
        "in turn (`train` resumes from its checkpoint). Seconds per epoch: sum of the steps' "
        "`step_seconds` (training steps only; no validation). Median over the epochs after "
        "the first; the first (warm-up) is shown apart. Ratio: median over rounds of (epoch "
        "time / L_C only's epoch time in the same round). Predicted ratio (IG m points): "
        f"1 + m x (G's ratio - 1), the ratio if each point cost what G adds. Goals (issue 21): "
        f"G and EG k = 1 at most {GOAL_RATIO}x L_C only, IG at most its predicted ratio. "
        "The constrained variants take one backward of L_C + lambda L_A per step "
        "(`grad_probe_batches` 0: no instrumented step). Attribution: seconds in the "
        "attribution's forward and first backward pass per epoch (its double "
        "back-propagation counts in the step only). Convolutions of the training "
        "attribution: "
        + (
            "`worker.ml.conv_grad` (input gradients as nodes of the output gradient and the "
            "weights only; on a CPU, a forward convolution and a shuffle for the first "
            "layers; `--native-convolutions` turns it off)."
            if conv_grad.ENABLED
            else "PyTorch's own kernels (`--native-convolutions`: `worker.ml.conv_grad` off)."
        ),
        "",
        "| network | training | steps/epoch | epochs measured | s/epoch (median) | min | max "
        "| ratio to L_C only | predicted ratio | goal | attribution s/epoch | warm-up epoch s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        predicted, goal = _goal(settings, results, r)
        lines.append(
            f"| {r.network.label} | {r.variant.label} | {r.steps_per_epoch} "
            f"| {len(r.epoch_seconds)} | {fmt(r.median_seconds)} | {fmt(min(r.epoch_seconds))} "
            f"| {fmt(max(r.epoch_seconds))} | {fmt(r.ratio)} | {predicted} | {goal} "
            f"| {fmt(r.median_attribution)} | {fmt(r.warmup_seconds)} |"
        )
    lines += ["", *_training_notes(settings, results)]
    return "\n".join(lines)


def predicted_ig_ratio(settings: TrainingSettings, g_ratio: float) -> float:
    """IG's ratio to L_C only if each of its m points cost what G adds: 1 + m (G - 1)."""
    return 1.0 + settings.ig_steps * (g_ratio - 1.0)


def _goal(
    settings: TrainingSettings, results: Sequence[TrainingResult], result: TrainingResult
) -> tuple[str, str]:
    """The predicted-ratio and goal cells of a row ("-" where none applies)."""
    key = result.variant.key
    if key in GOAL_VARIANTS:
        met = result.ratio <= GOAL_RATIO
        return "-", f"<= {GOAL_RATIO}: {'met' if met else 'not met'}"
    if key == "ig":
        g = next((r for r in results if r.network == result.network and r.variant.key == "g"), None)
        if g is None:
            return "-", "-"
        predicted = predicted_ig_ratio(settings, g.ratio)
        met = result.ratio <= predicted
        return fmt(predicted), f"<= predicted: {'met' if met else 'not met'}"
    return "-", "-"


def _short(variant: Variant) -> str:
    return variant.label.split(", ")[-1]


def _training_notes(settings: TrainingSettings, results: Sequence[TrainingResult]) -> list[str]:
    notes = []
    networks = list(dict.fromkeys(r.network for r in results))
    for network in networks:
        rows = {r.variant.key: r for r in results if r.network == network}
        constrained = [r for key, r in rows.items() if key != "lc"]
        parts = [f"{r.ratio:.1f} with {_short(r.variant)}" for r in constrained]
        text = (
            f"- {network.label}: an epoch of L_C only takes {fmt(rows['lc'].median_seconds)} s; "
            f"adding L_A multiplies it by {', '.join(parts[:-1])} and {parts[-1]}"
        )
        cheapest = min(constrained, key=lambda r: r.ratio)
        dearest = max(constrained, key=lambda r: r.ratio)
        text += (
            f" ({_short(dearest.variant)} makes an epoch {dearest.ratio:.1f} times slower "
            f"than L_C only, and {dearest.ratio / cheapest.ratio:.1f} times slower than "
            f"{_short(cheapest.variant)}, the cheapest constraint)."
        )
        shares = [
            f"{100 * r.median_attribution / r.median_seconds:.0f}% ({_short(r.variant)})"
            for r in constrained
            if r.median_seconds > 0
        ]
        if shares:
            text += (
                " The attribution's forward and first backward pass take "
                f"{', '.join(shares)} of the epoch; the rest is L_C, the double "
                "back-propagation of L_A through the attribution, and the update."
            )
        goals = [
            f"{_short(r.variant)} {r.ratio:.2f}x ({_goal(settings, results, r)[1]})"
            for r in constrained
            if r.variant.key in GOAL_VARIANTS
        ]
        if "ig" in rows and "g" in rows:
            ig = rows["ig"]
            goals.append(
                f"{_short(ig.variant)} {ig.ratio:.2f}x against a predicted "
                f"{predicted_ig_ratio(settings, rows['g'].ratio):.2f}x "
                f"({_goal(settings, results, ig)[1]})"
            )
        if goals:
            text += f" Goals: {'; '.join(goals)}."
        notes.append(text)
    narrowed = [n for n in networks if n.name == "patchgan" and n.base_width not in (None, 64)]
    for network in narrowed:
        notes.append(
            f"- PatchGAN runs at base width {network.base_width} instead of the published 64, "
            "to keep the command short on a CPU; `python -m bench --patchgan-width 64` runs the "
            "published network."
        )
    return notes

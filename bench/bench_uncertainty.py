"""Cost of the uncertainty volumes: SmoothGrad and GradientShap with the per-sample moments
(``worker.ml.attribution.captum_eval``'s recording tunnel) against Captum's mean alone.

    python -m bench.bench_uncertainty [--threads 1] [--repeats 5] [--out docs/benchmarks.md]

Writes the ``uncertainty`` section of docs/benchmarks.md: median seconds per map of one
subject on the 48x56x48 grid (small_cnn, 16 samples, 8 images per pass), for the project's
method (mean, sd and sign agreement) and for Captum's NoiseTunnel / GradientShap called
directly with the same settings and seed (mean only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import captum
import numpy as np
import torch
from captum.attr import GradientShap, NoiseTunnel, Saliency
from torch import nn

from attrivue_core.configs import AttributionConfig
from bench.docs import cpu_model, replace_section, write_atomically
from worker.ml.attribution import attribute_batch
from worker.ml.nets import build_network, pathological_logit

GRID = (48, 56, 48)
SAMPLES = 16
PER_PASS = 8
HEADING = "Uncertainty: per-sample moments against Captum's mean alone"


class _Logit(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.model(x))


def _median_seconds(call: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def run(repeats: int) -> list[tuple[str, str, tuple[float, float, float]]]:
    """Times of each (method, variant)."""
    torch.manual_seed(0)
    model = build_network("small_cnn").eval()
    forward = _Logit(model).eval()
    x = torch.randn(1, 1, *GRID)
    references = torch.randn(8, 1, *GRID)
    smooth = AttributionConfig(method="smoothgrad", n_samples=SAMPLES, internal_batch_size=PER_PASS)
    shap = AttributionConfig(
        method="gradient_shap", n_samples=SAMPLES, internal_batch_size=PER_PASS
    )

    def captum_smoothgrad() -> object:
        return NoiseTunnel(Saliency(forward)).attribute(
            x.clone().requires_grad_(),
            nt_type="smoothgrad",
            nt_samples=SAMPLES,
            nt_samples_batch_size=PER_PASS,
            stdevs=0.15,
            target=None,
            abs=False,
        )

    def captum_shap() -> object:
        # As the project chunks it: PER_PASS draws per call.
        total = torch.zeros_like(x)
        for _ in range(SAMPLES // PER_PASS):
            total += GradientShap(forward).attribute(
                x.clone().requires_grad_(),
                baselines=references,
                n_samples=PER_PASS,
                stdevs=0.0,
                target=None,
            )
        return total

    return [
        ("smoothgrad", "Captum's mean alone", _median_seconds(captum_smoothgrad, repeats)),
        (
            "smoothgrad",
            "mean + sd + sign agreement",
            _median_seconds(lambda: attribute_batch(model, x, smooth), repeats),
        ),
        ("gradient_shap", "Captum's mean alone", _median_seconds(captum_shap, repeats)),
        (
            "gradient_shap",
            "mean + sd + sign agreement",
            _median_seconds(
                lambda: attribute_batch(model, x, shap, references=references), repeats
            ),
        ),
    ]


def render(rows: list[tuple[str, str, tuple[float, float, float]]], command: str) -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"- Command: `{command}`",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores ({usable} usable), torch "
        f"{torch.__version__}, captum {captum.__version__}, torch threads: "
        f"{torch.get_num_threads()}, device cpu; 1-minute load average {load:.2f} at the end",
        "",
        f"One subject on the {'x'.join(map(str, GRID))} grid, small_cnn, {SAMPLES} samples, "
        f"{PER_PASS} images per pass (GradientShap: 8 random references). 'Captum's mean alone' "
        "calls Captum directly; 'mean + sd + sign agreement' is the project's method, which "
        "also keeps the per-voxel sums, squares and sign counts of every sample (the map "
        "alone, on the working grid; the job's resampling of the two volumes to the native "
        "grid is not included). The project's gradient_shap also computes its convergence "
        "delta (a forward pass per draw and one over the references), which Captum's call "
        "here does not: part of its ratio is that, not the volumes. Median of the repeats "
        "after one warm-up.",
        "",
        "| method | variant | s per map (median) | min | max | ratio to Captum |",
        "|---|---|---|---|---|---|",
    ]
    base: dict[str, float] = {}
    for method, variant, (median, low, high) in rows:
        base.setdefault(method, median)
        lines.append(
            f"| {method} | {variant} | {median:.3g} | {low:.3g} | {high:.3g} | "
            f"{median / base[method]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    rows = run(args.repeats)
    argv_text = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    command = f"python -m bench.bench_uncertainty {argv_text}".strip()
    body = render(rows, command)
    print(body)
    text = args.out.read_text() if args.out.is_file() else "# Benchmarks\n"
    write_atomically(args.out, replace_section(text, "uncertainty", body, HEADING))


if __name__ == "__main__":
    main()

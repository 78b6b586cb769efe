"""Cost of the normative input's smoothing: MONAI's Gaussian filter against the shifted sums.

``python -m bench.bench_normative [--quick] [--repeats 5] [--threads 1] [--out docs/benchmarks.md]``

A network with the normative input (``worker.ml.normative``) smooths its image in every
forward and back-propagates through the smoothing in every backward. In one process, on the
CPU, side by side, the same model with each filter (``monai.networks.layers.GaussianFilter``,
and ``ShiftedSumGaussian``, which keeps MONAI's kernel and state and applies it as shifted
sums):

- the filter alone, forward and backward, on a batch of 32 images (IG's chunk of path points);
- a constrained training step: small_cnn with the normative input, Integrated Gradients with
  4 points from the zero image inside L_A (the constrained presets' attribution), batch 4,
  L_C + lambda L_A back-propagated to the weights;
- the validation maps of model selection: Integrated Gradients with 8 Gauss-Legendre points
  (``VAL_IG_STEPS``) of 24 subjects, through ``worker.ml.evaluation.evaluate_attributions``.

Each is timed ``--repeats`` times after one warm-up; the median is reported, and the maps of
the two filters are compared (largest absolute difference). The result goes between
``<!-- normative:begin -->`` and ``<!-- normative:end -->`` in the output file, with the
command, date and machine. ``--quick`` shrinks the grid: it checks that the command works, its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter

from attrivue_core.configs import RunConfig
from bench.docs import cpu_model, replace_section, write_atomically
from worker.ml.attribution.differentiable import integrated_gradients
from worker.ml.evaluation import evaluate_attributions
from worker.ml.normative import SMOOTHING_SIGMA, NormativeInput, ShiftedSumGaussian
from worker.ml.regression import build_model
from worker.ml.training.datatypes import VAL_IG_STEPS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "normative"
HEADING = "The normative input: MONAI's Gaussian filter against shifted sums"
FILTERS: dict[str, Callable[[], torch.nn.Module]] = {
    "MONAI GaussianFilter": lambda: GaussianFilter(3, sigma=SMOOTHING_SIGMA),
    "ShiftedSumGaussian": lambda: ShiftedSumGaussian(3, sigma=SMOOTHING_SIGMA),
}


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _model(grid: tuple[int, int, int], smoother: torch.nn.Module) -> NormativeInput:
    torch.manual_seed(0)
    config = RunConfig(network="small_cnn", grid=grid, normative_input=True, device="cpu")
    model = build_model(config, [])
    if not isinstance(model, NormativeInput):
        raise TypeError("build_model did not wrap the network with the normative input")
    model.smooth = smoother
    generator = torch.Generator().manual_seed(1)
    model.fit(torch.randn((8, 1, *grid), generator=generator).abs())
    return model


def measure(
    *, quick: bool, repeats: int
) -> tuple[list[tuple[str, str, float]], dict[str, float], tuple[int, int, int]]:
    """``(rows of (workload, filter, seconds), largest map differences, grid)``."""
    grid = (16, 20, 16) if quick else (48, 56, 48)
    generator = torch.Generator().manual_seed(2)
    batch = torch.randn((32, 1, *grid), generator=generator)
    images = torch.randn((4, 1, *grid), generator=generator)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    targets = (torch.rand((4, 1, *grid), generator=generator) < 0.02).float()
    subjects = [
        (
            torch.randn((1, *grid), generator=generator).numpy(),
            (torch.rand(grid, generator=generator) < 0.02).numpy() if i % 2 else None,
            i % 2,
        )
        for i in range(24)
    ]
    rows: list[tuple[str, str, float]] = []
    maps: dict[str, list[np.ndarray]] = {}
    for name, make in FILTERS.items():
        smoother = make()
        model = _model(grid, smoother)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]

        def filter_alone(smoother: torch.nn.Module = smoother) -> None:
            x = batch.clone().requires_grad_(True)
            smoother(x).sum().backward()

        def step(model: NormativeInput = model, params: list[torch.nn.Parameter] = params) -> None:
            out = integrated_gradients(model, images, steps=4, endpoints="input")
            assert out.logits is not None
            loss_c = F.binary_cross_entropy_with_logits(out.logits, labels)
            loss_a = F.binary_cross_entropy_with_logits(out.attributions, targets)
            torch.autograd.grad(loss_c + 5.0 * loss_a, params)

        def validation(model: NormativeInput = model, name: str = name) -> None:
            model.eval()
            found = evaluate_attributions(
                model, subjects, steps=VAL_IG_STEPS, batch_size=4, keep_maps=True
            )
            model.train()
            assert found.maps is not None
            maps[name] = found.maps

        workloads: dict[str, tuple[Callable[[], object], int]] = {
            "filter, forward and backward, 32 images": (filter_alone, repeats),
            "training step, IG 4 points in L_A, batch 4": (step, repeats),
            f"validation maps, IG {VAL_IG_STEPS} points, 24 subjects": (
                validation,
                max(1, repeats // 2),
            ),
        }
        for workload, (work, times) in workloads.items():
            rows.append((workload, name, _median_seconds(work, times)))
    first, second = (maps[name] for name in FILTERS)
    differences = {
        "largest |difference| of the maps": max(
            float(np.abs(a - b).max()) for a, b in zip(first, second, strict=True)
        ),
        "largest |A| of the maps": max(float(np.abs(a).max()) for a in first),
    }
    return rows, differences, grid


def render(
    rows: Sequence[tuple[str, str, float]],
    differences: dict[str, float],
    *,
    command: str,
    grid: tuple[int, int, int],
    quick: bool,
    started: str,
    threads: int,
) -> str:
    machine = f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs"
    lines = [
        f"Command: `{command}`",
        f"Date: {started}; machine: {machine}; CPU, {threads} thread(s); grid "
        f"{'x'.join(map(str, grid))}; median of the repeats."
        + (" **Quick run: the numbers mean nothing.**" if quick else ""),
        "",
        "| Workload | MONAI GaussianFilter (s) | ShiftedSumGaussian (s) | Speed-up |",
        "|---|---|---|---|",
    ]
    names = list(FILTERS)
    for workload in dict.fromkeys(r[0] for r in rows):
        seconds = {r[1]: r[2] for r in rows if r[0] == workload}
        slow, fast = seconds[names[0]], seconds[names[1]]
        lines.append(f"| {workload} | {slow:.3f} | {fast:.3f} | {slow / fast:.2f}x |")
    lines += [
        "",
        "Same maps: largest absolute difference "
        f"{differences['largest |difference| of the maps']:.2e}, against a largest |A| of "
        f"{differences['largest |A| of the maps']:.2e} (float32 rounding).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m bench.bench_normative " + shlex.join(
        list(argv if argv is not None else sys.argv[1:])
    )
    rows, differences, grid = measure(quick=args.quick, repeats=args.repeats)
    body = render(
        rows,
        differences,
        command=command.strip(),
        grid=grid,
        quick=args.quick,
        started=started,
        threads=args.threads,
    )
    text = args.out.read_text() if args.out.exists() else ""
    write_atomically(args.out, replace_section(text, SECTION, body, HEADING))
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark command: ``python -m bench [--quick] [--out docs/benchmarks.md]``.

Runs the training benchmark (seconds per epoch, L_C only against L_C + L_A with G, EG and IG;
``bench.bench_training``) and the Integrated Gradients benchmark (the project's IG against
Captum's; ``bench.bench_ig``) in one process, and writes each result between its markers in
the output file (``<!-- training:begin -->`` ... ``<!-- training:end -->``, ``<!-- ig:begin
-->`` ... ``<!-- ig:end -->``), with the command, date and machine. A second run replaces the
sections; text outside the markers is kept. ``--quick`` runs a tiny grid with few epochs and
repetitions: it checks that the command works, its numbers mean nothing.

Timing claims of the project live only in the file this command writes, never in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import captum
import torch

from attrivue_core.configs import RunConfig
from bench import docs
from bench.bench_ig import (
    AccuracySettings,
    IgSettings,
    render_accuracy,
    render_ig,
    run_accuracy,
    run_ig,
)
from bench.bench_training import NetworkSpec, TrainingSettings, render_training, run_training
from worker.ml import conv_grad
from worker.ml.attribution.captum_eval import load_on_grid
from worker.ml.synthetic import SyntheticConfig, generate_dataset
from worker.ml.training import SubjectSample, select_device

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTIONS = {
    "training": "Training: seconds per epoch with and without the attribution constraint",
    "ig": "Integrated Gradients: the project's implementation against Captum's",
    "ig-accuracy": "Integrated Gradients to a requested accuracy against Captum's default",
}
INTRO = """# Benchmarks

Every timing claim of the project lives on this page. Each section between its
`<!-- name:begin -->` and `<!-- name:end -->` markers is written by a benchmark command in
`bench/`, named in the section; re-running that command replaces the section and keeps the
rest of the page. Tests never assert timings: they only check that the commands write their
tables.
"""


@dataclass(frozen=True)
class Plan:
    """Everything one run measures."""

    grid: tuple[int, int, int]
    spacing_mm: float
    n_subjects: int
    training: TrainingSettings
    ig: IgSettings
    accuracy: AccuracySettings
    ig_batch: int = 4


def make_plan(*, quick: bool, device: str, patchgan_width: int) -> Plan:
    """The full benchmark, or the tiny ``--quick`` one."""
    if quick:
        grid, spacing = (16, 20, 16), 12.0
        networks = (NetworkSpec("small_cnn"), NetworkSpec("patchgan", base_width=4))
        return Plan(
            grid=grid,
            spacing_mm=spacing,
            n_subjects=8,
            training=TrainingSettings(
                grid=grid, networks=((networks[0], 2), (networks[1], 2)), device=device
            ),
            ig=IgSettings(
                networks=((networks[0], (4,)), (networks[1], (4,))),
                methods=("riemann_middle", "gausslegendre"),
                repetitions=2,
                device=device,
            ),
            accuracy=AccuracySettings(networks=(networks[0],), repetitions=1, device=device),
        )
    grid = (48, 56, 48)
    networks = (NetworkSpec("small_cnn"), NetworkSpec("patchgan", base_width=patchgan_width))
    return Plan(
        grid=grid,
        spacing_mm=4.0,
        n_subjects=16,
        # small_cnn's epochs are short and noisy: more of them, at little cost.
        training=TrainingSettings(
            grid=grid, networks=((networks[0], 9), (networks[1], 5)), device=device
        ),
        # PatchGAN at 32 points would double the run's length; 8 points check it agrees.
        ig=IgSettings(
            networks=((networks[0], (8, 32)), (networks[1], (8,))),
            methods=("riemann_middle", "gausslegendre"),
            repetitions=5,
            min_seconds=8.0,
            device=device,
        ),
        # small_cnn only: PatchGAN's 50-point Captum map takes ~15 s per run on one CPU thread.
        accuracy=AccuracySettings(networks=(networks[0],), device=device),
    )


# --------------------------------------------------------------------------- the markdown


def replace_section(text: str, name: str, body: str) -> str:
    """Put ``body`` in section ``name`` of the page (appended under its heading if absent)."""
    return docs.replace_section(text, name, body, SECTIONS.get(name, name))


def machine_line(device: torch.device) -> str:
    model = docs.cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    where = device.type
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    return (
        f"{model}, {os.cpu_count()} cores ({usable} usable), torch {torch.__version__}, "
        f"captum {captum.__version__}, torch threads: {torch.get_num_threads()}, device {where}"
    )


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def header(command: str, machine: str, seconds: float, load: tuple[float, float]) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "\n".join(
            [
                f"- Command: `{command}`",
                f"- Date: {date}; this section took {seconds:.0f} s",
                f"- Machine: {machine}",
                f"- 1-minute load average: {load[0]:.2f} when the section started, "
                f"{load[1]:.2f} when it ended",
            ]
        )
        + "\n\n"
    )


# --------------------------------------------------------------------------- the command


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _subjects(plan: Plan, folder: Path) -> list[SubjectSample]:
    healthy = plan.n_subjects // 2
    config = SyntheticConfig(
        n_healthy=healthy,
        n_lesion=plan.n_subjects - healthy,
        grid=plan.grid,
        spacing_mm=plan.spacing_mm,
        split_fractions=(1.0, 0.0, 0.0),
        seed=0,
    )
    records = generate_dataset(folder, config)
    return [SubjectSample(r.subject, r.image, r.mask, r.label, "train") for r in records]


def _ig_images(plan: Plan, subjects: list[SubjectSample]) -> torch.Tensor:
    """Half healthy, half pathological subjects, preprocessed as training does."""
    half = plan.ig_batch // 2
    chosen = [s for s in subjects if s.label == 0][:half]
    chosen += [s for s in subjects if s.label == 1][: plan.ig_batch - len(chosen)]
    return load_on_grid(RunConfig(grid=plan.grid), [s.image for s in chosen])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny grid, few repetitions")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    parser.add_argument(
        "--only", choices=sorted(SECTIONS), help="run one section (the other is left as is)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--patchgan-width",
        type=int,
        default=32,
        help="base width of the PatchGAN, full run only (64 as published; 32 keeps a CPU run short)",
    )
    parser.add_argument(
        "--native-convolutions",
        action="store_true",
        help="the training attribution's convolutions back-propagate with PyTorch's own kernels "
        "(worker.ml.conv_grad off): the comparison for its gain",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench" + (f" {shlex.join(arguments)}" if arguments else "")
    if args.threads:
        torch.set_num_threads(args.threads)
    conv_grad.ENABLED = not args.native_convolutions
    device = select_device(args.device)
    plan = make_plan(quick=args.quick, device=device.type, patchgan_width=args.patchgan_width)
    sections = [args.only] if args.only else list(SECTIONS)
    out: Path = args.out
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attrivue-bench-") as tmp:
        _log(f"[bench] generating {plan.n_subjects} synthetic subjects on {plan.grid}")
        subjects = _subjects(plan, Path(tmp) / "data")
        for name in sections:
            machine, load_before = machine_line(device), load_average()
            section_started = time.perf_counter()
            if name == "training":
                results = run_training(plan.training, subjects, Path(tmp) / "runs", _log)
                body = render_training(plan.training, results)
            elif name == "ig-accuracy":
                images = _ig_images(plan, subjects)
                accuracy = run_accuracy(plan.accuracy, images, _log)
                body = render_accuracy(plan.accuracy, accuracy, plan.grid)
            else:
                images = _ig_images(plan, subjects)
                body = render_ig(plan.ig, run_ig(plan.ig, images, _log), plan.grid)
            seconds = time.perf_counter() - section_started
            text = out.read_text() if out.exists() else INTRO
            stamp = header(command, machine, seconds, (load_before, load_average()))
            docs.write_atomically(out, replace_section(text, name, stamp + body))
            _log(f"[bench] {name}: {seconds:.0f} s, written to {out}")
    _log(f"[bench] done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

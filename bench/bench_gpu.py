"""The CUDA path, measured on a GPU machine: ``python -m bench.bench_gpu [--out FILE]``.

Three checks that only a GPU can make, written as the ``gpu`` section of
``docs/benchmarks.md``:

1. Training with the attribution constraint on CUDA, with and without mixed precision
   (``RunConfig.amp``): the supervised constrained setting with IG inside L_A, a few epochs on
   the synthetic dataset; seconds per epoch, whether AMP was active, and that every loss stayed
   finite.
2. Integrated Gradients at full resolution: the MNI152 template at 1 mm (197 x 233 x 189, the
   grid of a clinical volume), the project's differentiable IG against Captum's on the same
   network and points; seconds, peak GPU memory and the largest difference.
3. One training step of L_C + L_A at full resolution (IG inside the loss, graph kept for the
   double back-propagation), with and without AMP: seconds and peak memory.

It refuses to run without CUDA (the numbers would mean nothing); the CPU figures are those of
``python -m bench``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench import docs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
HEADING = "GPU: constrained training with mixed precision, and full-resolution IG"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30


def _finite(values: Sequence[float | None]) -> bool:
    return all(v is None or math.isfinite(v) for v in values)


def training_rows(device: torch.device, epochs: int, subjects: int) -> list[str]:
    """Check 1: constrained training on CUDA with and without AMP."""
    from attrivue_core.configs import RunConfig
    from worker.ml.synthetic import SyntheticConfig, generate_dataset
    from worker.ml.training import SubjectSample, as_split, train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        records = generate_dataset(
            folder / "data",
            SyntheticConfig(n_healthy=subjects // 2, n_lesion=subjects - subjects // 2, seed=0),
        )
        samples = [
            SubjectSample(r.subject, r.image, r.mask, r.label, as_split(r.split)) for r in records
        ]
        for network in ("small_cnn", "patchgan"):
            for amp in (False, True):
                config = RunConfig(
                    network=network,
                    loss_setting="lc_la_supervised",
                    train_attribution=["integrated_gradients"],
                    ig_steps=8,
                    epochs=epochs,
                    batch_size=4,
                    seed=0,
                    device="cuda",
                    amp=amp,
                )
                torch.cuda.reset_peak_memory_stats(device)
                started = time.perf_counter()
                result = train(config, samples, checkpoint_dir=folder / f"{network}-{amp}")
                seconds = time.perf_counter() - started
                history = result.history
                epoch_seconds = [float(h["seconds"]) for h in history]
                losses = [h.get("train_loss_c") for h in history] + [
                    h.get("train_loss_a") for h in history
                ]
                active = {float(h.get("amp_active", float("nan"))) for h in history}
                rows.append(
                    f"| {network} | {'on' if amp else 'off'} | {sorted(active)} | "
                    f"{np.median(epoch_seconds[1:] or epoch_seconds):.2f} | "
                    f"{_peak_gib(device):.2f} | {'yes' if _finite(losses) else 'NO'} | "
                    f"{result.test_metrics.get('auroc')} | {seconds:.0f} |"
                )
                _log(rows[-1])
    return rows


def _full_resolution_image(device: torch.device) -> torch.Tensor:
    from nilearn.datasets import load_mni152_template

    data = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    brain = data[data > 0]
    data = (data - brain.mean()) / (brain.std() + 1e-6)
    return torch.from_numpy(data)[None, None].to(device)


def ig_rows(device: torch.device, steps: int) -> tuple[list[str], tuple[int, ...]]:
    """Check 2: IG at 1 mm, the project's against Captum's."""
    from captum.attr import IntegratedGradients

    from worker.ml.attribution.differentiable import integrated_gradients
    from worker.ml.nets import build_network

    x = _full_resolution_image(device)
    rows = []
    for network in ("small_cnn", "densenet121"):
        torch.manual_seed(0)
        model = build_network(network).to(device).eval()
        timings: dict[str, float] = {}
        peaks: dict[str, float] = {}
        maps: dict[str, torch.Tensor] = {}
        for name in ("project", "captum"):
            for _repeat in range(2):  # the first call warms cuDNN up
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                started = time.perf_counter()
                if name == "project":
                    out = integrated_gradients(
                        model, x, steps=steps, internal_batch_size=4, create_graph=False
                    ).attributions
                else:
                    out = IntegratedGradients(lambda t, m=model: m(t).reshape(t.shape[0], -1)[:, 0])
                    out = out.attribute(
                        x, baselines=torch.zeros_like(x), n_steps=steps, internal_batch_size=4
                    )
                torch.cuda.synchronize(device)
                timings[name] = time.perf_counter() - started
                peaks[name] = _peak_gib(device)
            maps[name] = out.detach()
        diff = (maps["project"] - maps["captum"]).abs().max().item()
        scale = maps["captum"].abs().max().item()
        rows.append(
            f"| {network} | {steps} | {timings['project']:.2f} | {timings['captum']:.2f} | "
            f"{peaks['project']:.2f} | {peaks['captum']:.2f} | {diff:.2e} (max |A| {scale:.2e}) |"
        )
        _log(rows[-1])
    return rows, tuple(x.shape[2:])


def step_rows(device: torch.device, steps: int) -> list[str]:
    """Check 3: one L_C + L_A step at 1 mm with IG inside the loss."""
    import torch.nn.functional as F

    from worker.ml.attribution.differentiable import integrated_gradients
    from worker.ml.nets import build_network

    x = _full_resolution_image(device)
    target = torch.zeros_like(x)
    rows = []
    for amp in (False, True):
        torch.manual_seed(0)
        model = build_network("small_cnn").to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        seconds = []
        for _ in range(3):
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                logit = model(x)
                loss_c = F.binary_cross_entropy_with_logits(logit.float(), torch.ones_like(logit))
                maps = integrated_gradients(model, x, steps=steps, internal_batch_size=steps)
                loss_a = (maps.attributions.float().clamp(min=0) * (1 - target)).mean()
            scaler.scale(loss_c + loss_a).backward()
            scaler.step(optimizer)
            scaler.update()
            torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - started)
        finite = math.isfinite(loss_c.item()) and math.isfinite(loss_a.item())
        rows.append(
            f"| {'on' if amp else 'off'} | {steps} | {np.median(seconds[1:]):.2f} | "
            f"{_peak_gib(device):.2f} | {'yes' if finite else 'NO'} |"
        )
        _log(rows[-1])
    return rows


def render(
    command: str,
    seconds: float,
    device: torch.device,
    training: list[str],
    ig: list[str],
    grid: tuple[int, ...],
    step: list[str],
) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    name = torch.cuda.get_device_name(device)
    lines = [
        f"- Command: `{command}`",
        f"- Date: {date}; this section took {seconds:.0f} s",
        f"- Machine: {name}, torch {torch.__version__} (CUDA {torch.version.cuda})",
        "",
        "Constrained training (supervised L_C + L_A, IG with 8 points inside L_A, batch 4, "
        "the synthetic 48 x 56 x 48 dataset); `amp_active` is what the run's history recorded:",
        "",
        "| network | AMP asked | amp_active | s / epoch (median) | peak GiB | losses finite "
        "| test AUROC | run s |",
        "|---|---|---|---|---|---|---|---|",
        *training,
        "",
        f"Integrated Gradients on one full-resolution volume ({' x '.join(map(str, grid))}, the "
        "MNI152 template at 1 mm), random weights, zero baseline, chunks of 4 path points; the "
        "project's differentiable IG (without the graph) against Captum's:",
        "",
        "| network | points | project s | Captum s | project peak GiB | Captum peak GiB "
        "| largest difference |",
        "|---|---|---|---|---|---|---|",
        *ig,
        "",
        "One optimisation step of L_C + L_A at full resolution (small_cnn, IG inside L_A with "
        "the graph kept for the double back-propagation):",
        "",
        "| AMP | points | s / step (median of 2 after warm-up) | peak GiB | loss finite |",
        "|---|---|---|---|---|",
        *step,
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_gpu", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=32)
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--step-points", type=int, default=8)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark measures the GPU path only")
    device = torch.device("cuda")
    started = time.perf_counter()
    training = training_rows(device, args.epochs, args.subjects)
    ig, grid = ig_rows(device, args.ig_steps)
    step = step_rows(device, args.step_points)
    command = "python -m bench.bench_gpu " + shlex.join(list(argv or sys.argv[1:]))
    body = render(command.strip(), time.perf_counter() - started, device, training, ig, grid, step)
    text = args.out.read_text() if args.out.exists() else ""
    docs.write_atomically(args.out, docs.replace_section(text, "gpu", body, HEADING))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

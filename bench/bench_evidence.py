"""Cost of each evidence check of one map: ``python -m bench.bench_evidence [--quick]``.

Generates the demo dataset (``worker.demo``'s defaults: 16 subjects on 48x56x48 at 4 mm),
trains the default classifier (``small_cnn``, L_C + L_A) for a few epochs, computes the
Integrated Gradients map of one lesion subject on the working grid, and times each check of
``worker.ml.evidence`` on it (each once; a check's cost is dominated by its forward and
backward passes, which the table counts). Writes the ``evidence`` section of
docs/benchmarks.md (``--out``). ``--quick`` runs a tiny grid: it checks that the command works,
its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrivue_core.configs import AttributionConfig, RunConfig
from bench import docs
from bench.__main__ import DEFAULT_OUT, header, load_average, machine_line
from worker.ml.attribution.captum_eval import attribute_batch, load_on_grid
from worker.ml.evidence import (
    IROF_RANDOM_ORDERS,
    IROF_SEGMENTS,
    cascading_randomisation,
    data_randomisation,
    faithfulness,
    parameter_layers,
)
from worker.ml.nets import pathological_logit
from worker.ml.synthetic import SyntheticConfig, generate_dataset
from worker.ml.training import SubjectSample, as_split, load_model, select_device, train

NAME = "evidence"
HEADING = "Evidence checks: the cost of each check of one map"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(what: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = what()
    return value, time.perf_counter() - started


def measure(*, quick: bool, device: str, folder: Path) -> tuple[dict[str, Any], list[dict]]:
    """Train, map, and time each check; returns the settings and one row per check."""
    grid = (16, 20, 16) if quick else (48, 56, 48)
    synthetic = SyntheticConfig(
        n_healthy=4 if quick else 8,
        n_lesion=4 if quick else 8,
        grid=grid,
        spacing_mm=12.0 if quick else 4.0,
        seed=0,
    )
    records = generate_dataset(folder / "data", synthetic)
    subjects = [
        SubjectSample(r.subject, r.image, r.mask, r.label, as_split(r.split)) for r in records
    ]
    epochs = 1 if quick else 3
    config = RunConfig.model_validate(
        {"grid": grid, "epochs": epochs, "batch_size": 4, "seed": 0, "device": device}
    )
    _log(f"[evidence] training small_cnn for {epochs} epochs on {len(subjects)} subjects")
    result = train(config, subjects, checkpoint_dir=folder / "run")
    model, config = load_model(result.best_checkpoint, device=device)
    lesion = next(s for s in subjects if s.label == 1)
    x = load_on_grid(config, [lesion.image])  # (1, 1, *grid)
    settings = AttributionConfig(method="integrated_gradients", steps=8 if quick else 32)

    def attribute(network: torch.nn.Module) -> np.ndarray:
        maps, _ = attribute_batch(network, x, settings, device=device)
        return maps[0, 0]

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return pathological_logit(model(batch.to(device)))

    rows: list[dict] = []
    reference, seconds = _timed(lambda: attribute(model))
    rows.append({"check": f"the map itself (IG, {settings.steps} steps)", "seconds": seconds})
    curve_steps = 5 if quick else 20
    _, seconds = _timed(
        lambda: faithfulness(forward, x[0].to(device), reference, steps=curve_steps)
    )
    rows.append(
        {
            "check": (
                f"faithfulness (deletion + insertion, {curve_steps} steps; infidelity, 8 samples; "
                f"IROF, {IROF_SEGMENTS} supervoxels, map order + {IROF_RANDOM_ORDERS} random)"
            ),
            "seconds": seconds,
        }
    )
    layers = len(parameter_layers(model))
    _, seconds = _timed(lambda: cascading_randomisation(model, attribute, reference=reference))
    rows.append(
        {"check": f"model randomisation ({layers} layers, one map each)", "seconds": seconds}
    )
    data_epochs = 1 if quick else 2
    _, seconds = _timed(
        lambda: data_randomisation(
            config,
            subjects,
            attribute,
            reference,
            checkpoint_dir=folder / "permuted",
            epochs=data_epochs,
        )
    )
    rows.append(
        {
            "check": f"data randomisation ({data_epochs} epochs on permuted labels, one map)",
            "seconds": seconds,
        }
    )
    settings_used = {"grid": grid, "subjects": len(subjects), "epochs": epochs, "layers": layers}
    return settings_used, rows


def render(settings: dict[str, Any], rows: list[dict]) -> str:
    grid = "x".join(str(n) for n in settings["grid"])
    lines = [
        f"One lesion subject of the demo dataset ({settings['subjects']} subjects, grid {grid}), "
        f"`small_cnn` trained for {settings['epochs']} epochs (L_C + L_A), its Integrated "
        "Gradients map; each check timed once on the working grid.",
        "",
        "| check | seconds |",
        "|---|---|",
    ]
    lines += [f"| {row['check']} | {row['seconds']:.2f} |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_evidence", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny grid: checks the command")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to update")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = "python -m bench.bench_evidence" + (f" {shlex.join(arguments)}" if arguments else "")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attrivue-bench-evidence-") as tmp:
        settings, rows = measure(quick=args.quick, device=device.type, folder=Path(tmp))
    seconds = time.perf_counter() - started
    out: Path = args.out
    text = out.read_text() if out.exists() else "# Benchmarks\n"
    stamp = header(command, machine_line(device), seconds, (load_before, load_average()))
    body = stamp + render(settings, rows)
    docs.write_atomically(out, docs.replace_section(text, NAME, body, HEADING))
    _log(f"[evidence] {seconds:.0f} s, written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

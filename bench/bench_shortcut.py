"""Cost of the shortcut report and the cohort map on the demo dataset.

``python -m bench.bench_shortcut [--quick] [--repeats 3] [--out docs/benchmarks.md]``

In one process, with a fresh data directory and SQLite database: the demo dataset
(``worker.ml.synthetic`` defaults: 16 subjects, 48x56x48 at 4 mm, the dataset ``attrivue serve
--demo`` imports), one classification run trained for two epochs on the CPU, and a saliency map
of every subject. Then each job is created through ``backend.services.shortcuts`` and run by its
task function (``worker.tasks.shortcut``), as a worker would after claiming it, and timed from
the call to its return (claim, reads, computation, writes; no broker wait): the shortcut report
on the test and on the train split (a box region with the brain-mean fill, and the
top-relevance region with the blurred fill), and the cohort map of the train split's
pathological subjects. Each is repeated ``--repeats`` times; the median is reported.

The result goes between ``<!-- shortcut:begin -->`` and ``<!-- shortcut:end -->`` in the output
file, with the command, date and machine. ``--quick`` shrinks the grid and subjects: it checks
that the command works, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.docs import cpu_model, replace_section, write_atomically

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
SECTION = "shortcut"
HEADING = "Shortcut report and cohort map: seconds per job on the demo dataset"
BOX_MM = [[-60.0, -60.0, -30.0], [60.0, 40.0, 50.0]]  # a block of the brain's centre


@dataclass(frozen=True)
class Row:
    job: str
    split: str
    region: str
    subjects: int
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _log(message: str) -> None:
    print(f"[bench_shortcut] {message}", file=sys.stderr, flush=True)


def _setup(folder: Path, *, quick: bool) -> tuple[int, int]:
    """Environment, database, demo dataset, a trained run and saliency maps; (run id, user id)."""
    os.environ.update(
        {
            "ATTRIVUE_DATA_DIR": str(folder / "data"),
            "ATTRIVUE_ENVIRONMENT": "test",
            "ATTRIVUE_DEVICE": "cpu",
        }
    )
    for name in ("ATTRIVUE_DATABASE_URL", "ATTRIVUE_BROKER_URL"):
        os.environ.pop(name, None)
    from backend.core.config import get_settings
    from backend.core.db import session_scope, upgrade_database
    from backend.models import AttributionMap, Run, User
    from backend.schemas.attribution import AttributionBatchCreate
    from backend.services.attributions import create_attributions
    from backend.services.demo import import_manifest
    from backend.services.projects import create_project
    from backend.services.runs import create_run
    from backend.services.users import create_user
    from worker.ml.synthetic import SyntheticConfig, ensure_dataset
    from worker.tasks.attribute import run_attribution
    from worker.tasks.train import run_training

    get_settings.cache_clear()
    upgrade_database()
    config = (
        SyntheticConfig(n_healthy=6, n_lesion=6, grid=(24, 28, 24), spacing_mm=8.0, seed=0)
        if quick
        else SyntheticConfig(n_healthy=8, n_lesion=8, seed=0)
    )
    _log(f"generating {config.n_subjects} demo subjects on {config.grid}")
    ensure_dataset(folder / "demo", config)
    with session_scope() as session:
        user = create_user(session, username="bench", password="bench-password", role="admin")
        project = create_project(session, name="bench", description="", user=user)
        user_id, project_id = user.id, project.id
    dataset_id = import_manifest(
        folder / "demo", project_id=project_id, name="demo", description="", user_id=user_id
    )
    run_config: dict[str, Any] = {
        "epochs": 1 if quick else 2,
        "batch_size": 4,
        "device": "cpu",
        "seed": 1,
        "grid": list(config.grid),
    }
    with session_scope() as session:
        owner = session.get(User, user_id)
        assert owner is not None
        run = create_run(
            session, dataset_id=dataset_id, name="bench", config=run_config, user=owner
        )
        run_id, job_id = run.id, run.job_id
    _log(f"training run {run_id}")
    assert job_id is not None
    run_training(job_id)
    with session_scope() as session:
        status = session.get(Run, run_id).status  # type: ignore[union-attr]
        assert status == "succeeded", f"the run ended {status}"
    for split in ("train", "val", "test"):
        with session_scope() as session:
            rows = create_attributions(
                session,
                body=AttributionBatchCreate(run_id=run_id, split=split, method="saliency"),
                user=session.get(User, user_id),  # type: ignore[arg-type]
            )
            jobs = [r.job_id for r in rows]
        for job in jobs:
            assert job is not None
            run_attribution(job)
    with session_scope() as session:
        done = session.query(AttributionMap).filter(AttributionMap.status == "succeeded").count()
    _log(f"{done} saliency maps stored")
    return run_id, user_id


def _time(create: Callable[[], int], run: Callable[[int], None], repeats: int) -> list[float]:
    from backend.core.db import session_scope
    from backend.models import Job

    seconds = []
    for _ in range(repeats):
        job_id = create()
        start = time.perf_counter()
        run(job_id)
        seconds.append(time.perf_counter() - start)
        with session_scope() as session:
            job = session.get(Job, job_id)
            assert job is not None and job.status == "succeeded", job and job.error
    return seconds


def measure(folder: Path, *, quick: bool, repeats: int) -> tuple[list[Row], str]:
    from backend.core.db import session_scope
    from backend.models import Run, RunPrediction, Subject, User
    from backend.services.shortcuts import create_cohort_map, create_report
    from worker.tasks.shortcut import run_cohort_map, run_shortcut_report

    run_id, user_id = _setup(folder, quick=quick)
    with session_scope() as session:
        grid = session.get(Run, run_id).config["grid"]  # type: ignore[union-attr]

    def n_split(split: str) -> int:
        with session_scope() as session:
            query = session.query(RunPrediction).filter(RunPrediction.run_id == run_id)
            return query.filter(RunPrediction.split == split).count()

    def report(split: str, params: dict) -> Callable[[], int]:
        def create() -> int:
            with session_scope() as session:
                run = session.get(Run, run_id)
                user = session.get(User, user_id)
                assert run is not None and user is not None
                row = create_report(session, run, split=split, params=params, user=user)
                assert row.job_id is not None
                return row.job_id

        return create

    def cohort() -> int:
        with session_scope() as session:
            run = session.get(Run, run_id)
            user = session.get(User, user_id)
            assert run is not None and user is not None
            row = create_cohort_map(
                session, run, split="train", label=1, method="saliency", user=user
            )
            assert row.job_id is not None
            return row.job_id

    box = {"region": {"kind": "box", "box_mm": BOX_MM}, "fill": "mean", "method": None}
    top = {"region": {"kind": "top_relevance", "fraction": 0.01}, "fill": "blur", "method": None}
    rows = []
    for split in ("test", "train"):
        for name, params in (
            ("box, brain-mean fill", box),
            ("top 1% of abs. relevance, blur", top),
        ):
            _log(f"shortcut report: {split}, {name}")
            seconds = _time(report(split, params), run_shortcut_report, repeats)
            rows.append(Row("shortcut report", split, name, n_split(split), seconds))
    _log("cohort map")
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        n_cohort = (
            session.query(Subject)
            .filter(Subject.dataset_id == run.dataset_id, Subject.split == "train")
            .filter(Subject.label == 1)
            .count()
        )
    rows.append(
        Row(
            "cohort map",
            "train",
            "label 1 (mean + t)",
            n_cohort,
            _time(cohort, run_cohort_map, repeats),
        )
    )
    return rows, "x".join(str(g) for g in grid)


def render(rows: Sequence[Row], *, command: str, grid: str, quick: bool, started: str) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    epochs = 1 if quick else 2
    machine = (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, 1-minute load average {load:.2f} at the end"
    )
    lines = [
        f"- Command: `{command}`",
        f"- Date: {started}",
        f"- Machine: {machine} (no GPU; ATTRIVUE_DEVICE=cpu)",
        "",
        ("**Quick run: the numbers mean nothing.** " if quick else "")
        + f"The demo dataset on the working grid {grid}, a classification run (small_cnn, {epochs} "
        "epoch(s)), a saliency map per subject. Each job is run by its task function as a worker "
        "would after claiming it (claim, database reads, computation, writes; no queue wait). "
        "The shortcut report preprocesses and predicts every subject of the split twice (as "
        "stored and with the region erased) and reads each subject's map and brain mask; the "
        "cohort map resamples the maps to the first subject's grid (here all on one grid) and "
        "fits nilearn's second-level model.",
        "",
        "| job | split | region / group | subjects | s (median) | min | max | s per subject |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.job} | {r.split} | {r.region} | {r.subjects} | {r.median:.2f} | "
            f"{min(r.seconds):.2f} | {max(r.seconds):.2f} | {r.median / max(r.subjects, 1):.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m bench.bench_shortcut " + shlex.join(
        list(argv if argv is not None else sys.argv[1:])
    )
    with tempfile.TemporaryDirectory(prefix="attrivue-bench-shortcut-") as tmp:
        rows, grid = measure(Path(tmp), quick=args.quick, repeats=args.repeats)
    body = render(rows, command=command.strip(), grid=grid, quick=args.quick, started=started)
    text = args.out.read_text() if args.out.exists() else ""
    write_atomically(args.out, replace_section(text, SECTION, body, HEADING))
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line of the research experiments (docs/method.md section 6).

    python -m worker.research EXPERIMENT [options]      (alias: python -m worker.experiments)
    python -m worker.research EXPERIMENT --help         (the options of one experiment)

Each experiment rewrites its own section of a Markdown file (``docs/experiments.md`` by
default, between ``<!-- EXPERIMENT:begin -->`` and ``<!-- EXPERIMENT:end -->``), keeping the
other sections, and saves its figure in ``img/`` next to that file. The section records the
command as it was typed (``python -m worker.research ...`` or the alias).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from worker.research import (
    corrections,
    four_settings,
    regression,
    remedies,
    segmentation,
    shortcut,
    suite,
)
from worker.research.common import (
    Options,
    add_shared_arguments,
    defaults_text,
    shared_options,
    write_section,
)

__all__ = ["EXPERIMENTS", "HELP", "PROG", "build_parser", "main"]

PROG = "python -m worker.research"


@dataclass(frozen=True)
class _Shared:
    """An experiment that takes the shared options (``worker.research.common.Options``)."""

    module: ModuleType
    run: Callable[[Options], str]
    defaults: Mapping[str, Any]


SHARED: dict[str, _Shared] = {
    four_settings.NAME: _Shared(
        four_settings, four_settings.run_four_settings, four_settings.EXPERIMENT_DEFAULTS
    ),
    shortcut.NAME: _Shared(shortcut, shortcut.run_shortcut, shortcut.EXPERIMENT_DEFAULTS),
    remedies.NAME: _Shared(remedies, remedies.run_remedies, remedies.EXPERIMENT_DEFAULTS),
    regression.NAME: _Shared(regression, regression.run_regression, regression.EXPERIMENT_DEFAULTS),
    corrections.NAME: _Shared(
        corrections, corrections.run_corrections, corrections.EXPERIMENT_DEFAULTS
    ),
}
EXPERIMENTS = (*SHARED, segmentation.NAME, suite.NAME)
HELP = {
    four_settings.NAME: "the four loss settings on one MS-like data set (docs/method.md section 3)",
    shortcut.NAME: "L_C only against L_C + L_A on the site-shortcut data (docs/method.md section 5)",
    remedies.NAME: "remedies for slow, unsteady training with L_A (docs/method.md section 6.1)",
    regression.NAME: "regression with and without the constraint (docs/method.md section 6.2)",
    corrections.NAME: "one simulated round of clinicians' corrections",
    segmentation.NAME: "annotated fraction, with and without the constraint (docs/method.md section 6.3)",
    suite.NAME: "every training preset on every data regime, held-out seeds",
}


def _add(
    subparsers: Any, name: str, module: ModuleType, epilog: str | None = None
) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=HELP[name],
        description=(module.__doc__ or "").strip(),
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The parser of every experiment, one subcommand each."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(
        dest="experiment", required=True, metavar="EXPERIMENT", title="experiments"
    )
    for name, shared in SHARED.items():
        add_shared_arguments(_add(subparsers, name, shared.module, defaults_text(shared.defaults)))
    segmentation.add_arguments(
        _add(
            subparsers,
            segmentation.NAME,
            segmentation,
            f"defaults: {segmentation.DEFAULTS}; --quick: {segmentation.QUICK}",
        )
    )
    suite.add_arguments(_add(subparsers, suite.NAME, suite))
    return parser


def _write(name: str, out: Path, make_body: Callable[[], str]) -> int:
    """Run an experiment and write its section, with the wall time of the command."""
    started = time.perf_counter()
    body = make_body()
    total = time.perf_counter() - started
    body += f"\n\nTotal wall time of the command: {total:.0f} s."
    write_section(out, name, body)
    print(f"{name}: wrote {out} in {total:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the experiment named by ``argv[0]``; ``prog`` is the command recorded with it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    name = args.experiment
    command = shlex.join([*shlex.split(prog), *argv])  # a command a shell can run again
    if name == suite.NAME:
        return suite.run_suite(args, command)
    if name == segmentation.NAME:
        seg_options = segmentation.options_from_args(args, command)
        return _write(name, seg_options.out, lambda: segmentation.run(seg_options))
    shared = SHARED[name]
    options = shared_options(args, name, shared.defaults, command)
    torch.set_num_threads(max(1, options.threads))
    return _write(name, options.out, lambda: shared.run(options))

"""Checkpoints of a run: ``last.pt`` (everything needed to resume) and ``best.pt`` (the
weights worth keeping), the RNG states they carry, and rebuilding a network from them.

Layout (``torch.save`` of a dict, loadable with ``weights_only=True``):
    ``last.pt``  written after every epoch: everything needed to resume.
    ``best.pt``  written when the early-stopping metric improves: model and config.
Both are written to a temporary file in ``checkpoint_dir`` and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.regression import build_model
from worker.ml.training.datatypes import CheckpointMismatchError, SubjectSample
from worker.ml.training.loop import Loop, RunState

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LAST_CHECKPOINT",
    "RESUMABLE_CHANGES",
    "atomic_save",
    "best_payload",
    "check_compatible",
    "fingerprint",
    "get_rng_state",
    "last_payload",
    "load_baseline",
    "load_model",
    "load_payload",
    "resume",
    "set_rng_state",
]

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
CHECKPOINT_FORMAT = 1
# Fields that may differ between the run that wrote last.pt and the run that resumes it:
# they change how long or where training goes on, not what has been learned so far.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "early_stopping_patience", "device", "amp", "val_attribution", "grad_probe_batches"}
)


def load_model(
    checkpoint_path: Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, RunConfig]:
    """Rebuild a trained network from ``best.pt`` or ``last.pt``.

    Args:
        checkpoint_path: Checkpoint written by ``train``.
        device: Device to load the weights onto.

    Returns:
        The network in eval mode, and the configuration it was trained with.
    """
    payload = load_payload(Path(checkpoint_path), device)
    config = RunConfig.model_validate(payload["config"])
    model = build_model(config)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), config


def load_baseline(checkpoint_path: Path) -> torch.Tensor | None:
    """The IG reference ``(C, D, H, W)`` a run's maps use (``attribution_baseline="healthy"``),
    or ``None`` for the zero image, from its ``best.pt`` or ``last.pt``."""
    payload = load_payload(Path(checkpoint_path), "cpu")
    baseline = payload.get("baseline")
    return None if baseline is None else torch.as_tensor(baseline, dtype=torch.float32)


def fingerprint(subjects: Sequence[SubjectSample], *, with_targets: bool = False) -> str:
    """Digest of who is in which split with which label (and target, for regression runs;
    paths may move between attempts)."""
    rows = sorted(
        (str(s.subject_id), s.split, int(s.label), *([s.target] if with_targets else []))
        for s in subjects
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def last_payload(loop: Loop, state: RunState) -> dict[str, Any]:
    """Everything needed to resume after ``state.epoch``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "last",
        "config": loop.config.model_dump(mode="json"),
        "epoch": state.epoch,
        "subjects": loop.fingerprint,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scaler": loop.scaler.state_dict(),
        "balancer": loop.balancer.state_dict(),
        "history": state.history,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "best_tier": state.best_tier,
        "best_metric": state.best_metric,
        "rng": get_rng_state(),
        # The IG reference of the run's maps, as in best.pt: the last weights are scored and
        # explained from the same baseline as the best ones.
        "baseline": _baseline_of(loop),
    }


def best_payload(loop: Loop, state: RunState) -> dict[str, Any]:
    """The weights worth keeping, with the config that rebuilds the network."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "best",
        "config": loop.config.model_dump(mode="json"),
        "epoch": state.epoch,
        "model": loop.model.state_dict(),
        "metrics": state.history[-1],
        # The IG reference of the run's maps (attribution_baseline "healthy"), or None.
        "baseline": _baseline_of(loop),
    }


def _baseline_of(loop: Loop) -> torch.Tensor | None:
    return None if loop.baseline is None else loop.baseline[0].detach().cpu()


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint so that ``path`` is always either the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_payload(path: Path, device: str | torch.device) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path}: unknown checkpoint format {payload.get('format')}")
    return payload


def resume(loop: Loop) -> tuple[RunState, dict[str, Any] | None]:
    """Load last.pt into the loop if present; return the state and the stored RNG state."""
    path = loop.checkpoint_dir / LAST_CHECKPOINT
    if not path.exists():
        return RunState(), None
    payload = load_payload(path, loop.device)
    check_compatible(RunConfig.model_validate(payload["config"]), loop.config, path)
    if payload["subjects"] != loop.fingerprint:
        raise CheckpointMismatchError(
            f"{path} was written for other subjects (ids, labels or splits differ); "
            "remove it to start over"
        )
    loop.model.load_state_dict(payload["model"])
    loop.optimizer.load_state_dict(payload["optimizer"])
    if loop.use_amp and payload["scaler"]:
        loop.scaler.load_state_dict(payload["scaler"])
    loop.balancer.load_state_dict(payload.get("balancer"))
    state = RunState(
        epoch=int(payload["epoch"]),
        history=list(payload["history"]),
        best_score=payload["best_score"],
        best_epoch=int(payload["best_epoch"]),
        bad_epochs=int(payload["bad_epochs"]),
        # A last.pt from before the classification fallback: every epoch was tier 1.
        best_tier=int(payload.get("best_tier", 1)),
        best_metric=payload.get("best_metric"),
    )
    return state, payload["rng"]


def check_compatible(stored: RunConfig, current: RunConfig, path: Path) -> None:
    """Refuse to resume a checkpoint that a different run wrote."""
    changed = sorted(
        name
        for name in RunConfig.model_fields
        if name not in RESUMABLE_CHANGES and getattr(stored, name) != getattr(current, name)
    )
    if changed:
        raise CheckpointMismatchError(
            f"{path} was written with a different configuration ({', '.join(changed)}); "
            "remove it to start over"
        )


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (safe for weights_only loading)."""
    # legacy=True always yields the (name, keys, pos, has_gauss, cached) tuple.
    name, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by ``get_rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs restores only the devices present.
        cuda_states = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, device=index)


def _as_tuple(value: Any) -> Any:
    """Turn nested lists back into the tuples ``random.setstate`` requires."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value

"""Cancelling a run: between steps (``Loop.check_cancel``) and inside them (``cancel_checks``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

__all__ = ["CANCEL_POLL_SECONDS", "TrainingCancelled", "cancel_checks"]


class TrainingCancelled(Exception):
    """Raised when ``should_stop`` asked training to stop; last.pt is left untouched."""


CANCEL_POLL_SECONDS = 1.0  # at most one ``should_stop`` call per this many seconds in a step


@contextlib.contextmanager
def cancel_checks(
    model: nn.Module, should_stop: Callable[[], bool] | None, *, what: str = "a step"
) -> Iterator[None]:
    """Poll ``should_stop`` before each forward pass of ``model`` while the context is open.

    Between steps is not often enough: one step of a large volume with a differentiable
    attribution loss runs many forward passes (every chunk of IG's path points), and a
    Captum map or an evaluation pass likewise. The check runs at most every
    ``CANCEL_POLL_SECONDS`` (``should_stop`` may read a database) and raises
    ``TrainingCancelled`` from inside the pass; no weight or checkpoint is written after it.
    """
    if should_stop is None:
        yield
        return
    last = [time.monotonic()]

    def check(_module: nn.Module, _args: Any) -> None:
        now = time.monotonic()
        if now - last[0] < CANCEL_POLL_SECONDS:
            return
        last[0] = now
        if should_stop():
            raise TrainingCancelled(f"cancelled during {what}")

    handle = model.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()

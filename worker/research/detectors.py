"""Where a small_cnn's map gets its pathological relevance: its lesion detectors or the rest.

``small_cnn``'s logit is ``bias + sum_c w_c * f_c(x)`` over its pooled features ``f_c``
(floored where ``evidence_floor`` set a floor). Integrated Gradients is linear in the
function it explains, so the map of the logit is the sum of two maps: that of the **lesion
detectors** (features with ``w_c > 0``: a larger response raises the pathological logit) and
that of the **other features** (``w_c <= 0``: evidence of a healthy brain). Scoring each part
separately says which one puts red on a healthy subject (docs/experiments.md, "What keeps a
third of a healthy subject's relevance pathological").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.ml.attribution.differentiable import integrated_gradients
from worker.ml.nets import SmallCNN

__all__ = ["PartLogit", "detector_split"]


class PartLogit(nn.Module):
    """The part of a small_cnn's logit that one group of pooled features contributes.

    ``model`` is the run's network (``SmallCNN``, or a wrapper around one such as the
    normative input); ``detectors`` picks the features with a positive head weight (True) or
    the others (False). The bias is left out: it changes no map.
    """

    def __init__(self, model: nn.Module, detectors: bool) -> None:
        super().__init__()
        self.model = model
        self.net = next(m for m in model.modules() if isinstance(m, SmallCNN))
        self.detectors = detectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = self.net.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.model(x)
        finally:
            hook.remove()
        features = captured[0]  # (B, F), floored as the head sees them
        weight = self.net.head.weight[0]
        chosen = weight > 0 if self.detectors else weight <= 0
        return (features * (weight * chosen)).sum(dim=1)  # (B,)


def detector_split(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    *,
    steps: int = 16,
    baseline: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Positive mass, negative mass and sum of each part's Integrated Gradients map.

    Args:
        model: The run's network, in eval mode.
        images: Preprocessed images ``(C, D, H, W)``.
        steps: Gauss-Legendre points.
        baseline: The reference ``(C, D, H, W)`` of the paths (a run's healthy mean,
            ``load_baseline``); ``None`` is the zero image.

    Returns:
        One dict per image, inside the brain (voxels where any channel is non-zero):
        ``detectors_positive``, ``detectors_negative``, ``detectors_sum``, the same three
        for ``others``, and ``healthy_share`` of the whole map (positive mass over absolute
        mass). The two sums add up to F(x) - F(x') to the quadrature's accuracy.
    """
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    try:
        for image in images:
            x = torch.as_tensor(image).float()[None]
            brain = (x[0] != 0).any(dim=0).numpy()
            row: dict[str, Any] = {}
            total = np.zeros(brain.shape, dtype=np.float64)
            for name, detectors in (("detectors", True), ("others", False)):
                part = PartLogit(model, detectors)
                out = integrated_gradients(
                    part,
                    x,
                    baseline=None if baseline is None else baseline.float()[None],
                    steps=steps,
                    method="gausslegendre",
                    create_graph=False,
                )
                a = out.attributions.detach()[0].sum(dim=0).double().numpy()
                total += a
                inside = a[brain]
                row[f"{name}_positive"] = float(inside.clip(min=0).sum())
                row[f"{name}_negative"] = float((-inside).clip(min=0).sum())
                row[f"{name}_sum"] = float(inside.sum())
            inside = total[brain]
            absolute = float(np.abs(inside).sum())
            row["healthy_share"] = float(inside.clip(min=0).sum() / absolute) if absolute else 0.0
            rows.append(row)
    finally:
        model.train(was_training)
    return rows

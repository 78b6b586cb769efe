"""Named starting configurations of a training run: what a user picks instead of a blank form.

A preset is a plain dict of ``RunConfig`` fields (the others keep RunConfig's defaults) with a
title and a description. The API lists them (``GET /presets``) and applies one when a run is
created with ``preset``: the preset's values first, then the fields the user gave explicitly.
The launch form fills its fields from them.

torch-free (the backend imports this module). The values are those the data-regime suite
(``python -m worker.experiments regimes``, docs/experiments.md "Data regimes") evaluates on
held-out generator seeds; the suite reads them from here, so what is measured is what a user
gets.
"""

from __future__ import annotations

import copy
from typing import Any, TypedDict

from attrivue_core.configs import ATTRIBUTION_EARLY_STOPPING

__all__ = ["PRESETS", "Preset", "UnknownPreset", "apply_preset", "get_preset", "preset_names"]


class Preset(TypedDict):
    """One preset: its display title, what it is for, and its RunConfig fields."""

    title: str
    description: str
    config: dict[str, Any]


class UnknownPreset(ValueError):
    """A preset name that is not one of ``PRESETS``."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown preset {name!r}: choose one of {', '.join(repr(n) for n in PRESETS)}"
        )
        self.name = name


# Shared by the three presets (docs/experiments.md, "Data regimes"): each subject's brain mask
# crops the volume and zeroes the background; model selection on validation AUROC (ties to
# the lowest calibrated validation loss; the constrained presets refine it on their maps,
# below); the logit offset calibrated on validation.
_COMMON: dict[str, Any] = {
    "network": "small_cnn",
    "grid": [48, 56, 48],
    "brain": "mask",
    "epochs": 12,
    "learning_rate": 3e-3,
    "batch_size": 4,
    "early_stopping_metric": "val_auroc",
    "calibrate_logit": True,
}
# The normative input channel (worker.ml.normative; docs/method.md section 3.1): without it
# the classifier stayed at chance on lesions darker than white matter (test AUROC 0.49 and 0.51
# on the two dark regimes; with it 0.99 and 1.00, the bright regimes unchanged at 1.00;
# docs/experiments.md, "Dark lesions with the normative input").
_NORMATIVE: dict[str, Any] = {"normative_input": True}
# The attribution constraint's settings of the two constrained presets. The map is normalised
# per subject inside L_A (temperature 2 on a map of mean |A| 1): without it the constraint is
# met by flattening the network, and the constrained presets lost their classifier by the
# last epoch (docs/experiments.md, "Data regimes"). The baseline's logit is held at the
# decision boundary and the eval-mode logits on their labels' sides (baseline_logit_weight):
# without it the constraint was met by lifting F(x') above every subject, which makes every
# map sum to a negative amount, and batch-norm drift collapsed the last epoch's accuracy to
# 0.50 (docs/experiments.md, "The baseline's logit").
_CONSTRAINT: dict[str, Any] = {
    "train_attribution": ["integrated_gradients"],
    "ig_steps": 4,
    "lambda_a": {"kind": "constant", "value": 5.0},
    "attribution_normalise": True,
    "attribution_scale": 2.0,
    "baseline_logit_weight": 1.0,
}

# Model selection of the constrained presets: among the epochs whose validation AUROC is within
# 0.03 of the best so far, the one whose validation maps meet the constraint's own target best
# (lesion mass with masks; the healthy share, which needs no mask, without). The AUROC rule
# alone kept epochs 1-2, before the constraint had moved relevance: on the dark regimes the
# healthy share fell from 0.13 to 0.04 and the lesion mass rose by a third
# (docs/experiments.md, "Selecting the epoch on the maps"). Costs an IG pass over the
# validation split after every epoch (val_attribution).
_MARGIN = 0.03
_SELECT_SUPERVISED: dict[str, Any] = {
    "val_attribution": True,
    "early_stopping_metric": "val_lesion_mass",
    "selection_auroc_margin": _MARGIN,
}
_SELECT_WEAKLY: dict[str, Any] = {
    "val_attribution": True,
    "early_stopping_metric": "val_attr_healthy_share",
    "selection_auroc_margin": _MARGIN,
}

PRESETS: dict[str, Preset] = {
    "classification": {
        "title": "Classification",
        "description": (
            "The classifier alone (L_C only): lesion versus healthy from the image label, no "
            "attribution constraint. The network sees each image beside its deviation from the "
            "healthy training subjects (normative input), so lesions darker than white matter "
            "are learnt too. Needs healthy subjects in the training split."
        ),
        "config": {"loss_setting": "lc_only", **_COMMON, **_NORMATIVE},
    },
    "constrained_supervised": {
        "title": "Constrained, supervised",
        "description": (
            "Classifier plus the attribution constraint with lesion masks as targets (L_C + "
            "lambda L_A): pathological relevance belongs on the lesions. Needs lesion masks "
            "for the pathological training subjects. The kept epoch is the one with the most "
            "validation relevance on the lesions among those within 0.03 of the best "
            "validation AUROC. The baseline's output is held at the decision boundary, so "
            "the maps' colours come from the network, not from a shifted baseline."
        ),
        "config": {
            "loss_setting": "lc_la_supervised",
            **_COMMON,
            **_CONSTRAINT,
            **_SELECT_SUPERVISED,
        },
    },
    "constrained_weakly_supervised": {
        "title": "Constrained, weakly supervised",
        "description": (
            "Classifier plus the attribution constraint from image labels only (L_C + lambda "
            "L_A): healthy subjects must carry no pathological relevance. No masks needed. "
            "The kept epoch is the one with the least pathological relevance on healthy "
            "validation subjects among those within 0.03 of the best validation AUROC. The "
            "baseline's output is held at the decision boundary, so the maps' colours come "
            "from the network, not from a shifted baseline. It does not keep relevance off a "
            "feature that only pathological subjects carry, such as an artefact of the site "
            "that sent the patients (it can push the network onto it); where one is "
            "suspected, use the supervised preset."
        ),
        "config": {
            "loss_setting": "lc_la_unsupervised",
            **_COMMON,
            **_CONSTRAINT,
            **_SELECT_WEAKLY,
        },
    },
}


def preset_names() -> list[str]:
    """The presets' names, in display order."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """A deep copy of the preset ``name``.

    Raises:
        UnknownPreset: If there is no such preset.
    """
    if name not in PRESETS:
        raise UnknownPreset(name)
    return copy.deepcopy(PRESETS[name])


def apply_preset(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """The preset's config with ``config``'s fields on top (a new dict).

    Nested settings given in ``config`` (``lambda_a``, ``regression``) are merged into the
    preset's key by key, so ``{"lambda_a": {"value": 1}}`` keeps the preset's schedule kind.

    Raises:
        UnknownPreset: If there is no such preset.

    Example:
        >>> apply_preset("classification", {"epochs": 5})["epochs"]
        5
    """
    merged = get_preset(name)["config"]
    for key, value in config.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    if (
        merged.get("selection_auroc_margin") is not None
        and "selection_auroc_margin" not in config
        and merged.get("early_stopping_metric") not in ATTRIBUTION_EARLY_STOPPING
    ):
        # The preset's AUROC margin belongs to its attribution metric: a user who selects on
        # val_auroc or val_loss instead gets the plain rule, not a refused configuration.
        merged["selection_auroc_margin"] = None
    return merged

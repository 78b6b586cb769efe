"""Named presets (attrivue_core.presets): valid configs, applied under the user's own fields."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attrivue_core.configs import RunConfig
from attrivue_core.presets import PRESETS, UnknownPreset, apply_preset, get_preset, preset_names
from tests.conftest import REPO


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_valid_run_config(name: str) -> None:
    preset = get_preset(name)
    assert preset["title"] and preset["description"]
    config = RunConfig.model_validate(preset["config"])
    # Every value the preset sets is what the run gets.
    dumped = config.model_dump(mode="json")
    for key, value in preset["config"].items():
        if isinstance(value, dict):
            assert {k: dumped[key][k] for k in value} == value, key
        else:
            assert dumped[key] == value, key


def test_the_constrained_presets_constrain_and_the_classification_one_does_not() -> None:
    settings = {n: get_preset(n)["config"]["loss_setting"] for n in preset_names()}
    assert settings == {
        "classification": "lc_only",
        "constrained_supervised": "lc_la_supervised",
        "constrained_weakly_supervised": "lc_la_unsupervised",
    }


def test_user_fields_override_the_preset_and_nested_ones_merge() -> None:
    merged = apply_preset(
        "constrained_weakly_supervised", {"epochs": 7, "lambda_a": {"value": 0.5}}
    )
    assert merged["epochs"] == 7 and merged["loss_setting"] == "lc_la_unsupervised"
    assert merged["lambda_a"] == {"kind": "constant", "value": 0.5}
    # The registry itself is untouched.
    assert PRESETS["constrained_weakly_supervised"]["config"]["lambda_a"]["value"] == 5.0
    merged["train_attribution"].append("gradient")
    assert PRESETS["constrained_weakly_supervised"]["config"]["train_attribution"] == [
        "integrated_gradients"
    ]


def test_an_unknown_preset_names_the_choices() -> None:
    with pytest.raises(UnknownPreset, match=r"unknown preset 'turbo'.*'classification'"):
        apply_preset("turbo", {})
    with pytest.raises(UnknownPreset):
        get_preset("turbo")


def test_presets_do_not_import_torch() -> None:
    probe = "import attrivue_core.presets, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_constrained_presets_select_their_epoch_on_the_maps_inside_an_auroc_margin() -> None:
    supervised = RunConfig.model_validate(get_preset("constrained_supervised")["config"])
    weakly = RunConfig.model_validate(get_preset("constrained_weakly_supervised")["config"])
    assert supervised.early_stopping_metric == "val_lesion_mass"
    # Without lesion masks: the share of positive relevance on healthy validation subjects.
    assert weakly.early_stopping_metric == "val_attr_healthy_share"
    for config in (supervised, weakly):
        assert config.val_attribution and config.selection_auroc_margin == 0.03
    classification = RunConfig.model_validate(get_preset("classification")["config"])
    assert classification.early_stopping_metric == "val_auroc"
    assert classification.selection_auroc_margin is None


def test_choosing_a_classification_metric_drops_the_presets_auroc_margin() -> None:
    # The margin ranks an attribution metric; with val_auroc the run would be refused.
    merged = apply_preset("constrained_supervised", {"early_stopping_metric": "val_auroc"})
    assert merged["selection_auroc_margin"] is None
    assert RunConfig.model_validate(merged).early_stopping_metric == "val_auroc"
    # Another attribution metric keeps it; a margin the user gives is theirs.
    merged = apply_preset("constrained_supervised", {"early_stopping_metric": "val_attr_dice"})
    assert merged["selection_auroc_margin"] == 0.03
    merged = apply_preset(
        "constrained_weakly_supervised",
        {"early_stopping_metric": "val_lesion_mass", "selection_auroc_margin": 0.1},
    )
    assert merged["selection_auroc_margin"] == 0.1
    with pytest.raises(ValueError, match="selection_auroc_margin"):
        RunConfig.model_validate(
            apply_preset(
                "constrained_supervised",
                {"early_stopping_metric": "val_loss", "selection_auroc_margin": 0.05},
            )
        )


def test_the_constrained_presets_hold_the_baselines_logit_at_the_boundary() -> None:
    # Without the term the constraint was met by lifting F(x') above every subject (every
    # map then sums to a negative amount) and the last epoch's accuracy collapsed to 0.50
    # through batch-norm drift (docs/experiments.md, "The baseline's logit"). What the term
    # does to a run is tested in tests/ml/test_constrained_training.py.
    for name in ("constrained_supervised", "constrained_weakly_supervised"):
        config = RunConfig.model_validate(get_preset(name)["config"])
        assert config.baseline_logit_weight == 1.0, name
    classification = RunConfig.model_validate(get_preset("classification")["config"])
    assert classification.baseline_logit_weight == 0.0  # no L_A to add it to


def test_no_preset_floors_its_lesion_detectors() -> None:
    # evidence_floor is a research option: on held-out data it met the healthy-share target on
    # bright ellipsoids but cost AUROC on small lesions and on the faint-lesion artefact
    # regime (docs/experiments.md, "A floor for the lesion detectors").
    for name in PRESETS:
        assert RunConfig(**PRESETS[name]["config"]).evidence_floor == "off", name

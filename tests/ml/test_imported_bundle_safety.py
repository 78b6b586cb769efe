"""A MONAI bundle's configs are code (``$`` expressions are evaluated, ``_target_`` names any
callable): an imported bundle's ``network_def`` may only build a network, never run code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from worker.ml.imported import ModelImportError, load_bundle_network

GRID = [8, 8, 8]
CLASSIFIER = {
    "_target_": "monai.networks.nets.Classifier",
    "in_shape": [1, *GRID],
    "classes": 2,
    "channels": [4, 8],
    "strides": [2, 2],
}


def _bundle(root: Path, inference: dict, *, weights: bool = True) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    if weights:
        from monai.networks.nets import Classifier

        net = Classifier(in_shape=[1, *GRID], classes=2, channels=[4, 8], strides=[2, 2])
        torch.save(net.state_dict(), root / "models" / "model.pt")
    return root


def test_a_plain_monai_network_loads(tmp_path: Path) -> None:
    net = load_bundle_network(_bundle(tmp_path / "b", {"network_def": CLASSIFIER}))
    assert net(torch.zeros(1, 1, *GRID)).shape == (1, 2)


def _hostile(marker: Path) -> list[tuple[str, dict]]:
    touch = f"$__import__('pathlib').Path({str(marker)!r}).touch()"
    return [
        ("an expression as an argument", {"network_def": {**CLASSIFIER, "classes": touch}}),
        (
            "a reference to an expression",
            {"shape": touch, "network_def": {**CLASSIFIER, "in_shape": "@shape"}},
        ),
        (
            "a target outside MONAI's networks",
            {
                "network_def": {
                    "_target_": "pathlib.Path.touch",
                    "self": {"_target_": "pathlib.Path", "args": [str(marker)]},
                }
            },
        ),
        (
            "a target outside MONAI's networks, in an argument",
            {
                "network_def": {
                    **CLASSIFIER,
                    "act": {"_target_": "os.system", "command": f"touch {marker}"},
                }
            },
        ),
        ("the debug mode", {"network_def": {**CLASSIFIER, "_mode_": "debug"}}),
        ("a whole expression", {"network_def": touch}),
    ]


@pytest.mark.parametrize("case", range(6))
def test_a_bundle_that_would_run_code_is_refused_and_runs_nothing(
    tmp_path: Path, case: int
) -> None:
    marker = tmp_path / "ran"
    what, inference = _hostile(marker)[case]
    root = _bundle(tmp_path / "b", inference)
    with pytest.raises(ModelImportError, match="network_def") as caught:
        load_bundle_network(root)
    assert not marker.exists(), f"{what}: the bundle's code ran"
    assert "does not run a bundle" in str(caught.value) or "not a network definition" in str(
        caught.value
    ), str(caught.value)

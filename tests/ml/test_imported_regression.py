"""An imported regression model (issue 20 item 1: "the output that is ... the regression
target"): the spec's ``task`` goes into the run's config, the model is checked and loaded as
a classifier is, and its Integrated Gradients map (the worker's ``attribute_subject``, as a
trained regression run's) equals Captum's IG of ``output[:, index]`` on the same input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from attrivue_core.configs import AttributionConfig, RunConfig
from attrivue_core.imported import IMPORT_FILE, TORCHSCRIPT_FILE, ModelInputSpec
from worker.ml.attribution.captum_eval import attribute_subject
from worker.ml.imported import check_imported, load_imported
from worker.ml.transforms import IMAGE_KEY, preprocess_for, to_native

GRID = (8, 10, 8)
STEPS = 8
INDEX = 1


class Regressor(nn.Module):
    """Two outputs per image; the second is the predicted target (a score, say)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3.0 + 10.0 * self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)))


def _staged(tmp_path: Path) -> tuple[Path, Regressor]:
    folder = tmp_path / "import"
    folder.mkdir()
    net = Regressor().eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    (folder / TORCHSCRIPT_FILE).write_bytes(buffer.getvalue())
    spec = ModelInputSpec(grid=GRID, brain="nonzero", logit_index=INDEX, task="regression")
    record = {"format": "torchscript", "spec": spec.model_dump(mode="json")}
    record["config"] = spec.run_config()
    (folder / IMPORT_FILE).write_text(json.dumps(record))
    return folder, net


def _image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = np.zeros((12, 14, 12), np.float32)
    data[2:10, 2:12, 2:10] = 1.0 + rng.random((8, 10, 8), dtype=np.float32)
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.0, 1.2, 1.0])), path)
    return path


def test_the_spec_says_regression_in_the_run_config() -> None:
    assert ModelInputSpec(grid=GRID).run_config()["task"] == "classification"
    config = ModelInputSpec(grid=GRID, task="regression").run_config()
    assert config["task"] == "regression"
    assert RunConfig.model_validate(config).task == "regression"
    with pytest.raises(ValueError, match="task"):
        ModelInputSpec(grid=GRID, task="segmentation")  # type: ignore[arg-type]


def test_an_imported_regression_map_equals_captums_ig_of_the_prediction(tmp_path: Path) -> None:
    folder, net = _staged(tmp_path)
    image = _image(tmp_path)
    check = check_imported(folder, image)
    model, config = load_imported(folder)
    assert config.task == "regression"
    assert check.output_shape == [1, 2]

    settings = AttributionConfig.model_validate({"method": "integrated_gradients", "steps": STEPS})
    result = attribute_subject(model, config, image, settings)

    transform = preprocess_for(config)
    prepared = transform({IMAGE_KEY: str(image)})[IMAGE_KEY]
    x = prepared.as_tensor()[None].float()
    with torch.no_grad():
        prediction = float(net(x)[0, INDEX])
    assert check.logit == pytest.approx(prediction, rel=1e-5)
    assert result.logit == pytest.approx(prediction, rel=1e-5)
    theirs = IntegratedGradients(lambda t: net(t)[:, INDEX]).attribute(
        x, baselines=torch.zeros_like(x), n_steps=STEPS, method="gausslegendre"
    )
    expected, _ = to_native(theirs[0].detach(), prepared, transform)
    scale = float(np.abs(expected).max())
    assert scale > 0
    assert result.map.shape == expected.shape
    np.testing.assert_allclose(result.map, expected, rtol=1e-5, atol=1e-5 * scale)

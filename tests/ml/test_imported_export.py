"""A ``torch.export`` program imported as a run: recognised from its archive, loaded, checked
with a forward pass, and explained exactly as the module it was exported from."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from attrivue_core.imported import EXPORT_FILE, IMPORT_FILE, ModelInputSpec
from backend.services.errors import InvalidInput
from backend.services.models import recognise
from worker.ml.imported import ModelImportError, check_imported, load_imported

GRID = (8, 8, 8)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)))


def _export(path: Path, *, dynamic: bool = True) -> Net:
    net = Net().eval()
    example = torch.randn(2 if dynamic else 1, 1, *GRID)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=shapes), str(path))
    return net


def _staged(tmp_path: Path, *, dynamic: bool = True) -> tuple[Path, Net]:
    folder = tmp_path / "import"
    folder.mkdir()
    net = _export(folder / EXPORT_FILE, dynamic=dynamic)
    spec = ModelInputSpec(grid=GRID, brain="nonzero", logit_index=2)
    record = {
        "format": "torch_export",
        "spec": spec.model_dump(mode="json"),
        "config": spec.run_config(),
    }
    (folder / IMPORT_FILE).write_text(json.dumps(record))
    return folder, net


def _image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = np.zeros((12, 12, 12), np.float32)
    data[2:10, 2:10, 2:10] = 1.0 + rng.random((8, 8, 8), dtype=np.float32)
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_the_archive_is_recognised_as_a_torch_export_program(tmp_path: Path) -> None:
    _export(tmp_path / "model.pt2")
    assert recognise(tmp_path / "model.pt2") == ("torch_export", "")


def test_a_plain_zip_is_still_not_a_model(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.zip", "w") as archive:
        archive.writestr("x/archive_format", "pt2")  # no graph under models/
    with pytest.raises(InvalidInput, match="torch.export program"):
        recognise(tmp_path / "x.zip")


def test_the_program_checks_and_its_ig_equals_captums_on_the_original(tmp_path: Path) -> None:
    folder, net = _staged(tmp_path)
    check = check_imported(folder, _image(tmp_path))
    model, _ = load_imported(folder)
    x = torch.randn(1, 1, *GRID)
    assert float(model(x)) == pytest.approx(float(net(x)[0, 2]), rel=1e-6)
    assert check is not None
    ours = IntegratedGradients(model).attribute(x, n_steps=16, method="gausslegendre")
    theirs = IntegratedGradients(lambda t: net(t)[:, 2]).attribute(
        x, n_steps=16, method="gausslegendre"
    )
    peak = float(theirs.abs().max())
    assert peak > 0
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * peak)


def test_a_program_exported_for_one_image_at_a_time_is_refused(tmp_path: Path) -> None:
    folder, _ = _staged(tmp_path, dynamic=False)
    with pytest.raises(ModelImportError, match="dynamic batch dimension"):
        check_imported(folder, _image(tmp_path))

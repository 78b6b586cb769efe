"""Issue 20, item 3's gaps: every path that feeds a subject to a network takes all of its
channels (``worker.ml.transforms.subject_on_grid``): the healthy_mean baseline and healthy
references, evidence checks, shortcut reports, the corrected run's comparison, imported-model
checks and the memory estimate. Each test here failed while these paths read channel 0 only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from attrivue_core.configs import AttributionConfig, RunConfig
from attrivue_core.imported import IMPORT_FILE, TORCHSCRIPT_FILE, ModelInputSpec
from attrivue_core.memory import attribution_memory, training_memory
from worker.ml.attribution.captum_eval import (
    attribute_batch,
    attribute_subject,
    attribute_with_spread,
    load_on_grid,
    mean_on_grid,
)
from worker.ml.epoch_maps import load_grid_subject
from worker.ml.evidence import faithfulness, supervoxels
from worker.ml.imported import check_imported
from worker.ml.nets import build_network, pathological_logit
from worker.ml.shortcut import erase_region, logits_with_region_erased, subject_logit
from worker.ml.transforms import subject_on_grid

GRID = (12, 12, 12)
SHAPE = (14, 16, 14)
AFFINE = np.diag([1.2, 1.0, 1.1, 1.0])


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _subject(root: Path, name: str, seed: int, lesion: bool) -> tuple[Path, Path, Path]:
    """A 'T1' (no lesion) and a 'FLAIR' (the lesion bright, another scale), and the mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    t1 = brain * (100 + 5 * rng.standard_normal(SHAPE))
    flair = brain * (400 + 20 * rng.standard_normal(SHAPE))
    blob = ((grid - 0.2) ** 2).sum(0) < 0.3**2
    if lesion:
        flair = flair + 800 * blob
    paths = (root / f"{name}_t1.nii.gz", root / f"{name}_flair.nii.gz", root / f"{name}_m.nii.gz")
    for path, data in zip(paths, (t1, flair, blob * lesion), strict=True):
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), AFFINE), path)
    return paths


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("two_paths")
    subjects = [_subject(root, f"s{i}", i, lesion=i % 2 == 1) for i in range(4)]
    config = RunConfig(grid=GRID, in_channels=2)
    torch.manual_seed(0)
    model = build_network("small_cnn", in_channels=2).eval()
    return {"subjects": subjects, "config": config, "model": model, "root": root}


def _stacked(config: RunConfig, t1: Path, flair: Path) -> torch.Tensor:
    return subject_on_grid(config, t1, [flair]).as_tensor()


def test_the_shared_helper_stacks_the_channels(two: dict) -> None:
    t1, flair, _ = two["subjects"][1]
    x = _stacked(two["config"], t1, flair)
    assert tuple(x.shape) == (2, *GRID)
    assert not torch.allclose(x[0], x[1])  # the FLAIR's lesion is not in the T1


def test_healthy_mean_and_references_have_every_channel(two: dict) -> None:
    config, model = two["config"], two["model"]
    healthy = [s for i, s in enumerate(two["subjects"]) if i % 2 == 0]
    images = [t1 for t1, _, _ in healthy]
    channels = [[flair] for _, flair, _ in healthy]
    mean = mean_on_grid(config, images, None, channels)
    assert tuple(mean.shape) == (2, *GRID)
    expected = torch.stack([_stacked(config, t1, fl) for t1, fl, _ in healthy]).mean(0)
    torch.testing.assert_close(mean, expected)
    references = load_on_grid(config, images, None, channels)
    assert tuple(references.shape) == (2, 2, *GRID)

    t1, flair, _ = two["subjects"][1]
    settings = AttributionConfig(method="integrated_gradients", baseline="healthy_mean", steps=4)
    result = attribute_subject(model, config, t1, settings, healthy_mean=mean, channels=[flair])
    assert result.channels is not None and result.channels.shape == (2, *SHAPE)
    shap = AttributionConfig(method="gradient_shap", references="healthy", n_samples=4)
    result = attribute_subject(model, config, t1, shap, references=references, channels=[flair])
    assert result.channels is not None and np.abs(result.channels[1]).max() > 0


def test_a_stochastic_map_of_two_channels_keeps_the_uncertainty_of_the_sum(two: dict) -> None:
    config, model = two["config"], two["model"]
    t1, flair, _ = two["subjects"][1]
    settings = AttributionConfig(method="smoothgrad", n_samples=6, seed=1)
    result = attribute_subject(model, config, t1, settings, channels=[flair])
    assert result.channels is not None and result.channels.shape == (2, *SHAPE)
    assert result.sd is not None and result.agreement is not None  # were dropped
    assert result.sd.shape == result.agreement.shape == SHAPE
    assert float(result.sd.max()) > 0 and 0 <= float(result.agreement.min())
    assert result.stats["uncertainty_mean_sd"] is not None
    # On the grid: a map per channel, one spread (of their sum).
    maps, sd, agreement = attribute_with_spread(model, _stacked(config, t1, flair)[None], settings)
    assert maps.shape == (1, 2, *GRID)
    assert sd is not None and agreement is not None and sd.shape == (1, 1, *GRID)


def test_faithfulness_of_a_two_channel_subject(two: dict) -> None:
    config, model = two["config"], two["model"]
    t1, flair, _ = two["subjects"][1]
    x = _stacked(config, t1, flair)
    settings = AttributionConfig(method="integrated_gradients", steps=4)
    maps, _ = attribute_batch(model, x[None], settings)  # was refused: (B, 1, ...) only
    assert maps.shape == (1, 2, *GRID)
    brain = (x != 0).any(dim=0).numpy()
    labels = supervoxels(x.numpy(), n_segments=8, brain_mask=brain)
    assert labels.shape == GRID and labels.max() >= 2

    def forward(batch: torch.Tensor) -> torch.Tensor:
        assert batch.shape[1] == 2  # both channels reach the network
        return pathological_logit(model(batch))

    result = faithfulness(
        forward, x, maps[0], steps=4, brain_mask=brain, irof_segments=8, irof_random_orders=2
    )
    assert len(result["deletion"]) == 5 and np.isfinite(result["infidelity"])
    with torch.no_grad():
        logit = float(forward(x[None])[0])
    assert result["deletion"][0] == pytest.approx(logit, rel=1e-5, abs=1e-6)
    assert result["irof"]["segments"] >= 2


def test_shortcut_logits_take_every_channel_and_erase_the_region_in_each(two: dict) -> None:
    config, model = two["config"], two["model"]
    t1, flair, _ = two["subjects"][1]
    logit = subject_logit(model, config, t1, None, torch.device("cpu"), [flair])
    with torch.no_grad():
        expected = float(pathological_logit(model(_stacked(config, t1, flair)[None]))[0])
    assert logit == pytest.approx(expected, rel=1e-6)

    def nothing(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
        return np.zeros(image.shape, bool)

    def upper(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
        region = np.zeros(image.shape, bool)
        region[:, :, SHAPE[2] // 2 :] = True
        return region

    kept, erased = logits_with_region_erased(
        model,
        config,
        [(t1, None, nothing), (t1, None, upper)],
        "background",
        channels=[[flair], [flair]],
    )
    assert kept.before == pytest.approx(expected, rel=1e-6)
    assert kept.after == pytest.approx(expected, rel=1e-6)
    # The region is emptied in both channels, not only in the T1.
    folder = two["root"] / "erased"
    folder.mkdir()
    paths = []
    for path in (t1, flair):
        image = np.asarray(nib.load(path).dataobj, np.float32)
        paths.append(folder / path.name)
        nib.save(
            nib.Nifti1Image(erase_region(image, upper(image, AFFINE), "background"), AFFINE),
            paths[-1],
        )
    with torch.no_grad():
        both = float(pathological_logit(model(_stacked(config, *paths)[None]))[0])
    assert erased.after == pytest.approx(both, rel=1e-5, abs=1e-6)
    assert erased.after != pytest.approx(expected, rel=1e-4)


def test_the_corrected_runs_comparison_loads_every_channel(two: dict) -> None:
    t1, flair, mask = two["subjects"][1]
    grid = load_grid_subject(two["config"], "s1", t1, mask, [flair])
    assert tuple(grid.image.shape) == (2, *GRID)
    torch.testing.assert_close(grid.image, _stacked(two["config"], t1, flair))
    assert grid.mask is not None and grid.mask.any()


class _TwoChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(2, 3, 3, padding=1)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).mean(dim=(2, 3, 4)))


def test_an_imported_two_channel_model_is_checked_on_both_modalities(two: dict) -> None:
    folder = two["root"] / "import"
    folder.mkdir()
    net = _TwoChannels().eval()
    torch.jit.save(torch.jit.script(net), str(folder / TORCHSCRIPT_FILE))
    spec = ModelInputSpec(grid=GRID, brain="nonzero", channels=2)
    record = {
        "format": "torchscript",
        "spec": spec.model_dump(mode="json"),
        "config": spec.run_config(),
    }
    (folder / IMPORT_FILE).write_text(json.dumps(record))
    assert spec.run_config()["in_channels"] == 2
    t1, flair, _ = two["subjects"][1]
    check = check_imported(folder, t1, channels=[flair])
    with torch.no_grad():
        prepared = _stacked(RunConfig.model_validate(spec.run_config()), t1, flair)
        expected = float(net(prepared[None]).reshape(-1)[0])
    assert check.logit == pytest.approx(expected, rel=1e-5)


def test_the_memory_estimate_counts_the_channels() -> None:
    one = RunConfig(grid=(64, 64, 64), in_channels=1)
    two = RunConfig(grid=(64, 64, 64), in_channels=2)
    assert training_memory(two).total_bytes > training_memory(one).total_bytes
    settings = AttributionConfig(method="integrated_gradients")
    assert (
        attribution_memory(two, settings).total_bytes
        > attribution_memory(one, settings).total_bytes
    )

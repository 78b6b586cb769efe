"""Two modalities per subject (issue 20): preprocessing stacks them as channels (each
normalised on its own), the network takes two channels, and training with the attribution
constraint runs through the real training path (the target repeated across channels)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from attrivue_core.configs import RunConfig
from worker.ml.training import ProgressEvent, SubjectSample, train
from worker.ml.training.checkpoints import load_model
from worker.ml.transforms import IMAGE_KEY, preprocess_for, to_native

GRID = (12, 14, 12)
SHAPE = (14, 16, 14)
AFFINE = np.diag([1.2, 1.0, 1.1, 1.0])


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _volumes(rng: np.random.Generator, lesion: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 'T1' where the lesion does not show, a 'FLAIR' (another scale) where it does."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    t1 = brain * (100 + 5 * rng.standard_normal(SHAPE))
    flair = brain * (400 + 20 * rng.standard_normal(SHAPE))
    blob = np.zeros(SHAPE, bool)
    if lesion:
        centre = rng.uniform(-0.3, 0.3, 3)
        blob = ((grid - centre[:, None, None, None]) ** 2).sum(0) < 0.3**2
        flair = flair + 800 * blob
    return t1.astype(np.float32), flair.astype(np.float32), blob.astype(np.uint8)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> list[SubjectSample]:
    root = tmp_path_factory.mktemp("two_channels")
    rng = np.random.default_rng(3)
    out = []
    for split, count in {"train": 8, "val": 4, "test": 4}.items():
        for i in range(count):
            label = i % 2
            t1, flair, blob = _volumes(rng, bool(label))
            paths = [root / f"{split}{i}_{m}.nii.gz" for m in ("t1", "flair", "mask")]
            for path, data in zip(paths, (t1, flair, blob), strict=True):
                nib.save(nib.Nifti1Image(data, AFFINE), path)
            out.append(
                SubjectSample(
                    f"{split}{i}",
                    paths[0],
                    paths[2] if label else None,
                    label,
                    split,  # type: ignore[arg-type]
                    channels=(paths[1],),
                )
            )
    return out


def test_preprocessing_stacks_the_modalities_each_normalised_alone(
    subjects: list[SubjectSample],
) -> None:
    config = RunConfig(grid=GRID, in_channels=2)
    transform = preprocess_for(config)
    subject = subjects[1]
    image = transform({IMAGE_KEY: subject.image_item()})[IMAGE_KEY]
    assert tuple(image.shape) == (2, *GRID)
    for channel in image.as_tensor():
        inside = channel[channel != 0]
        # z-scored per modality: the FLAIR's 4x scale does not leak into the T1's statistics.
        assert abs(float(inside.mean())) < 0.05 and abs(float(inside.std()) - 1) < 0.05
    # A two-channel map goes back to the native grid channel by channel.
    maps = torch.stack([torch.ones(GRID), 2 * torch.ones(GRID)])
    native, affine = to_native(maps, image, transform)
    assert native.shape == (2, *SHAPE)
    np.testing.assert_allclose(affine, AFFINE, atol=1e-5)
    assert float(np.median(native[1])) == pytest.approx(2 * float(np.median(native[0])))


def test_two_channel_training_with_the_constraint(
    subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = RunConfig(
        grid=GRID,
        in_channels=2,
        loss_setting="lc_la_supervised",
        epochs=2,
        batch_size=4,
        learning_rate=3e-3,
        device="cpu",
        seed=0,
    )
    events: list[ProgressEvent] = []
    result = train(config, subjects, checkpoint_dir=tmp_path, progress=events.append)
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 2 * 8 // 4
    for event in steps:
        assert event.loss_a is not None and np.isfinite(event.loss_a) and event.loss_a > 0
        assert event.grad_norm_total is not None and event.grad_norm_total > 0
        if event.step == 1:  # the instrumented step of each epoch measures L_A's gradient
            assert event.grad_norm_a is not None and event.grad_norm_a > 0
    assert result.test_metrics["attr_lesion_mass"] is not None
    model, stored = load_model(result.best_checkpoint)
    assert stored.in_channels == 2
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.in_channels == 2
    with torch.no_grad():
        assert model(torch.zeros(1, 2, *GRID)).shape[0] == 1
    # A one-channel input is not what this network takes.
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 1, *GRID))

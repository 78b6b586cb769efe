"""Tests of native-space inversion of the preprocessing and of the Captum attribution methods.

Every method runs through one table of cases (``CASES``) and the same checks: shape, finite
values, no hidden absolute value, convergence delta where defined, a known answer on a linear
model, and the native-space return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from attrivue_core.configs import AttributionConfig, AttributionMethod, RunConfig
from worker.ml.attribution import attribute_batch, attribute_subject, available_methods
from worker.ml.nets import build_network, pathological_logit
from worker.ml.transforms import IMAGE_KEY, preprocess, to_native

GRID = (16, 20, 16)
NATIVE_SHAPE = (20, 18, 14)
# Not RAS: voxel axes are permuted and flipped relative to world axes, spacing anisotropic.
NATIVE_AFFINE = np.array(
    [
        [0.0, 0.0, -1.5, 30.0],
        [-1.25, 0.0, 0.0, 20.0],
        [0.0, 2.0, 0.0, -10.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
CUBE = (slice(3, 9), slice(4, 10), slice(2, 7))
LINEAR_GRID = (4, 5, 3)


class LinearNet(nn.Module):
    """F(x) = sum(w * x) + b: every method has a closed-form answer on it."""

    gradcam_layer_name = "conv"

    def __init__(self, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, kernel_size=grid)  # one output voxel per image

    @property
    def w(self) -> torch.Tensor:
        return self.conv.weight.detach()[0]  # (1, *grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.conv(x))


Answer = Callable[[LinearNet, torch.Tensor], torch.Tensor]


def _gradient(net: LinearNet, x: torch.Tensor) -> torch.Tensor:
    return net.w.expand_as(x)


def _times_input(net: LinearNet, x: torch.Tensor) -> torch.Tensor:
    return net.w * x


def _constant_logit(net: LinearNet, x: torch.Tensor) -> torch.Tensor:
    # Grad-CAM of the one-voxel output layer: weight dF/dlayer = 1 times the layer, F(x).
    with torch.no_grad():
        return net(x).reshape(-1, 1, 1, 1, 1).expand_as(x)


@dataclass(frozen=True)
class MethodCase:
    """One attribution method, its fast settings, and what it must satisfy.

    Attributes:
        method: AttributionConfig.method.
        params: Settings for a random small CNN on GRID (few steps and samples).
        signed: On a random network the map has both signs; a method that quietly took
            absolute values would fail.
        has_delta: Reports a convergence delta.
        answer: The exact map on ``LinearNet`` (zero baseline).
        linear_params: Settings for LinearNet when they differ from ``params``.
    """

    method: AttributionMethod
    params: dict[str, Any]
    signed: bool
    has_delta: bool
    answer: Answer
    linear_params: dict[str, Any] | None = field(default=None)


CASES = [
    MethodCase("integrated_gradients", {"steps": 8}, True, True, _times_input),
    # stdevs=0: the synthetic references are the zero image, so EG reduces to w * x.
    MethodCase(
        "gradient_shap",
        {"n_samples": 6, "n_references": 3},
        False,
        True,
        _times_input,
        {"stdevs": 0.0},
    ),
    MethodCase("saliency", {}, True, False, _gradient),
    MethodCase("input_x_gradient", {}, True, False, _times_input),
    MethodCase("deeplift", {}, True, True, _times_input),
    # No nn.ReLU in either network: the guided rule changes nothing.
    MethodCase("guided_backprop", {}, False, False, _gradient),
    # One-voxel windows: F(x) - F(x with voxel i zeroed) = w_i x_i.
    MethodCase(
        "occlusion",
        {"window": (4, 4, 4)},
        False,
        False,
        _times_input,
        {"window": (1, 1, 1), "stride": (1, 1, 1)},
    ),
    MethodCase("smoothgrad", {"n_samples": 4}, False, False, _gradient),
    MethodCase("grad_cam", {}, False, False, _constant_logit),
]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads, and on a shared 2-core machine
    # spinning OpenMP threads make the tests several times slower under load.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _world(affine: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """World coordinates of voxel indices ``(N, 3)``."""
    return voxels @ affine[:3, :3].T + affine[:3, 3]


def _centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return _world(affine, np.argwhere(mask).astype(float)).mean(axis=0)


@pytest.fixture()
def subject_path(tmp_path: Path) -> Path:
    """A non-RAS subject with a bright cube, on a grid unlike the working grid."""
    rng = np.random.default_rng(0)
    volume = 1.0 + 0.2 * rng.random(NATIVE_SHAPE)
    volume[CUBE] += 4.0
    path = tmp_path / "subject.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), NATIVE_AFFINE), path)
    return path


@pytest.fixture()
def random_model() -> torch.nn.Module:
    torch.manual_seed(3)
    return build_network("small_cnn").eval()


def test_to_native_restores_shape_affine_and_physical_location(subject_path: Path) -> None:
    transform = preprocess(GRID)
    image = transform({IMAGE_KEY: str(subject_path)})[IMAGE_KEY]
    assert tuple(image.shape) == (1, *GRID)
    grid_affine = np.asarray(image.affine)

    # The cube sits at the same physical place on the working grid...
    native_cube = np.zeros(NATIVE_SHAPE, bool)
    native_cube[CUBE] = True
    cube_world = _centroid(native_cube, NATIVE_AFFINE)
    grid_cube = image[0].numpy() > image[0].numpy().mean() + image[0].numpy().std()
    np.testing.assert_allclose(_centroid(grid_cube, grid_affine), cube_world, atol=1.5)

    # ...and a map marking the grid voxels inside the cube's physical box comes back onto it.
    # Native voxel coordinates of every grid voxel centre; the cube spans start-0.5..stop-0.5.
    grid_to_native = np.linalg.inv(NATIVE_AFFINE) @ grid_affine
    native_coords = _world(grid_to_native, np.indices(GRID).reshape(3, -1).T.astype(float))
    low = np.array([s.start for s in CUBE]) - 0.5
    high = np.array([s.stop for s in CUBE]) - 0.5
    inside = np.all((native_coords >= low) & (native_coords < high), axis=1).reshape(GRID)
    native_map, affine = to_native(torch.from_numpy(inside.astype(np.float32)), image, transform)

    assert native_map.shape == NATIVE_SHAPE
    assert native_map.dtype == np.float32
    np.testing.assert_allclose(affine, NATIVE_AFFINE, atol=1e-5)
    marked = native_map > 0.5
    dice = 2 * (marked & native_cube).sum() / (marked.sum() + native_cube.sum())
    assert dice > 0.7
    np.testing.assert_allclose(_centroid(marked, NATIVE_AFFINE), cube_world, atol=1.5)


def test_to_native_is_exact_for_a_linear_field_of_world_coordinates(subject_path: Path) -> None:
    # Each grid voxel holds its own world coordinate; brought back, each native voxel must hold
    # its own world coordinate (trilinear interpolation of a linear field is exact inside).
    transform = preprocess(GRID)
    image = transform({IMAGE_KEY: str(subject_path)})[IMAGE_KEY]
    grid_world = _world(np.asarray(image.affine), np.indices(GRID).reshape(3, -1).T.astype(float))
    native_world = _world(NATIVE_AFFINE, np.indices(NATIVE_SHAPE).reshape(3, -1).T.astype(float))
    interior = (slice(1, -1),) * 3
    for axis in range(3):
        field = grid_world[:, axis].reshape(GRID).astype(np.float32)
        native_map, _ = to_native(field, image, transform)
        expected = native_world[:, axis].reshape(NATIVE_SHAPE)
        np.testing.assert_allclose(native_map[interior], expected[interior], atol=1e-3)


def test_to_native_rejects_a_map_of_the_wrong_shape(subject_path: Path) -> None:
    transform = preprocess(GRID)
    image = transform({IMAGE_KEY: str(subject_path)})[IMAGE_KEY]
    with pytest.raises(ValueError, match="grid shape"):
        to_native(np.zeros((4, 4, 4), np.float32), image, transform)


def test_ig_map_is_native_signed_and_complete(
    subject_path: Path, random_model: torch.nn.Module, tmp_path: Path
) -> None:
    config = RunConfig(grid=GRID)
    result = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=64, internal_batch_size=16)
    )

    assert result.map.shape == NATIVE_SHAPE
    assert result.map.dtype == np.float32
    np.testing.assert_allclose(result.affine, NATIVE_AFFINE)
    # Signed: a random network has voxels pushing both ways; no absolute value was taken.
    assert result.stats["min"] < 0 < result.stats["max"]
    assert result.stats["negative_mass"] < 0 < result.stats["positive_mass"]
    assert result.convergence_delta is not None and result.baseline_logit is not None
    gap = abs(result.logit - result.baseline_logit)
    assert gap > 0
    assert result.convergence_delta < 0.05 * gap
    assert result.probability == pytest.approx(1 / (1 + np.exp(-result.logit)))

    path = tmp_path / "map.nii.gz"
    nib.save(nib.Nifti1Image(result.map, result.affine), path)
    reloaded = nib.load(path)
    np.testing.assert_allclose(reloaded.affine, NATIVE_AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(reloaded.dataobj), result.map)


def test_ig_convergence_delta_shrinks_with_more_steps(
    subject_path: Path, random_model: torch.nn.Module
) -> None:
    config = RunConfig(grid=GRID)
    coarse = attribute_subject(random_model, config, subject_path, AttributionConfig(steps=4))
    fine = attribute_subject(random_model, config, subject_path, AttributionConfig(steps=64))
    assert fine.convergence_delta is not None and coarse.convergence_delta is not None
    assert fine.convergence_delta < coarse.convergence_delta
    assert fine.logit == pytest.approx(coarse.logit)


def test_ig_chunking_does_not_change_the_map(
    subject_path: Path, random_model: torch.nn.Module
) -> None:
    config = RunConfig(grid=GRID)
    whole = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=12, internal_batch_size=12)
    )
    chunked = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=12, internal_batch_size=5)
    )
    np.testing.assert_allclose(chunked.map, whole.map, rtol=1e-4, atol=1e-6)


def test_blur_baseline_changes_the_reference(
    subject_path: Path, random_model: torch.nn.Module
) -> None:
    config = RunConfig(grid=GRID)
    zero = attribute_subject(random_model, config, subject_path, AttributionConfig(steps=8))
    blur = attribute_subject(
        random_model, config, subject_path, AttributionConfig(steps=8, baseline="blur")
    )
    assert blur.baseline_logit != pytest.approx(zero.baseline_logit)
    assert blur.map.shape == NATIVE_SHAPE
    assert random_model.training is False
    # The job's blurred baseline is the local mean a run trains with
    # (RunConfig.attribution_baseline "blur"), so the viewer can show the map it trained.
    from worker.ml.attribution.baselines import local_mean
    from worker.ml.transforms import preprocess_for

    x = preprocess_for(config)({IMAGE_KEY: str(subject_path)})[IMAGE_KEY].as_tensor()[None]
    with torch.no_grad():
        expected = float(random_model(local_mean(x, 4.0)).flatten()[0])
    assert blur.baseline_logit == pytest.approx(expected, rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------- every method


def _case_id(case: MethodCase) -> str:
    return case.method


def test_the_table_covers_every_method() -> None:
    assert {case.method for case in CASES} == set(get_args(AttributionMethod))
    assert set(available_methods()) == set(get_args(AttributionMethod))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_method_shared_checks_on_a_random_network(case: MethodCase) -> None:
    torch.manual_seed(3)
    model = build_network("small_cnn").train()
    images = torch.randn(2, 1, *GRID)
    before = images.clone()

    maps, deltas = attribute_batch(
        model, images, AttributionConfig(method=case.method, **case.params)
    )

    assert maps.shape == tuple(images.shape)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert np.abs(maps).max() > 0
    if case.has_delta:
        assert deltas is not None and deltas.shape == (2,)
        assert np.isfinite(deltas).all() and (deltas >= 0).all()
    else:
        assert deltas is None
    if case.signed:
        for image_map in maps:
            assert image_map.min() < 0 < image_map.max()
    # The caller's tensor and the model's mode are left as they were.
    assert torch.equal(images, before) and not images.requires_grad
    assert model.training


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_method_gives_the_known_answer_on_a_linear_model(case: MethodCase) -> None:
    torch.manual_seed(0)
    net = LinearNet(LINEAR_GRID)
    images = torch.randn(3, 1, *LINEAR_GRID)
    params = case.params if case.linear_params is None else case.linear_params
    attribution = AttributionConfig(method=case.method, **params)

    maps, deltas = attribute_batch(net, images, attribution)

    expected = case.answer(net, images).numpy()
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    if deltas is not None:
        np.testing.assert_allclose(deltas, 0.0, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_method_returns_the_map_in_native_space(
    case: MethodCase, subject_path: Path, random_model: torch.nn.Module
) -> None:
    attribution = AttributionConfig(method=case.method, **case.params)
    result = attribute_subject(random_model, RunConfig(grid=GRID), subject_path, attribution)

    assert result.map.shape == NATIVE_SHAPE
    assert result.map.dtype == np.float32
    assert np.isfinite(result.map).all()
    np.testing.assert_allclose(result.affine, NATIVE_AFFINE)
    assert (result.convergence_delta is not None) == case.has_delta
    assert ("relative_delta" in result.stats) == case.has_delta
    assert np.isfinite(result.logit)
    # F(x') is stored with the map's stats (the viewer reads it there), and the relative delta
    # is the delta over |F(x) - F(x')| of that very baseline.
    assert result.stats.get("baseline_logit") == result.baseline_logit
    if case.has_delta:
        assert result.baseline_logit is not None
        gap = abs(result.logit - result.baseline_logit)
        assert result.stats["relative_delta"] == pytest.approx(result.convergence_delta / gap)


def test_grad_cam_is_upsampled_to_the_grid_with_its_sign() -> None:
    class PoolNet(nn.Module):
        # F(x) = mean(avgpool(x)): Grad-CAM on the pooled map is avgpool(x) / its size.
        gradcam_layer_name = "pool"

        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AvgPool3d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return pathological_logit(self.pool(x))

    torch.manual_seed(0)
    images = torch.randn(2, 1, *GRID)
    pooled = F.avg_pool3d(images, 4)  # (2, 1, 4, 5, 4)
    cam = pooled / pooled[0, 0].numel()
    for relu in (False, True):
        attribution = AttributionConfig(method="grad_cam", relu_attributions=relu)
        maps, _ = attribute_batch(PoolNet(), images, attribution)
        expected = F.interpolate(cam.clamp(min=0) if relu else cam, GRID, mode="trilinear")
        assert maps.shape == (2, 1, *GRID)
        np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-7)
        assert (maps.min() >= 0) == relu


@pytest.mark.parametrize("name", ["patchgan", "resnet10"])
def test_grad_cam_runs_on_the_named_layer_of_other_networks(name: str) -> None:
    torch.manual_seed(0)
    model = build_network(name, **({"base_width": 8} if name == "patchgan" else {}))
    maps, deltas = attribute_batch(
        model, torch.randn(1, 1, *GRID), AttributionConfig(method="grad_cam")
    )
    assert maps.shape == (1, 1, *GRID) and np.isfinite(maps).all() and deltas is None
    assert maps.std() > 0


def test_gradient_shap_uses_the_references_given() -> None:
    torch.manual_seed(0)
    net = LinearNet(LINEAR_GRID)
    images = torch.randn(2, 1, *LINEAR_GRID)
    reference = torch.randn(1, 1, *LINEAR_GRID)
    attribution = AttributionConfig(method="gradient_shap", n_samples=5)

    maps, deltas = attribute_batch(net, images, attribution, references=reference)

    # One reference: every draw integrates the same straight path, A = w * (x - x').
    np.testing.assert_allclose(maps, (net.w * (images - reference)).numpy(), rtol=1e-4, atol=1e-6)
    assert deltas is not None
    np.testing.assert_allclose(deltas, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="references"):
        attribute_batch(net, images, attribution, references=torch.zeros(1, 1, 4, 4, 4))


def _numpy_keys() -> np.ndarray:
    """The key array of numpy's global generator state."""
    return np.asarray(cast(tuple, np.random.get_state(legacy=True))[1]).copy()


@pytest.mark.parametrize("method", ["gradient_shap", "smoothgrad"])
def test_random_methods_follow_their_seed_and_leave_global_generators_alone(
    method: AttributionMethod, random_model: torch.nn.Module
) -> None:
    images = torch.randn(1, 1, *GRID)
    torch_state = torch.get_rng_state()
    numpy_state = _numpy_keys()
    runs = [
        attribute_batch(
            random_model, images, AttributionConfig(method=method, n_samples=3, seed=seed)
        )[0]
        for seed in (5, 5, 6)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(_numpy_keys(), numpy_state)


def test_occlusion_chunking_does_not_change_the_map(random_model: torch.nn.Module) -> None:
    images = torch.randn(2, 1, *GRID)
    maps = [
        attribute_batch(
            random_model,
            images,
            AttributionConfig(method="occlusion", window=(6, 6, 6), internal_batch_size=size),
        )[0]
        for size in (1, 64)
    ]
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="does not fit"):
        attribute_batch(
            random_model, images, AttributionConfig(method="occlusion", window=(32, 8, 8))
        )


def test_config_refuses_settings_the_method_ignores() -> None:
    with pytest.raises(ValidationError, match="steps does not apply to saliency"):
        AttributionConfig(method="saliency", steps=64)
    with pytest.raises(ValidationError, match="relu_attributions does not apply"):
        AttributionConfig(method="integrated_gradients", relu_attributions=True)
    with pytest.raises(ValidationError, match="exceeds window"):
        AttributionConfig(method="occlusion", window=(4, 4, 4), stride=(5, 4, 4))
    # Defaults of unused fields pass, so a stored config validates again.
    for method in get_args(AttributionMethod):
        stored = AttributionConfig(method=method).model_dump(mode="json")
        assert AttributionConfig.model_validate(stored).method == method


def test_a_given_brain_mask_is_the_brain_of_the_map(
    subject_path: Path, random_model: torch.nn.Module, tmp_path: Path
) -> None:
    # The subject's stored brain mask (here: a slab of the volume) is what the preprocessing
    # crops to and keeps, as in training: IG from the zero image is 0 wherever the network's
    # input was set to 0, so the map is blank outside that brain. Without it, a brain is
    # computed from the image (the whole uniform head here) and the map covers it.
    brain = np.zeros(NATIVE_SHAPE, dtype=np.uint8)
    brain[4:16, 3:15, 3:11] = 1
    brain_path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(brain, NATIVE_AFFINE), brain_path)
    config = RunConfig(grid=GRID)
    settings = AttributionConfig(steps=16)
    given = attribute_subject(random_model, config, subject_path, settings, brain_path=brain_path)
    computed = attribute_subject(random_model, config, subject_path, settings)
    far = np.ones(NATIVE_SHAPE, dtype=bool)
    far[2:18, 1:17, 1:13] = False  # two voxels of margin for the trilinear inverse
    assert given.map.shape == computed.map.shape == NATIVE_SHAPE
    assert np.abs(given.map[far]).max() == 0.0
    assert np.abs(computed.map[far]).max() > 0.0

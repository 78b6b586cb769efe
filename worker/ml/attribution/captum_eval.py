"""Evaluation attribution maps with Captum, on the working grid or in a subject's native space.

Every map is signed (docs/method.md section 1): A > 0 pushes toward "pathological" (red), A < 0
toward "healthy" (blue). Nothing here takes absolute values of a map: Saliency and SmoothGrad
run with ``abs=False``, and Grad-CAM keeps its negative part unless asked otherwise.

Methods (``AttributionConfig.method``; the fields each reads are in ``METHOD_FIELDS``):

- ``integrated_gradients``: Integrated Gradients (Sundararajan et al., ICML 2017) from the
  zero or a blurred baseline. Convergence delta: |sum(A) - (F(x) - F(x'))|.
- ``gradient_shap``: Captum's GradientShap with ``stdevs=0``, which is Expected Gradients
  (Erion et al., Nat. Mach. Intell. 2021): the IG integrand averaged over references x' and
  a ~ U(0, 1). References: images passed as ``references`` (another subjects' images on the
  working grid), else the zero image plus Gaussian noise of ``stdevs``. Convergence delta:
  |sum(A) - (F(x) - mean F(x'))| over the references drawn.
- ``saliency``: the gradient dF/dx (Simonyan et al., 2014), signed.
- ``input_x_gradient``: x * dF/dx.
- ``deeplift``: DeepLIFT rescale rule (Shrikumar et al., ICML 2017) from the baseline, with
  its convergence delta.
- ``guided_backprop``: Springenberg et al., 2015. Captum modifies only ``nn.ReLU`` modules:
  on networks built with LeakyReLU (``small_cnn``, ``patchgan``) it equals ``saliency``.
- ``occlusion``: Zeiler and Fergus, 2014: F(x) - F(x with a window replaced by the baseline),
  averaged over the windows that cover each voxel.
- ``smoothgrad``: NoiseTunnel over Saliency (Smilkov et al., 2017), signed.
- ``grad_cam``: LayerGradCam (Selvaraju et al., ICCV 2017) on the layer named by
  ``worker.ml.nets.gradcam_layer``, upsampled trilinearly to the working grid.

Methods without a completeness property report ``convergence_delta=None``.

Example:
    >>> maps, deltas = attribute_batch(model, images, AttributionConfig(method="deeplift"))
    >>> maps.shape == tuple(images.shape), deltas.shape == (images.shape[0],)
    (True, True)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from monai.transforms import GaussianSmooth
from torch import nn

from attrivue_core.configs import AttributionConfig, RunConfig
from attrivue_core.io import load_image
from worker.ml.nets import gradcam_layer, pathological_logit
from worker.ml.transforms import BRAIN_KEY, IMAGE_KEY, preprocess_for, to_native

__all__ = [
    "AttributionResult",
    "attribute_batch",
    "attribute_subject",
    "available_methods",
    "load_on_grid",
    "map_stats",
]

# Tolerance (world units) between the affine recovered by inverting the preprocessing and
# the affine in the image header; larger means the inverse went wrong.
_AFFINE_ATOL = 1e-3


@dataclass
class AttributionResult:
    """A signed attribution map on the subject's native grid, with its diagnostics.

    Attributes:
        map: float32 map with the native image's spatial shape; A > 0 is pathological
            relevance, A < 0 healthy relevance.
        affine: 4x4 affine of the native image (the map overlays it voxel for voxel).
        convergence_delta: Completeness gap on the working grid, |sum(A) - (F(x) - F(x'))|,
            for integrated_gradients, deeplift and gradient_shap (against the mean logit of
            its references); ``None`` for the other methods.
        logit: Pathological logit F(x) of the image.
        probability: sigmoid(F(x)).
        baseline_logit: F(x') of the baseline (integrated_gradients, deeplift, occlusion),
            the mean logit of the references (gradient_shap), else ``None``.
        stats: Summary of the native map (see ``map_stats``) plus ``grid_sum`` (sum of the
            map on the working grid) and, for methods with a convergence delta,
            ``relative_delta`` (delta / |F(x) - F(x')|, ``None`` when the baseline scores
            the same as the image).
    """

    map: np.ndarray
    affine: np.ndarray
    convergence_delta: float | None
    logit: float
    probability: float
    baseline_logit: float | None
    stats: dict[str, float | None] = field(default_factory=dict)


class _LogitModel(nn.Module):
    """Expose a classifier as Captum expects: one scalar per example, shape ``(B,)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.model(x))


@dataclass(frozen=True)
class _Request:
    """What a method receives: the model, the images and the settings."""

    forward: _LogitModel  # (N, 1, *grid) -> (N,), in eval mode
    x: torch.Tensor  # (B, 1, *grid), on the model's device
    attribution: AttributionConfig
    references: torch.Tensor | None  # (R, 1, *grid) on the same device, or None

    @property
    def images_per_pass(self) -> int:
        """Samples of each image per pass, so that a pass holds ~internal_batch_size images."""
        return max(1, self.attribution.internal_batch_size // self.x.shape[0])


@dataclass
class _Maps:
    """What a method returns, on the working grid."""

    attributions: torch.Tensor  # (B, 1, *grid), signed
    delta: torch.Tensor | None = None  # (B,) absolute completeness gap
    baseline_logit: torch.Tensor | None = None  # (B,) F(x') or mean F over references


_Method = Callable[[_Request], _Maps]
_METHODS: dict[str, _Method] = {}


def _register(name: str) -> Callable[[_Method], _Method]:
    def decorator(method: _Method) -> _Method:
        _METHODS[name] = method
        return method

    return decorator


def available_methods() -> list[str]:
    """Return the implemented attribution method names, sorted."""
    return sorted(_METHODS)


def attribute_batch(
    model: nn.Module,
    images: torch.Tensor,
    attribution: AttributionConfig,
    *,
    device: str | torch.device = "cpu",
    references: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compute signed attribution maps of preprocessed images on the working grid.

    Args:
        model: Classifier (moved to ``device`` and put in eval mode; its training mode is
            restored afterwards).
        images: ``(B, 1, *grid)`` images, preprocessed as in training (see ``load_on_grid``).
        attribution: Method and its settings.
        device: Device to compute on.
        references: ``(R, 1, *grid)`` reference images for gradient_shap (other subjects,
            preprocessed the same way); ``None`` draws zero-plus-noise references. The other
            methods ignore them, apart from checking their shape.

    Returns:
        ``(maps, deltas)``: float32 maps ``(B, 1, *grid)``, and the absolute convergence
        deltas ``(B,)`` (float64) for methods that define one, else ``None``.
    """
    if images.ndim != 5 or images.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, D, H, W), got {tuple(images.shape)}")
    maps, _ = _attribute(model, images, attribution, references, torch.device(device))
    attributions = maps.attributions.detach().float().cpu().numpy()
    if maps.delta is None:
        return attributions, None
    return attributions, maps.delta.detach().double().cpu().numpy()


def attribute_subject(
    model: nn.Module,
    config: RunConfig,
    image_path: Path,
    attribution: AttributionConfig,
    *,
    device: str | torch.device = "cpu",
    references: torch.Tensor | None = None,
    brain_path: Path | None = None,
) -> AttributionResult:
    """Compute the signed attribution map of one subject and bring it to native space.

    The image is preprocessed exactly as in training (without augmentation), attributed on
    the working grid, and the map is resampled back through the inverse of the preprocessing.

    Args:
        model: Trained classifier (moved to ``device`` and put in eval mode; its training
            mode is restored afterwards).
        config: The run configuration the model was trained with (grid, intensity).
        image_path: NIfTI image of the subject.
        attribution: Method and its settings.
        device: Device to compute on.
        references: gradient_shap's reference images on the working grid (see
            ``attribute_batch``).
        brain_path: The subject's stored brain mask, which the preprocessing crops to (as in
            training); ``None``: computed from the image.

    Returns:
        The signed native-space map with its affine, logits and diagnostics.
    """
    transform = preprocess_for(config)
    item = {IMAGE_KEY: str(image_path)}
    if brain_path is not None:
        item[BRAIN_KEY] = str(brain_path)
    image = transform(item)[IMAGE_KEY]  # MetaTensor (1, *grid)
    x = image.as_tensor()[None]  # (1, 1, *grid)
    maps, logits = _attribute(model, x, attribution, references, torch.device(device))
    attr_grid = maps.attributions.detach()[0].float().cpu()  # (1, *grid)

    native_map, recovered_affine = to_native(attr_grid, image, transform)
    header_image = load_image(image_path)  # reads the header only
    affine = np.asarray(header_image.affine, dtype=np.float64)
    if not np.allclose(recovered_affine, affine, atol=_AFFINE_ATOL):
        raise RuntimeError(
            f"inverting the preprocessing gave affine\n{recovered_affine}\n"
            f"instead of the image's\n{affine}"
        )
    logit = float(logits[0])
    delta = None if maps.delta is None else float(maps.delta[0])
    baseline_logit = None if maps.baseline_logit is None else float(maps.baseline_logit[0])
    stats: dict[str, float | None] = {**map_stats(native_map), "grid_sum": float(attr_grid.sum())}
    if delta is not None and baseline_logit is not None:
        gap = abs(logit - baseline_logit)
        # None rather than inf: the stats go into JSON columns.
        stats["relative_delta"] = delta / gap if gap > 0 else None
    return AttributionResult(
        map=native_map,
        affine=affine,
        convergence_delta=delta,
        logit=logit,
        probability=float(torch.sigmoid(torch.tensor(logit))),
        baseline_logit=baseline_logit,
        stats=stats,
    )


def load_on_grid(config: RunConfig, image_paths: Sequence[Path]) -> torch.Tensor:
    """Preprocess images as training does, without augmentation.

    Args:
        config: The run configuration (grid, intensity).
        image_paths: NIfTI images.

    Returns:
        ``(N, 1, *grid)`` float32 images, e.g. gradient_shap's references.
    """
    transform = preprocess_for(config)
    images = [transform({IMAGE_KEY: str(path)})[IMAGE_KEY].as_tensor() for path in image_paths]
    return torch.stack(images)


def map_stats(attribution_map: np.ndarray) -> dict[str, float]:
    """Signed summary of a map.

    Args:
        attribution_map: Signed attribution map.

    Returns:
        ``min``, ``max``, ``positive_mass`` (sum of the positive part, >= 0),
        ``negative_mass`` (sum of the negative part, <= 0; so the two add up to the total)
        and ``mean_abs`` (mean magnitude, a scale for display).
    """
    a = np.asarray(attribution_map, dtype=np.float64)
    return {
        "min": float(a.min()),
        "max": float(a.max()),
        "positive_mass": float(a[a > 0].sum()),
        "negative_mass": float(a[a < 0].sum()),
        "mean_abs": float(np.abs(a).mean()),
    }


def _attribute(
    model: nn.Module,
    x: torch.Tensor,
    attribution: AttributionConfig,
    references: torch.Tensor | None,
    device: torch.device,
) -> tuple[_Maps, torch.Tensor]:
    """Run the configured method in eval mode; return its maps and the logits F(x) ``(B,)``."""
    method = _METHODS[attribution.method]
    # A detached leaf that requires grad: Captum differentiates w.r.t. it (and warns when it
    # has to switch gradients on itself); the caller's tensor is left untouched.
    x = x.to(device=device, dtype=torch.float32).detach().requires_grad_()
    if references is not None:
        if tuple(references.shape[1:]) != tuple(x.shape[1:]):
            raise ValueError(
                f"references {tuple(references.shape)} do not match images {tuple(x.shape)}"
            )
        references = references.to(device=device, dtype=torch.float32)
    was_training = model.training
    forward = _LogitModel(model).to(device).eval()
    try:
        maps = method(_Request(forward, x, attribution, references))
        with torch.no_grad():
            logits = forward(x)  # (B,)
    finally:
        model.train(was_training)
    return maps, logits


def _logits(forward: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """F of each image, ``(N,)``, without building a graph."""
    with torch.no_grad():
        return forward(images)


def _baseline(x: torch.Tensor, attribution: AttributionConfig) -> torch.Tensor:
    """The reference image x' of each image, same shape as ``x`` ``(B, 1, *grid)``."""
    if attribution.baseline == "zero":
        return torch.zeros_like(x)
    if attribution.baseline == "blur":
        # GaussianSmooth works channel-first without the batch dimension.
        smooth = GaussianSmooth(sigma=attribution.blur_sigma)
        with torch.no_grad():
            return torch.stack([torch.as_tensor(smooth(image)).to(x) for image in x.detach()])
    raise ValueError(f"unknown baseline {attribution.baseline!r}")


@contextmanager
def _quiet_hooks() -> Iterator[None]:
    """Silence Captum's notice that it hooks activations (every call, removed afterwards)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Setting (forward, )?backward hooks")
        yield


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy (Captum draws from both) and restore their states afterwards."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


@_register("integrated_gradients")
def _integrated_gradients(request: _Request) -> _Maps:
    settings = request.attribution
    x = request.x  # (B, 1, *grid)
    baseline = _baseline(x, settings)  # (B, 1, *grid)
    ig = IntegratedGradients(request.forward, multiply_by_inputs=True)
    # Captum evaluates steps * B interpolated images, (steps * B, 1, *grid), in chunks of
    # internal_batch_size; target=None because forward already yields one scalar per image.
    attributions, delta = ig.attribute(
        x,
        baselines=baseline,
        target=None,
        n_steps=settings.steps,
        method=settings.riemann_method,
        internal_batch_size=settings.internal_batch_size,
        return_convergence_delta=True,
    )
    # attributions: (B, 1, *grid); delta: (B,) = sum(A) - (F(x) - F(x')).
    return _Maps(attributions, delta.abs(), _logits(request.forward, baseline))


@_register("gradient_shap")
def _gradient_shap(request: _Request) -> _Maps:
    settings = request.attribution
    x = request.x  # (B, 1, *grid)
    batch = x.shape[0]
    total = torch.zeros_like(x)  # (B, 1, *grid): sum of the per-pass means times their size
    delta_sum = torch.zeros(batch, device=x.device)  # (B,)
    with _seeded(settings.seed, x.device):
        references = _references(request)  # (R, 1, *grid)
        shap = GradientShap(request.forward, multiply_by_inputs=True)
        done = 0
        while done < settings.n_samples:
            count = min(request.images_per_pass, settings.n_samples - done)
            # Captum draws `count` (reference, alpha) pairs per image, (B * count, 1, *grid)
            # in one pass; stdevs=0 keeps the input itself (Expected Gradients).
            attributions, delta = shap.attribute(
                x,
                baselines=references,
                n_samples=count,
                stdevs=0.0,
                target=None,
                return_convergence_delta=True,
            )
            # attributions: (B, 1, *grid), the mean over the draws; delta: (B * count,),
            # image-major, sum(A_draw) - (F(x) - F(x'_draw)) per draw.
            total += attributions * count
            delta_sum += delta.reshape(batch, count).sum(dim=1)
            done += count
    reference_logit = _logits(request.forward, references).mean()  # E[F(x')] over references
    # The mean of the per-draw deltas is sum(A) - (F(x) - mean F(x'_draw)).
    return _Maps(
        total / settings.n_samples,
        (delta_sum / settings.n_samples).abs(),
        reference_logit.expand(batch),
    )


def _references(request: _Request) -> torch.Tensor:
    """gradient_shap's references ``(R, 1, *grid)``: a random subset, or zero plus noise."""
    settings = request.attribution
    given = request.references
    if given is None:
        shape = (settings.n_references, *request.x.shape[1:])
        return settings.stdevs * torch.randn(shape, device=request.x.device)
    if given.shape[0] <= settings.n_references:
        return given
    chosen = torch.randperm(given.shape[0])[: settings.n_references]
    return given[chosen.to(given.device)]


@_register("saliency")
def _saliency(request: _Request) -> _Maps:
    # abs=False keeps the sign of dF/dx: (B, 1, *grid).
    return _Maps(Saliency(request.forward).attribute(request.x, target=None, abs=False))


@_register("input_x_gradient")
def _input_x_gradient(request: _Request) -> _Maps:
    # x * dF/dx: (B, 1, *grid).
    return _Maps(InputXGradient(request.forward).attribute(request.x, target=None))


@_register("deeplift")
def _deeplift(request: _Request) -> _Maps:
    baseline = _baseline(request.x, request.attribution)  # (B, 1, *grid)
    deeplift = DeepLift(request.forward, multiply_by_inputs=True)
    with _quiet_hooks():
        attributions, delta = deeplift.attribute(
            request.x, baselines=baseline, target=None, return_convergence_delta=True
        )
    # attributions: (B, 1, *grid); delta: (B,) = sum(A) - (F(x) - F(x')).
    return _Maps(attributions, delta.abs(), _logits(request.forward, baseline))


@_register("guided_backprop")
def _guided_backprop(request: _Request) -> _Maps:
    # (B, 1, *grid); only nn.ReLU modules get the guided backward rule.
    with _quiet_hooks():
        return _Maps(GuidedBackprop(request.forward).attribute(request.x, target=None))


@_register("occlusion")
def _occlusion(request: _Request) -> _Maps:
    settings = request.attribution
    x = request.x  # (B, 1, *grid)
    grid = tuple(x.shape[2:])
    window = settings.window
    stride = settings.stride or tuple(max(1, w // 2) for w in window)
    if any(w > n for w, n in zip(window, grid, strict=True)):
        raise ValueError(f"occlusion window {window} does not fit the grid {grid}")
    baseline = _baseline(x, settings)  # (B, 1, *grid): what fills the window
    # Each pass evaluates images_per_pass perturbed copies of each of the B images.
    attributions = Occlusion(request.forward).attribute(
        x,
        sliding_window_shapes=(1, *window),
        strides=(1, *stride),
        baselines=baseline,
        target=None,
        perturbations_per_eval=request.images_per_pass,
    )
    # (B, 1, *grid): F(x) - F(occluded), averaged over the windows covering each voxel.
    return _Maps(attributions, None, _logits(request.forward, baseline))


@_register("smoothgrad")
def _smoothgrad(request: _Request) -> _Maps:
    settings = request.attribution
    with _seeded(settings.seed, request.x.device):
        tunnel = NoiseTunnel(Saliency(request.forward))
        # n_samples noisy copies of each image, images_per_pass of them per pass.
        attributions = tunnel.attribute(
            request.x,
            nt_type="smoothgrad",
            nt_samples=settings.n_samples,
            nt_samples_batch_size=request.images_per_pass,
            stdevs=settings.stdevs,
            target=None,
            abs=False,
        )
    # (B, 1, *grid): the mean signed gradient over the noisy copies.
    return _Maps(cast(torch.Tensor, attributions))


@_register("grad_cam")
def _grad_cam(request: _Request) -> _Maps:
    x = request.x  # (B, 1, *grid)
    layer = gradcam_layer(request.forward.model)
    cam = LayerGradCam(request.forward, layer).attribute(
        x, target=None, relu_attributions=request.attribution.relu_attributions
    )
    # cam: (B, 1, *features), the channel sum of activations weighted by their mean gradient.
    upsampled = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="trilinear")
    return _Maps(upsampled)  # (B, 1, *grid)

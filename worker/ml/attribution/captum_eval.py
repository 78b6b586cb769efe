"""Evaluation attribution maps with Captum, on the working grid or in a subject's native space.

Every map is signed (docs/method.md section 1): A > 0 pushes toward "pathological" (red), A < 0
toward "healthy" (blue). Nothing here takes absolute values of a map: Saliency and SmoothGrad
run with ``abs=False``, and Grad-CAM keeps its negative part unless asked otherwise.

Methods (``AttributionConfig.method``; the fields each reads are in ``METHOD_FIELDS``):

- ``integrated_gradients``: Integrated Gradients (Sundararajan et al., ICML 2017) from the
  zero or a blurred baseline. Convergence delta: |sum(A) - (F(x) - F(x'))|. With
  ``target_delta``, the points are chosen until the relative delta meets it
  (``worker.ml.attribution.adaptive``); otherwise Captum with ``steps`` points.
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

Uncertainty of the stochastic methods (smoothgrad, gradient_shap): Captum returns only the
mean over the samples. The per-sample maps pass through ``_RecordingTunnel`` (Captum's own
NoiseTunnel, which both methods use, with the same random draws), which keeps per voxel the
running sum, sum of squares and sign counts, so memory does not grow with ``n_samples``. From
them: the standard deviation over samples, and the sign agreement, the share of samples whose
sign equals the sign of the mean map (1: every sample agrees; where the mean is 0, the share of
samples that are 0). For a multi-modal subject they describe the stored map, the sum of the
channels' maps: each sample's map is summed over its channels before it is counted.

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
    Attribution,
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
from captum.attr._core.gradient_shap import InputBaselineXGradient
from torch import nn

from attrivue_core.configs import METHOD_FIELDS, AttributionConfig, RunConfig
from attrivue_core.io import load_image
from worker.ml.attribution.adaptive import Progress, adaptive_integrated_gradients
from worker.ml.attribution.baselines import local_mean
from worker.ml.nets import gradcam_layer, pathological_logit
from worker.ml.transforms import preprocess_for, subject_on_grid, to_native

__all__ = [
    "AttributionResult",
    "attribute_batch",
    "attribute_subject",
    "attribute_with_spread",
    "available_methods",
    "load_on_grid",
    "map_stats",
    "mean_on_grid",
    "uncertainty_stats",
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
            the same as the image); for integrated_gradients ``ig_points`` (interpolation
            points used) and, with ``target_delta``, ``ig_target_reached`` (1: the relative
            delta is at most the target; 0: ``max_points`` was reached first); for
            stochastic methods, ``uncertainty_stats``'s keys.
        sd: Stochastic methods: per-voxel standard deviation of the per-sample maps, on the
            native grid (same shape and affine as ``map``); ``None`` for the others.
        agreement: Stochastic methods: per-voxel sign agreement in [0, 1], native grid.
        channels: Several input channels (modalities): the map of each, ``(C, ...)`` on the
            native grid; ``map`` is their sum. ``None`` for one channel.
    """

    map: np.ndarray
    affine: np.ndarray
    convergence_delta: float | None
    logit: float
    probability: float
    baseline_logit: float | None
    stats: dict[str, float | None] = field(default_factory=dict)
    sd: np.ndarray | None = None
    agreement: np.ndarray | None = None
    channels: np.ndarray | None = None


# Sign agreement below this counts as "uncertain" in the summary (``uncertainty_stats``).
LOW_AGREEMENT = 0.8


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
    references: torch.Tensor | None  # (R, C, *grid) on the same device, or None
    healthy_mean: torch.Tensor | None = None  # (1, C, *grid): the healthy_mean baseline
    progress: Progress | None = None  # IG with target_delta: called after each round

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
    sd: torch.Tensor | None = None  # (B, 1, *grid) over samples (stochastic methods)
    agreement: torch.Tensor | None = None  # (B, 1, *grid) sign agreement in [0, 1]
    points: int | None = None  # IG: interpolation points per image (the most of the batch)
    reached: bool | None = None  # IG with target_delta: every relative delta <= the target


class _SampleMoments:
    """Running per-voxel sums of per-sample maps of B images: bounded memory in n_samples.
    Each sample's map is summed over its channels first (a multi-modal subject's stored map is
    that sum), so the moments are ``(B, 1, *grid)`` whatever the channel count."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.count = 0
        self.total: torch.Tensor | None = None  # (B, 1, *grid) float64
        self.squares: torch.Tensor | None = None
        self.positive: torch.Tensor | None = None  # (B, 1, *grid) int32 counts
        self.negative: torch.Tensor | None = None

    def add(self, samples: torch.Tensor) -> None:
        """Add ``(B * k, C, *grid)`` per-sample maps, image-major (Captum's layout)."""
        k = samples.shape[0] // self.batch
        summed = samples.detach().double().sum(dim=1, keepdim=True)  # (B * k, 1, *grid)
        a = summed.reshape(self.batch, k, *summed.shape[1:])
        parts = (
            a.sum(1),
            (a * a).sum(1),
            (a > 0).sum(1, dtype=torch.int32),
            (a < 0).sum(1, dtype=torch.int32),
        )
        if self.total is None:
            self.total, self.squares, self.positive, self.negative = parts
        else:
            assert self.squares is not None and self.positive is not None
            assert self.negative is not None
            self.total += parts[0]
            self.squares += parts[1]
            self.positive += parts[2]
            self.negative += parts[3]
        self.count += k

    def mean(self) -> torch.Tensor:
        """Mean of the samples ``(B, 1, *grid)`` (float64)."""
        assert self.total is not None
        return self.total / self.count

    def sd_and_agreement(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Population standard deviation and sign agreement, ``(B, 1, *grid)`` float32."""
        assert self.squares is not None and self.positive is not None
        assert self.negative is not None
        mean = self.mean()
        variance = (self.squares / self.count - mean * mean).clamp_min(0.0)
        zero = self.count - self.positive - self.negative
        agreeing = torch.where(mean > 0, self.positive, torch.where(mean < 0, self.negative, zero))
        return variance.sqrt().float(), (agreeing.double() / self.count).float()


class _RecordingTunnel(NoiseTunnel):
    """Captum's NoiseTunnel that also hands every chunk of per-sample maps to ``moments``.

    The draws, the chunks and the returned mean are Captum's own; only the per-sample
    attributions, which NoiseTunnel sums and drops, are seen on their way.
    """

    def __init__(self, attribution_method: Attribution, moments: _SampleMoments) -> None:
        super().__init__(attribution_method)
        self.moments = moments

    def _compute_partial_attribution(
        self,
        inputs_with_noise_partition: tuple[torch.Tensor, ...],
        kwargs_partition: object,
        is_inputs_tuple: bool,
        return_convergence_delta: bool,
    ) -> tuple[tuple[torch.Tensor, ...], bool, torch.Tensor | None]:
        result = super()._compute_partial_attribution(
            inputs_with_noise_partition,
            kwargs_partition,
            is_inputs_tuple,
            return_convergence_delta,
        )
        self.moments.add(result[0][0])
        return result


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
    healthy_mean: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compute signed attribution maps of preprocessed images on the working grid.

    Args:
        model: Classifier (moved to ``device`` and put in eval mode; its training mode is
            restored afterwards).
        images: ``(B, C, *grid)`` images (C channels: one per modality), preprocessed as in
            training (see ``load_on_grid``).
        attribution: Method and its settings.
        device: Device to compute on.
        references: ``(R, C, *grid)`` reference images for gradient_shap (other subjects,
            preprocessed the same way); ``None`` draws zero-plus-noise references. The other
            methods ignore them, apart from checking their shape.
        healthy_mean: ``(C, *grid)`` mean healthy image, the ``healthy_mean`` baseline.

    Returns:
        ``(maps, deltas)``: float32 maps ``(B, C, *grid)`` (one per channel), and the absolute convergence
        deltas ``(B,)`` (float64) for methods that define one, else ``None``.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be (B, C, D, H, W), got {tuple(images.shape)}")
    maps, _ = _attribute(model, images, attribution, references, torch.device(device), healthy_mean)
    attributions = maps.attributions.detach().float().cpu().numpy()
    if maps.delta is None:
        return attributions, None
    return attributions, maps.delta.detach().double().cpu().numpy()


def attribute_with_spread(
    model: nn.Module,
    images: torch.Tensor,
    attribution: AttributionConfig,
    *,
    device: str | torch.device = "cpu",
    references: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``attribute_batch``'s maps with the spread of a stochastic method's samples.

    Returns:
        ``(maps, sd, agreement)``, float32: the mean map (Captum's) ``(B, C, *grid)``, the
        per-voxel standard deviation over samples and the sign agreement ``(B, 1, *grid)`` (of
        the channels' sum); ``sd`` and ``agreement`` are ``None`` for a deterministic method.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be (B, C, D, H, W), got {tuple(images.shape)}")
    maps, _ = _attribute(model, images, attribution, references, torch.device(device))
    mean = maps.attributions.detach().float().cpu().numpy()
    if maps.sd is None or maps.agreement is None:
        return mean, None, None
    return mean, maps.sd.cpu().numpy(), maps.agreement.cpu().numpy()


def attribute_subject(
    model: nn.Module,
    config: RunConfig,
    image_path: Path,
    attribution: AttributionConfig,
    *,
    device: str | torch.device = "cpu",
    references: torch.Tensor | None = None,
    brain_path: Path | None = None,
    healthy_mean: torch.Tensor | None = None,
    channels: Sequence[Path] = (),
    progress: Progress | None = None,
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
        healthy_mean: The ``healthy_mean`` baseline ``(C, *grid)`` (``healthy_mean``).
        brain_path: The subject's stored brain mask, which the preprocessing crops to (as in
            training); ``None``: computed from the image.
        channels: The images of channels 1.. of a multi-modal subject (``image_path`` is
            channel 0): the map of each channel is kept (``AttributionResult.channels``) and
            the map is their sum (a stochastic method's uncertainty volumes are the sum's).
        progress: integrated_gradients with ``target_delta``: called after each round of
            refinement with (points so far, relative delta).

    Returns:
        The signed native-space map with its affine, logits and diagnostics.
    """
    transform = preprocess_for(config)
    image = subject_on_grid(config, image_path, channels, brain_path, transform=transform)
    x = image.as_tensor()[None]  # (1, C, *grid)
    maps, logits = _attribute(
        model, x, attribution, references, torch.device(device), healthy_mean, progress
    )
    per_channel = maps.attributions.detach()[0].float().cpu()  # (C, *grid)
    attr_grid = per_channel.sum(dim=0, keepdim=True)  # (1, *grid)

    channel_maps = None
    if per_channel.shape[0] > 1:
        channel_maps, recovered_affine = to_native(per_channel, image, transform)
        native_map = channel_maps.sum(axis=0)  # the map is the sum of the channels' maps
    else:
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
    if baseline_logit is not None:
        # F(x'): the map sums to F(x) - F(x'), so a baseline the model does not find neutral
        # shifts the whole map (the viewer says so next to it).
        stats["baseline_logit"] = baseline_logit
    if delta is not None and baseline_logit is not None:
        gap = abs(logit - baseline_logit)
        # None rather than inf: the stats go into JSON columns.
        stats["relative_delta"] = delta / gap if gap > 0 else None
    if maps.points is not None:
        stats["ig_points"] = float(maps.points)
    if maps.reached is not None:
        stats["ig_target_reached"] = float(maps.reached)
    sd_native = agreement_native = None
    if maps.sd is not None and maps.agreement is not None:
        # (1, *grid): the uncertainty of the stored map (the channels' sum, for several).
        sd_grid, agreement_grid = maps.sd[0].cpu(), maps.agreement[0].cpu()
        brain = (x[0].cpu() != 0).any(dim=0)
        stats.update(
            uncertainty_stats(
                sd_grid[0].numpy(), agreement_grid[0].numpy(), attr_grid[0].numpy(), brain.numpy()
            )
        )
        sd_native, _ = to_native(sd_grid, image, transform)
        agreement_native, _ = to_native(agreement_grid, image, transform)
        sd_native = np.maximum(sd_native, 0.0).astype(np.float32)
        agreement_native = np.clip(agreement_native, 0.0, 1.0).astype(np.float32)
    return AttributionResult(
        sd=sd_native,
        agreement=agreement_native,
        map=native_map,
        affine=affine,
        convergence_delta=delta,
        logit=logit,
        probability=float(torch.sigmoid(torch.tensor(logit))),
        baseline_logit=baseline_logit,
        stats=stats,
        channels=channel_maps,
    )


def load_on_grid(
    config: RunConfig,
    image_paths: Sequence[Path],
    brain_paths: Sequence[Path | None] | None = None,
    channels: Sequence[Sequence[Path]] | None = None,
) -> torch.Tensor:
    """Preprocess subjects as training does, without augmentation (``subject_on_grid``).

    Args:
        config: The run configuration (grid, intensity).
        image_paths: NIfTI images (channel 0 of each subject).
        brain_paths: Each image's stored brain mask (or ``None``: computed from the image),
            which the preprocessing crops to, as in training.
        channels: Each subject's images of channels 1.. (a multi-modal dataset); ``None``:
            one channel.

    Returns:
        ``(N, C, *grid)`` float32 images, e.g. gradient_shap's references.
    """
    return torch.stack(list(_on_grid(config, image_paths, brain_paths, channels)))


def mean_on_grid(
    config: RunConfig,
    image_paths: Sequence[Path],
    brain_paths: Sequence[Path | None] | None = None,
    channels: Sequence[Sequence[Path]] | None = None,
) -> torch.Tensor:
    """Voxel-wise mean of subjects preprocessed as in training, ``(C, *grid)`` float32
    (``channels`` as in ``load_on_grid``).

    One image at a time (a running sum), so memory does not grow with the number of images:
    the ``healthy_mean`` baseline of a run is this over its healthy training subjects.

    Raises:
        ValueError: Without images.
    """
    if not image_paths:
        raise ValueError("the mean of no images is undefined")
    total: torch.Tensor | None = None
    for image in _on_grid(config, image_paths, brain_paths, channels):
        total = image.double() if total is None else total + image.double()
    assert total is not None
    return (total / len(image_paths)).float()


def _on_grid(
    config: RunConfig,
    image_paths: Sequence[Path],
    brain_paths: Sequence[Path | None] | None,
    channels: Sequence[Sequence[Path]] | None = None,
) -> Iterator[torch.Tensor]:
    """Each subject preprocessed as training does (``(C, *grid)``), one after the other."""
    transform = preprocess_for(config)
    brains = list(brain_paths) if brain_paths is not None else [None] * len(image_paths)
    extra = list(channels) if channels is not None else [()] * len(image_paths)
    if len(brains) != len(image_paths):
        raise ValueError(f"{len(image_paths)} images but {len(brains)} brain masks")
    if len(extra) != len(image_paths):
        raise ValueError(f"{len(image_paths)} images but {len(extra)} channel lists")
    for path, brain, more in zip(image_paths, brains, extra, strict=True):
        yield subject_on_grid(config, path, more, brain, transform=transform).as_tensor()


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


def uncertainty_stats(
    sd: np.ndarray, agreement: np.ndarray, mean_map: np.ndarray, brain: np.ndarray
) -> dict[str, float | None]:
    """Summary of the uncertainty volumes inside the brain (working grid).

    Returns:
        ``uncertainty_mean_sd`` (mean standard deviation), ``uncertainty_relative_sd`` (that
        over the mean |A|; ``None`` for a zero map), ``uncertainty_mean_agreement`` and
        ``uncertainty_low_agreement_share`` (share of brain voxels whose sign agreement is
        below ``LOW_AGREEMENT``).
    """
    inside = np.asarray(brain, dtype=bool)
    if not inside.any():
        inside = np.ones_like(inside)
    s = np.asarray(sd, dtype=np.float64)[inside]
    g = np.asarray(agreement, dtype=np.float64)[inside]
    scale = float(np.abs(np.asarray(mean_map, dtype=np.float64)[inside]).mean())
    mean_sd = float(s.mean())
    return {
        "uncertainty_mean_sd": mean_sd,
        "uncertainty_relative_sd": mean_sd / scale if scale > 0 else None,
        "uncertainty_mean_agreement": float(g.mean()),
        "uncertainty_low_agreement_share": float((g < LOW_AGREEMENT).mean()),
    }


def _attribute(
    model: nn.Module,
    x: torch.Tensor,
    attribution: AttributionConfig,
    references: torch.Tensor | None,
    device: torch.device,
    healthy_mean: torch.Tensor | None = None,
    progress: Progress | None = None,
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
    if healthy_mean is not None:
        healthy_mean = healthy_mean.to(device=device, dtype=torch.float32).reshape(1, *x.shape[1:])
    elif attribution.baseline == "healthy_mean" and "baseline" in METHOD_FIELDS[attribution.method]:
        raise ValueError("the healthy_mean baseline needs the run's mean healthy image")
    if attribution.method == "gradient_shap" and attribution.references == "healthy":
        if references is None:
            raise ValueError("references 'healthy' needs the healthy training images")
    was_training = model.training
    forward = _LogitModel(model).to(device).eval()
    try:
        maps = method(_Request(forward, x, attribution, references, healthy_mean, progress))
        with torch.no_grad():
            logits = forward(x)  # (B,)
    finally:
        model.train(was_training)
    return maps, logits


def _logits(forward: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """F of each image, ``(N,)``, without building a graph."""
    with torch.no_grad():
        return forward(images)


def _baseline(
    x: torch.Tensor, attribution: AttributionConfig, healthy_mean: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference image x' of each image, same shape as ``x`` ``(B, 1, *grid)``."""
    if attribution.baseline == "healthy_mean":
        if healthy_mean is None:
            raise ValueError("the healthy_mean baseline needs the run's mean healthy image")
        return healthy_mean.expand_as(x).detach().clone()
    if attribution.baseline == "zero":
        return torch.zeros_like(x)
    if attribution.baseline == "blur":
        # The brain-restricted local mean, as in training (attribution_baseline "blur").
        return local_mean(x, attribution.blur_sigma)
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
    baseline = _baseline(x, settings, request.healthy_mean)  # (B, 1, *grid)
    if settings.target_delta is not None:
        # Points chosen per image until the relative completeness delta meets the target.
        result = adaptive_integrated_gradients(
            request.forward,
            x,
            baseline,
            settings.target_delta,
            settings.max_points,
            internal_batch_size=settings.internal_batch_size,
            progress=request.progress,
        )
        return _Maps(
            result.attributions,
            result.delta.to(x.device),
            result.baseline_logits.to(x.device),
            points=result.points,
            reached=result.reached,
        )
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
    return _Maps(
        attributions, delta.abs(), _logits(request.forward, baseline), points=settings.steps
    )


@_register("gradient_shap")
def _gradient_shap(request: _Request) -> _Maps:
    settings = request.attribution
    x = request.x  # (B, 1, *grid)
    batch = x.shape[0]
    total = torch.zeros_like(x)  # (B, 1, *grid): sum of the per-pass means times their size
    delta_sum = torch.zeros(batch, device=x.device)  # (B,)
    moments = _SampleMoments(batch)
    with _seeded(settings.seed, x.device):
        references = _references(request)  # (R, C, *grid)
        # What GradientShap.attribute builds on every call (Captum 0.9), with the tunnel that
        # records the per-draw maps: the same draws, the same mean (tests compare the two).
        integrand = InputBaselineXGradient(request.forward, True)
        integrand.gradient_func = GradientShap(request.forward, True).gradient_func
        tunnel = _RecordingTunnel(integrand, moments)
        done = 0
        while done < settings.n_samples:
            count = min(request.images_per_pass, settings.n_samples - done)
            # Captum draws `count` (reference, alpha) pairs per image, (B * count, 1, *grid)
            # in one pass; stdevs=0 keeps the input itself (Expected Gradients).
            attributions, delta = tunnel.attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=count,
                stdevs=0.0,
                draw_baseline_from_distrib=True,
                baselines=(references,),
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
    sd, agreement = moments.sd_and_agreement()
    return _Maps(
        total / settings.n_samples,
        (delta_sum / settings.n_samples).abs(),
        reference_logit.expand(batch),
        sd=sd,
        agreement=agreement,
    )


def _references(request: _Request) -> torch.Tensor:
    """gradient_shap's references ``(R, C, *grid)``: a random subset, or zero plus noise."""
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
    baseline = _baseline(request.x, request.attribution, request.healthy_mean)  # (B, 1, *grid)
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
    baseline = _baseline(x, settings, request.healthy_mean)  # (B, 1, *grid): what fills the window
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
    moments = _SampleMoments(request.x.shape[0])
    with _seeded(settings.seed, request.x.device):
        tunnel = _RecordingTunnel(Saliency(request.forward), moments)
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
    sd, agreement = moments.sd_and_agreement()
    return _Maps(cast(torch.Tensor, attributions), sd=sd, agreement=agreement)


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

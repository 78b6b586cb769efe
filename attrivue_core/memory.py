"""What a training run or an attribution map will need in worker memory, from its config alone.

The API checks this before it queues a job (``ATTRIVUE_WORKER_MEMORY_GB``), so that a config
such as densenet121 on a 512^3 grid is refused with a message instead of taking a worker over.
No torch here: the backend imports this module.

The estimate is dominated by the activations kept for the backward pass, which grow linearly
with the voxels of the working grid. ``ACTIVATION_BYTES_PER_VOXEL`` is what each network keeps
per input voxel and per image in one forward pass (float32, weights excluded), measured with
``torch.autograd.graph.saved_tensors_hooks`` on 48^3 and 64^3 grids (both gave the same value
to within 5 %: the count is linear in voxels). Training with an attribution loss back-propagates
through the attribution itself: each pass it differentiates keeps its graph, twice as large as
a forward one (``_attribution_passes``). Weights count four times (weights, gradients, Adam's
two moments). A run of several modalities (``RunConfig.in_channels``) holds each image once per
channel, and its first layer keeps the whole multi-channel input for backward. Estimates are meant to catch configs off by orders of magnitude, not to pack a
worker to the last megabyte.
"""

from __future__ import annotations

from dataclasses import dataclass

from attrivue_core.configs import AttributionConfig, RunConfig

__all__ = [
    "ACTIVATION_BYTES_PER_VOXEL",
    "MemoryEstimate",
    "attribution_memory",
    "training_memory",
]

ACTIVATION_BYTES_PER_VOXEL: dict[str, float] = {
    "small_cnn": 82.0,
    "patchgan": 120.0,
    "densenet121": 454.0,
    "resnet18": 963.0,
    "resnet10": 793.0,
    "unet": 66.0,
}
PARAMETERS: dict[str, int] = {
    "small_cnn": 15_849,
    "patchgan": 11_029_825,
    "densenet121": 11_243_649,
    "resnet18": 33_161_409,
    "resnet10": 14_356_929,
    "unet": 34_372,
}
_INPUT_COPIES = 8  # the image, its augmented and normalised copies, the mask and target maps
_BASELINE_BYTES = 512 * 1024**2  # the worker process itself: torch, MONAI, the dataset index
# Images evaluated together per pass, by Captum method (AttributionConfig.internal_batch_size
# bounds the methods that batch their samples; the others forward one image, deeplift two).
_BATCHED_METHODS = frozenset({"integrated_gradients", "gradient_shap", "smoothgrad", "occlusion"})


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a job will need, and the terms it is made of (for the refusal message)."""

    total_bytes: int
    network: str
    voxels: int
    images_per_pass: int
    passes: int

    @property
    def gib(self) -> float:
        return self.total_bytes / 1024**3

    def describe(self) -> str:
        """The terms of the estimate, as a user reads them."""
        return (
            f"{self.network}, {self.voxels:,} voxels per image, {self.images_per_pass} image(s) "
            f"per pass, {self.passes} differentiated pass(es)"
        )


def _voxels(grid: tuple[int, int, int]) -> int:
    x, y, z = grid
    return int(x) * int(y) * int(z)


def _attribution_passes(config: RunConfig) -> int:
    """Forward graphs kept at once per training step: the classification (or regression or
    segmentation) pass, plus, with an attribution loss, each differentiated attribution pass
    twice (its forward and its create_graph backward)."""
    if config.loss_setting == "lc_only":
        return 1
    passes = 1
    for method in config.train_attribution:
        if method == "integrated_gradients":
            passes += 2 * config.ig_steps
        elif method == "expected_gradients":
            passes += 2 * config.eg_k
        else:  # gradient, gradient_x_input
            passes += 2
    return passes


def _total(
    network: str, voxels: int, images: int, passes: int, *, training: bool, channels: int = 1
) -> int:
    # The table was measured on one channel; each further channel adds its float32 input to
    # every pass (the first layer's saved input) and to the image copies.
    extra = 4 * (max(int(channels), 1) - 1)
    activations = (ACTIVATION_BYTES_PER_VOXEL[network] + extra) * passes
    per_voxel = activations + 4 * _INPUT_COPIES * max(int(channels), 1)
    weights = PARAMETERS[network] * 4 * (4 if training else 1)
    return int(images * voxels * per_voxel + weights + _BASELINE_BYTES)


def training_memory(config: RunConfig) -> MemoryEstimate:
    """The estimated peak memory of one training step of ``config`` (batch, grid, network,
    attribution loss)."""
    voxels = _voxels(config.grid)
    passes = _attribution_passes(config)
    total = _total(
        config.network,
        voxels,
        config.batch_size,
        passes,
        training=True,
        channels=config.in_channels,
    )
    return MemoryEstimate(total, config.network, voxels, config.batch_size, passes)


def attribution_memory(run: RunConfig, params: AttributionConfig) -> MemoryEstimate:
    """The estimated peak memory of computing one map with ``params`` on ``run``'s network."""
    voxels = _voxels(run.grid)
    if params.method in _BATCHED_METHODS:
        images = params.internal_batch_size
    else:
        images = 2 if params.method == "deeplift" else 1
    total = _total(run.network, voxels, images, 1, training=False, channels=run.in_channels)
    if params.method == "integrated_gradients" and params.target_delta is not None:
        # IG to a requested accuracy keeps the gradient of every point it evaluated (float32,
        # one per channel), up to max_points of them, and a float64 running sum.
        total += voxels * max(int(run.in_channels), 1) * (4 * params.max_points + 8)
    return MemoryEstimate(total, run.network, voxels, images, 1)

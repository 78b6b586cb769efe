"""The evidence behind a map (docs/method.md section 4): sanity checks and faithfulness.

- **Cascading model-parameter randomisation** (Adebayo et al., NeurIPS 2018): the layers with
  parameters are re-initialised from the output down, one more at each step (``reset_layer``:
  a layer's own ``reset_parameters``, or ``torch.nn.init`` on the parameters of a TorchScript
  layer, which keeps its parameters but not its Python methods), and the map of
  each randomised copy is compared with the trained model's map by Spearman's rho and SSIM
  (scikit-image's ``structural_similarity``), on the signed maps and on |A|. A method whose
  map survives the randomisation of every layer explains the input, not the model: it fails.
- **Data randomisation**: the same network trained briefly on permuted labels (through the
  project's own training engine, ``worker.ml.training.train``); its map is compared with the
  trained model's the same way. A map that a model which learnt nothing reproduces fails.
- **Faithfulness**: deletion and insertion curves of the pathological logit on the signed
  map, most pathological voxels first (``worker.ml.metrics.deletion_insertion``), and
  Captum's ``infidelity`` on the signed map (no normalisation, no absolute values), and IROF
  (``irof``: supervoxels removed in the map's order against a random order).

Verdicts are plain: ``passes`` or ``fails`` with the reason. The thresholds are module
constants, stated in docs/method.md.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from captum.metrics import infidelity
from scipy.special import expit
from skimage.metrics import structural_similarity
from skimage.segmentation import slic
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.metrics import deletion_insertion, randomisation_sanity
from worker.ml.training import SubjectSample, load_model, train

__all__ = [
    "FLAT_CURVE_TOLERANCE",
    "IROF_RANDOM_ORDERS",
    "IROF_SEGMENTS",
    "SIMILARITY_THRESHOLD",
    "Attributor",
    "cascading_randomisation",
    "data_randomisation",
    "faithfulness",
    "irof",
    "map_similarity",
    "parameter_layers",
    "permuted_labels",
    "randomisation_verdict",
    "reset_layer",
    "supervoxels",
]

# A map whose Spearman rho of |A| with the trained model's map is at least this after every
# layer was randomised (or after training on permuted labels) fails the check.
SIMILARITY_THRESHOLD = 0.5
# Deletion and insertion curves whose logits all lie within this of each other are flat: the
# model's output does not depend on the voxels the map ranks.
FLAT_CURVE_TOLERANCE = 1e-6
# IROF: how many supervoxels SLIC is asked for, and how many random orders the map's order
# is compared with.
IROF_SEGMENTS = 64
IROF_RANDOM_ORDERS = 4

# A function that maps a model to the signed attribution map of the checked input.
Attributor = Callable[[nn.Module], np.ndarray]


def _resettable(module: nn.Module) -> bool:
    return callable(getattr(module, "reset_parameters", None)) or isinstance(
        module, torch.jit.ScriptModule
    )


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters of their own and can re-initialise them
    (``reset_layer``), from the output down (the reverse of their registration order)."""
    names = [
        name
        for name, module in model.named_modules()
        if name and any(True for _ in module.parameters(recurse=False)) and _resettable(module)
    ]
    return names[::-1]


# Buffers of a TorchScript normalisation layer and their fresh values (BatchNorm's
# ``reset_running_stats``).
_FRESH_BUFFERS = {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0.0}


def reset_layer(module: nn.Module) -> None:
    """Re-initialise a layer's own parameters.

    A layer with ``reset_parameters`` (PyTorch's and MONAI's layers) uses it. A TorchScript
    layer has its parameters but not its Python methods: each parameter is drawn again as
    PyTorch's own layers initialise theirs: a weight of two or more dimensions (convolution,
    linear) with ``kaiming_uniform_(a=sqrt(5))``, its bias uniform in +-1/sqrt(fan_in); a
    one-dimensional weight (normalisation) is set to 1 and any other one-dimensional
    parameter to 0, and the running statistics of a normalisation layer are reset.

    Raises:
        ValueError: The module can do neither.
    """
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    if not isinstance(module, torch.jit.ScriptModule):
        raise ValueError(f"{type(module).__name__} cannot re-initialise its parameters")
    parameters = dict(module.named_parameters(recurse=False))
    weight = parameters.get("weight")
    with torch.no_grad():
        for name, parameter in parameters.items():
            if parameter.ndim >= 2:
                nn.init.kaiming_uniform_(parameter, a=math.sqrt(5))
            elif name == "bias" and weight is not None and weight.ndim >= 2:
                bound = 1 / math.sqrt(max(weight[0].numel(), 1))
                nn.init.uniform_(parameter, -bound, bound)
            elif name == "weight":
                nn.init.ones_(parameter)
            else:
                nn.init.zeros_(parameter)
        for name, buffer in module.named_buffers(recurse=False):
            if name in _FRESH_BUFFERS:
                buffer.fill_(_FRESH_BUFFERS[name])


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """SSIM of two volumes; the window shrinks to the smallest odd side when a side is short."""
    side = min(a.shape)
    window = min(7, side if side % 2 else side - 1)
    if window < 3:
        return float("nan")
    return float(structural_similarity(a, b, data_range=data_range, win_size=window))


def _scaled(a: np.ndarray) -> np.ndarray:
    """The map divided by its largest magnitude (a zero map stays zero)."""
    a = np.asarray(a, dtype=np.float64)
    peak = float(np.abs(a).max()) if a.size else 0.0
    return a / peak if peak > 0 else a


def map_similarity(
    reference: np.ndarray, other: np.ndarray, *, brain_mask: np.ndarray | None = None
) -> dict[str, float]:
    """How alike two signed maps are.

    Args:
        reference: The trained model's signed map.
        other: The map to compare, same shape.
        brain_mask: Optional mask of the voxels compared by Spearman's rho (SSIM compares
            whole volumes: it needs their neighbourhoods).

    Returns:
        ``spearman_signed``, ``spearman_abs`` (``worker.ml.metrics.randomisation_sanity``),
        ``ssim_signed`` and ``ssim_abs``: SSIM of the maps, each scaled by its own largest
        magnitude (signed maps then span [-1, 1], data range 2; |A| spans [0, 1]).
    """
    rho = randomisation_sanity(reference, other, brain_mask=brain_mask)
    a, b = _scaled(reference), _scaled(other)
    return {
        "spearman_signed": float(rho["spearman_signed"]),
        "spearman_abs": float(rho["spearman_abs"]),
        "ssim_signed": _ssim(a, b, 2.0),
        "ssim_abs": _ssim(np.abs(a), np.abs(b), 1.0),
    }


def randomisation_verdict(similarity: dict[str, float], what: str) -> tuple[bool, str]:
    """``(passes, reason)`` for the similarity left after a randomisation.

    Fails when Spearman's rho of |A| is at least ``SIMILARITY_THRESHOLD``; a rho that is
    undefined (a constant map) fails too, since a map without ranking shows nothing.
    """
    rho = similarity["spearman_abs"]
    if not np.isfinite(rho):
        return False, f"the map after {what} is constant: no ranking to compare"
    if rho >= SIMILARITY_THRESHOLD:
        return False, (
            f"the map after {what} still ranks voxels like the original "
            f"(Spearman |A| {rho:.2f} >= {SIMILARITY_THRESHOLD})"
        )
    return True, f"the map changed after {what} (Spearman |A| {rho:.2f} < {SIMILARITY_THRESHOLD})"


def cascading_randomisation(
    model: nn.Module,
    attribute: Attributor,
    *,
    reference: np.ndarray | None = None,
    seed: int = 0,
    brain_mask: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Randomise the layers from the output down, one more each step, and compare maps.

    The model is not changed: each step randomises a fresh copy (each layer re-initialised by
    ``reset_layer``, under ``seed``), so step k has the top k layers random. A TorchScript
    model (an imported run's) is randomised the same way, layer by layer.

    Args:
        model: The trained network.
        attribute: Map of a model for the checked input (same method and settings each call).
        reference: The trained model's map; computed with ``attribute(model)`` when ``None``.
        seed: Seed of the re-initialisation.
        brain_mask: Optional mask of the voxels that Spearman's rho compares.
        progress: Called with ``(step, steps)`` after each step.

    Returns:
        ``layers`` (names, output first), ``steps`` (one dict per step: ``layer``, the newest
        randomised layer, and the keys of ``map_similarity``), ``passes`` and ``reason``
        (``randomisation_verdict`` of the last step, every layer random).

    Raises:
        ValueError: The model has no layer to randomise.
    """
    layers = parameter_layers(model)
    if not layers:
        raise ValueError("the model has no layer with parameters to randomise")
    original = attribute(model) if reference is None else np.asarray(reference)
    steps: list[dict[str, Any]] = []
    for k in range(1, len(layers) + 1):
        randomised = copy.deepcopy(model)
        modules = dict(randomised.named_modules())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name in layers[:k]:
                reset_layer(modules[name])
        similarity = map_similarity(original, attribute(randomised), brain_mask=brain_mask)
        steps.append({"layer": layers[k - 1], **similarity})
        if progress is not None:
            progress(k, len(layers))
    passes, reason = randomisation_verdict(steps[-1], "randomising every layer")
    return {"layers": layers, "steps": steps, "passes": passes, "reason": reason}


def permuted_labels(subjects: Sequence[SubjectSample], *, seed: int = 0) -> list[SubjectSample]:
    """The training subjects with their labels, masks, targets and target maps permuted among
    them (the other splits unchanged): images no longer tell their label."""
    train_ids = [i for i, s in enumerate(subjects) if s.split == "train"]
    order = np.random.default_rng(seed).permutation(len(train_ids))
    out = list(subjects)
    for position, source in zip(train_ids, (train_ids[j] for j in order), strict=True):
        donor = subjects[source]
        out[position] = dataclasses.replace(
            subjects[position],
            label=donor.label,
            mask=donor.mask,
            target=donor.target,
            target_map=donor.target_map,
        )
    return out


def data_randomisation(
    config: RunConfig,
    subjects: Sequence[SubjectSample],
    attribute: Attributor,
    reference: np.ndarray,
    *,
    checkpoint_dir: Path,
    epochs: int = 2,
    seed: int = 0,
    brain_mask: np.ndarray | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train the run's network briefly on permuted labels and compare its map with the original.

    Args:
        config: The run's configuration; trained again with ``epochs`` epochs, without
            per-epoch attribution metrics or early stopping.
        subjects: The run's subjects (``permuted_labels`` permutes the training split).
        attribute: Map of a model for the checked input.
        reference: The trained model's map.
        checkpoint_dir: Where the short run writes its checkpoints (a scratch directory).
        epochs: Length of the short run.
        seed: Seed of the permutation and of the short run.
        brain_mask: Optional mask of the voxels that Spearman's rho compares.
        should_stop: Polled by the training engine before every step.

    Returns:
        ``epochs``, the keys of ``map_similarity``, ``passes`` and ``reason``.
    """
    short = config.model_copy(
        update={
            "epochs": epochs,
            "seed": seed,
            "val_attribution": False,
            "early_stopping_patience": None,
        }
    )
    result = train(
        short,
        permuted_labels(subjects, seed=seed),
        checkpoint_dir=checkpoint_dir,
        should_stop=should_stop,
    )
    from_permuted, _ = load_model(result.last_checkpoint)
    similarity = map_similarity(reference, attribute(from_permuted), brain_mask=brain_mask)
    passes, reason = randomisation_verdict(similarity, "training on permuted labels")
    return {"epochs": epochs, **similarity, "passes": passes, "reason": reason}


def _gaussian_perturbation(scale: float) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Captum's perturbation: Gaussian noise I of standard deviation ``scale``, x - I."""

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * scale
        return noise, inputs - noise

    return perturb


def supervoxels(
    volume: np.ndarray,
    *,
    n_segments: int = IROF_SEGMENTS,
    compactness: float = 0.1,
    brain_mask: np.ndarray | None = None,
) -> np.ndarray:
    """SLIC supervoxels of a 3D volume (scikit-image's ``slic``), or of a multi-modal one
    ``(C, *grid)`` (segmented on all of its channels at once).

    Each channel is scaled to [0, 1] (inside the brain mask when one is given) so that
    ``compactness`` weighs intensity against distance the same way for every image.

    Returns:
        Integer labels of the grid: 1, 2, ... for the segments, 0 outside the mask.
    """
    v = np.asarray(volume, dtype=np.float64)
    stacked = v if v.ndim == 4 else v[None]
    grid = stacked.shape[1:]
    mask = None if brain_mask is None else np.asarray(brain_mask, dtype=bool).reshape(grid)
    scaled = np.zeros_like(stacked)
    for c, channel in enumerate(stacked):
        inside = channel if mask is None else channel[mask]
        low, high = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 0.0)
        if high > low:
            scaled[c] = (channel - low) / (high - low)
    return np.asarray(
        slic(
            scaled if v.ndim == 4 else scaled[0],
            n_segments=n_segments,
            compactness=compactness,
            channel_axis=0 if v.ndim == 4 else None,
            mask=mask,
            start_label=1,
        )
    )


def irof(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    attribution: np.ndarray,
    *,
    n_segments: int = IROF_SEGMENTS,
    random_orders: int = IROF_RANDOM_ORDERS,
    baseline: float = 0.0,
    brain_mask: np.ndarray | None = None,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """IROF, Iterative Removal Of Features (Rieger & Hansen 2020), on a 3D volume.

    Written here because Quantus's ``IROF`` segments 2D images with channels only. The image
    is cut into SLIC supervoxels (``supervoxels``, inside the brain mask when given); the
    segments are ordered by their mean signed relevance, most pathological first, and removed
    one at a time, cumulatively: their voxels become ``baseline``, as in deletion (0, the brain
    mean of a z-scored image). After each removal the model's pathological probability p_k
    (the sigmoid of the logit) is recorded. The score is the area over the normalised curve,
    the mean of 1 - p_k / p_0 over the K removals (k = 1..K), the paper's per-image IROF: high
    when the segments the map ranks first carry the evidence, 0 when the model ignores them,
    negative when removing them raises the probability. The same curve with the segments in a
    random order (the mean over ``random_orders`` permutations) is the reference a faithful map
    must beat.

    Args:
        forward: Pathological logit of a batch ``(B, C, *grid) -> (B,)`` (eval mode).
        image: The checked image ``(C, *grid)`` (one channel per modality).
        attribution: Its signed map per channel ``(C, *grid)`` (or ``grid`` for one channel);
            a segment is ranked by the mean of the channels' sum and removed in every channel.
        n_segments: Supervoxels asked of SLIC (it may return a few more or fewer).
        random_orders: Random permutations of the segments behind the reference.
        baseline: What a removed voxel becomes.
        brain_mask: Optional mask; only its voxels are segmented and removed.
        batch_size: Images per forward pass.
        seed: Seed of the random orders.

    Returns:
        ``segments`` (K), ``fractions`` (k / K, k = 0..K), ``probabilities`` (p_k in the map's
        order), ``random_probabilities`` (mean p_k over the random orders), ``auc`` and
        ``random_auc`` (the mean of 1 - p_k / p_0 over k = 1..K; for the random orders, the
        mean of their areas).

    Raises:
        ValueError: The brain mask leaves no voxel to segment.
    """
    x = image.detach().float()
    grid = tuple(x.shape[1:])
    volume = x.cpu().numpy()  # (C, *grid)
    a = np.asarray(attribution, dtype=np.float64).reshape(x.shape).sum(axis=0)
    mask = None if brain_mask is None else np.asarray(brain_mask, dtype=bool).reshape(grid)
    if mask is not None and not mask.any():
        raise ValueError("the brain mask is empty: no voxel to segment for IROF")
    labels = supervoxels(
        volume if len(volume) > 1 else volume[0], n_segments=n_segments, brain_mask=mask
    )
    ids = np.unique(labels[labels > 0])
    members = [np.flatnonzero(labels == i) for i in ids]
    relevance = np.array([a.flat[m].mean() for m in members])

    def probabilities(order: np.ndarray) -> np.ndarray:
        """p_0 .. p_K with the segments removed cumulatively in ``order``."""
        current = volume.copy()
        logits: list[np.ndarray] = []
        batch: list[np.ndarray] = [current.copy()]
        # Built a batch at a time: only ``batch_size`` volumes are held at once.
        for index in [*order, None]:
            if len(batch) == batch_size or index is None:
                with torch.no_grad():
                    out = forward(torch.from_numpy(np.stack(batch)).to(x))
                logits.append(out.detach().double().cpu().numpy().reshape(-1))
                batch = []
            if index is not None:
                current.reshape(len(current), -1)[:, members[index]] = baseline
                batch.append(current.copy())
        return np.asarray(expit(np.concatenate(logits)))

    def area(p: np.ndarray) -> float:
        return float(np.mean(1.0 - p[1:] / p[0]))

    ranked = probabilities(np.argsort(-relevance, kind="stable"))
    rng = np.random.default_rng(seed)
    shuffled = [probabilities(rng.permutation(len(members))) for _ in range(random_orders)]
    k = len(members)
    return {
        "segments": k,
        "fractions": [i / k for i in range(k + 1)],
        "probabilities": ranked.tolist(),
        "random_probabilities": np.mean(shuffled, axis=0).tolist(),
        "auc": area(ranked),
        "random_auc": float(np.mean([area(p) for p in shuffled])),
    }


def faithfulness(
    forward: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    attribution: np.ndarray,
    *,
    steps: int = 20,
    baseline: float = 0.0,
    brain_mask: np.ndarray | None = None,
    batch_size: int = 4,
    n_perturb_samples: int = 8,
    noise_scale: float = 0.1,
    seed: int = 0,
    irof_segments: int = IROF_SEGMENTS,
    irof_random_orders: int = IROF_RANDOM_ORDERS,
) -> dict[str, Any]:
    """Deletion, insertion, infidelity and IROF of a signed map of one image.

    Args:
        forward: Pathological logit of a batch ``(B, C, *grid) -> (B,)`` (eval mode).
        image: The checked image ``(C, *grid)`` (one channel per modality).
        attribution: Its signed map per channel ``(C, *grid)`` (or ``grid`` for one channel):
            deletion, insertion and infidelity take each channel's voxels as features of their
            own; IROF removes a supervoxel in every channel (``irof``).
        steps: Points of the deletion and insertion curves, less one.
        baseline: What a deleted voxel becomes.
        brain_mask: Optional mask of the voxels removed and inserted.
        batch_size: Images per forward pass.
        n_perturb_samples: Noise samples of ``infidelity``.
        noise_scale: Standard deviation of the noise, as a fraction of the image's.
        seed: Seed of the noise and of IROF's random orders.
        irof_segments: Supervoxels of IROF (``irof``).
        irof_random_orders: Random orders behind IROF's reference.

    Returns:
        ``fractions``, ``deletion`` and ``insertion`` (lists), ``deletion_auc``,
        ``insertion_auc``, ``auc_gap`` (insertion minus deletion: positive when the voxels
        ranked most pathological move the logit most), ``infidelity`` (Captum, signed map,
        not normalised), ``irof`` (the dict of ``irof``), ``passes`` and ``reason``. Fails
        when the curves are flat, when insertion AUC minus deletion AUC is not positive, or
        when IROF's area is not above the random order's.
    """
    x = image.detach().float()
    grid = tuple(x.shape[1:])
    a = np.asarray(attribution, dtype=np.float32).reshape(x.shape)  # (C, *grid)
    mask = None if brain_mask is None else np.asarray(brain_mask).reshape(grid)
    every_channel = None if mask is None else np.broadcast_to(mask, x.shape)

    def model_fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(x)
            return forward(t).detach().cpu().numpy()

    curves = deletion_insertion(
        model_fn,
        x.cpu().numpy(),
        a,
        steps=steps,
        baseline=baseline,
        brain_mask=every_channel,
        batch_size=batch_size,
    )
    deletion = np.asarray(curves["deletion"], dtype=np.float64)
    insertion = np.asarray(curves["insertion"], dtype=np.float64)
    gap = float(curves["insertion_auc"]) - float(curves["deletion_auc"])
    scale = noise_scale * float(x.std()) if float(x.std()) > 0 else noise_scale
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        score = infidelity(
            forward,
            _gaussian_perturbation(scale),
            x[None],
            torch.from_numpy(a)[None].to(x),
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=batch_size,
            normalize=False,
        )
    removal = irof(
        forward,
        x,
        a,
        n_segments=irof_segments,
        random_orders=irof_random_orders,
        baseline=baseline,
        brain_mask=mask,
        batch_size=batch_size,
        seed=seed,
    )
    irof_auc, random_auc = removal["auc"], removal["random_auc"]
    both = np.concatenate([deletion, insertion])
    if float(both.max() - both.min()) <= FLAT_CURVE_TOLERANCE * (1.0 + float(np.abs(both).max())):
        passes, reason = (
            False,
            (
                "deletion and insertion curves are flat: the model's output does not change when "
                "the voxels the map ranks are removed or inserted"
            ),
        )
    elif gap <= 0:
        passes, reason = (
            False,
            (
                f"removing the most pathological voxels first does not lower the logit more than "
                f"inserting them raises it (insertion AUC - deletion AUC {gap:.3g} <= 0)"
            ),
        )
    elif not irof_auc > random_auc:
        passes, reason = (
            False,
            (
                f"removing the supervoxels the map ranks most pathological first does not lower "
                f"the probability faster than a random order (IROF {irof_auc:.3g} <= random "
                f"{random_auc:.3g})"
            ),
        )
    else:
        passes, reason = (
            True,
            (
                f"the voxels ranked most pathological move the logit most "
                f"(insertion AUC - deletion AUC {gap:.3g} > 0; IROF {irof_auc:.3g} > random "
                f"order {random_auc:.3g})"
            ),
        )
    return {
        "fractions": [float(f) for f in np.asarray(curves["fractions"])],
        "deletion": deletion.tolist(),
        "insertion": insertion.tolist(),
        "deletion_auc": float(curves["deletion_auc"]),
        "insertion_auc": float(curves["insertion_auc"]),
        "auc_gap": gap,
        "infidelity": float(score.reshape(-1)[0]),
        "irof": removal,
        "passes": passes,
        "reason": reason,
    }

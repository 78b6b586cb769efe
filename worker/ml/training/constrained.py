"""The constrained tasks' shared base: a network with one output per image (classification,
regression) trained with its head loss and the attribution constraint.

The four loss settings of docs/method.md section 3 (``RunConfig.loss_setting``): ``lc_only`` keeps
a plain forward/backward step; the others compute a differentiable attribution
(``worker.ml.attribution.differentiable.attribute`` with ``create_graph=True``), build the
task's target of L_A and back-propagate L_A through it ("double back-propagation"). Each step
reports L_C, L_A, the gradient norm of L_C and of lambda * L_A (from one
``torch.autograd.grad`` per term, whose sum becomes ``p.grad``), the attribution scale and
the time spent in the attribution.

Every run, whatever its setting, ends with attribution metrics on the test split (Integrated
Gradients of the best weights against the lesion masks, ``worker.ml.evaluation``); with
``val_attribution`` the validation split gets them after every epoch too.

A subclass gives the head loss (``head_loss``), L_A (``constraint_loss``), the prediction
metrics (``head_metrics``, ``val_values``) and, optionally, calibration and predictions.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from attrivue_core.configs import LossSetting, RunConfig
from worker.ml.attribution.baselines import LocalMeanBaseline, local_mean
from worker.ml.attribution.differentiable import attribute, training_attribution_params
from worker.ml.evaluation import AttributionEvaluation, Baseline, evaluate_attributions, json_safe
from worker.ml.gradients import GradientStats, Grads, clip, combine, la_due, measure
from worker.ml.lean_graph import lean_graph
from worker.ml.losses import total_loss
from worker.ml.nets import SmallCNN, pathological_logit
from worker.ml.regression import build_model
from worker.ml.training.checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    atomic_save,
    load_payload,
)
from worker.ml.training.data import (
    as_item,
    batch_tensors,
    cached_splits,
    eval_samples,
    healthy_images,
    healthy_references,
    plain,
)
from worker.ml.training.datatypes import (
    MASK_AVAILABLE_KEY,
    TEST_IG_STEPS,
    TOP_K_PERCENT,
    VAL_IG_STEPS,
    Metrics,
    Split,
    StepStats,
    SubjectPrediction,
    SubjectSample,
)
from worker.ml.training.loop import Loop, mean_or_none, now, since, sum_or_none
from worker.ml.training.task import Task
from worker.ml.transforms import MASK_KEY

__all__ = [
    "AMP_ATTRIBUTION_GAIN",
    "ConstrainedTask",
    "ScaledLogit",
    "amp_attribution_gain",
    "attribution_eval",
    "baseline_logit_loss",
    "eval_mode",
    "fit_evidence_floor",
    "floor_images",
    "floored_network",
    "floors_started",
    "set_floors",
    "mode_dependent",
    "path_chunk",
    "run_baseline",
]

# Under mixed precision, input gradients of a whole-volume logit (about logit / n_voxels per
# voxel) fall into float16's subnormal range; the attribution is therefore computed for
# gain * F, with the logit cast to float32 first (so gain * F cannot overflow) and gain small
# enough that the float32 -> float16 boundary of the backward (which sees gain) cannot either.
AMP_ATTRIBUTION_GAIN = 1024.0


def amp_attribution_gain(loop: Loop) -> float:
    """Factor on the explained logit inside the training attribution (1 without AMP)."""
    return AMP_ATTRIBUTION_GAIN if loop.use_amp else 1.0


class ScaledLogit(nn.Module):
    """``gain`` times the pathological logit ``(B,)`` of ``model``, in float32."""

    def __init__(self, model: nn.Module, gain: float) -> None:
        super().__init__()
        self.model = model
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.model(x)).float() * self.gain


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode for the block, then back in train mode."""
    model.eval()
    try:
        yield
    finally:
        model.train()


@contextlib.contextmanager
def _unchanged() -> Iterator[None]:
    yield


def mode_dependent(model: nn.Module) -> bool:
    """Whether train and eval mode compute different functions (batch norm, dropout with a
    non-zero probability)."""
    return any(
        isinstance(m, _BatchNorm) or (isinstance(m, _DropoutNd) and m.p > 0.0)
        for m in model.modules()
    )


def path_chunk(loop: Loop, batch: int) -> int | None:
    """Images per forward pass of the path points of IG or EG inside L_A (their
    ``internal_batch_size``); ``None``: all at once.

    On a CPU one batch's worth at a time (IG's m points then run as m passes of B images),
    which costs less than one pass of m * B images there (docs/benchmarks.md, "training");
    on a GPU all at once. Chunks change nothing in the maps where the attribution runs in
    eval mode or the network has no layer that depends on the mode; otherwise (batch norm in
    train mode computes its statistics over each chunk) they are never used.
    """
    config = loop.config
    if not {"integrated_gradients", "expected_gradients"} & set(config.train_attribution):
        return None
    if loop.device.type != "cpu":
        return None
    if config.attribution_mode == "train" and mode_dependent(loop.model):
        return None
    return batch


def _gradient_fields(stats: GradientStats, *, w_a: float, applied: bool) -> dict[str, Any]:
    """``StepStats`` fields of the instrumentation of one step."""
    return {
        "grad_ratio": stats.ratio,
        "grad_cosine": stats.cosine,
        "grad_weight_a": w_a if applied else None,
        "grad_norm_total": stats.norm_total,
        "clip_fraction": None if stats.clipped is None else float(stats.clipped),
    }


def attribution_eval(
    loop: Loop, dataset: CacheDataset, *, steps: int, threshold: float | None = None
) -> AttributionEvaluation:
    """IG maps of the current weights on a split, against its lesion masks."""
    return evaluate_attributions(
        loop.model,
        eval_samples(dataset),
        threshold=threshold,
        steps=steps,
        top_k_percent=TOP_K_PERCENT,
        batch_size=loop.config.batch_size,
        device=loop.device,
        baseline=run_baseline(loop),
    )


def run_baseline(loop: Loop) -> Baseline:
    """The IG reference of a run's maps: its mean healthy image ``(C, D, H, W)``, each image's
    local mean (``attribution_baseline="blur"``), or ``None`` (the zero image)."""
    if loop.config.attribution_baseline == "blur":
        return LocalMeanBaseline(loop.config.attribution_blur_sigma)
    return None if loop.baseline is None else loop.baseline[0]


def batch_baseline(loop: Loop, images: torch.Tensor) -> torch.Tensor | None:
    """The IG references of a training batch ``(B, C, D, H, W)``: the run's fixed baseline
    ``(1, C, D, H, W)``, the images' local means ``(B, C, D, H, W)``, or ``None`` (zero)."""
    if loop.config.attribution_baseline == "blur":
        return local_mean(images, loop.config.attribution_blur_sigma)
    return loop.baseline


def floored_network(loop: Loop) -> tuple[SmallCNN, torch.Tensor]:
    """The ``SmallCNN`` inside ``loop.model`` that carries the detectors' floors, and its
    ``floored`` mask (which features have one)."""
    net = next(m for m in loop.model.modules() if isinstance(m, SmallCNN))
    assert net.floored is not None
    return net, net.floored


def floor_images(
    config: RunConfig, subjects: Sequence[SubjectSample], datasets: dict[str, CacheDataset]
) -> torch.Tensor:
    """The healthy images the detectors' floors are fitted on: those of the training split, or
    of the validation split with ``RunConfig.evidence_floor_subjects="validation"``."""
    split: Split = "val" if config.evidence_floor_subjects == "validation" else "train"
    return healthy_images(config, subjects, datasets, "evidence_floor", split)


@torch.no_grad()
def set_floors(loop: Loop, healthy: torch.Tensor) -> int:
    """Floor the lesion detectors of ``loop.model``'s current weights at their largest response
    over ``healthy`` ``(R, C, D, H, W)`` (eval mode), or at the quantile
    ``RunConfig.evidence_floor_quantile`` of those responses; return how many features were
    floored."""
    net, floored = floored_network(loop)
    captured: list[torch.Tensor] = []
    hook = net.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with eval_mode(loop.model):
            floored.fill_(False)  # the head sees the raw pooled features
            for start in range(0, len(healthy), loop.config.batch_size):
                loop.model(healthy[start : start + loop.config.batch_size].to(loop.device))
    finally:
        hook.remove()
    return net.set_evidence_floor(torch.cat(captured).float(), loop.config.evidence_floor_quantile)


def floors_started(config: RunConfig, history: Sequence[dict[str, Any]]) -> bool:
    """Whether ``evidence_floor="every_epoch"`` fits floors after the epoch that follows
    ``history``: always when ``evidence_floor_start_auroc`` is 0, otherwise once an epoch of
    ``history`` reached that validation AUROC."""
    threshold = config.evidence_floor_start_auroc
    if threshold <= 0.0:
        return True
    return any((record.get("val_auroc") or 0.0) >= threshold for record in history)


def fit_evidence_floor(
    loop: Loop, subjects: Sequence[SubjectSample], datasets: dict[str, CacheDataset]
) -> int | None:
    """Floor the lesion detectors of ``best.pt`` and ``last.pt``
    (``RunConfig.evidence_floor="after_training"``).

    Each checkpoint's weights get their own floors: every pooled feature with a positive head
    weight is floored at its largest value over the healthy subjects of ``floor_images``
    (preprocessed without augmentation, the network in eval mode). Returns the number of
    features floored in ``best.pt``, or ``None`` when the run floors nothing after training.
    """
    if loop.config.evidence_floor != "after_training":
        return None
    healthy = floor_images(loop.config, subjects, datasets)
    floored = None
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        path = loop.checkpoint_dir / name
        if not path.exists():
            continue
        payload = load_payload(path, loop.device)
        loop.model.load_state_dict(payload["model"])
        floored = set_floors(loop, healthy)
        payload["model"] = loop.model.state_dict()
        atomic_save(payload, path)
    return floored


def baseline_logit_loss(
    loop: Loop, images: torch.Tensor, deployed: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The decision boundary of the network the attribution explains, held at the baseline.

    Two BCE terms, in float32, of the network in eval mode (the mode of the training
    attribution and of the deployed model): the baseline's pathological logit F(x') against
    probability 1/2, and the batch's logits ``deployed`` (B,) against their labels. The
    baseline is the run's own (``Loop.baseline``: the mean healthy training image; with
    ``attribution_baseline="blur"`` each image's local mean, every one held at 1/2) or the
    zero image. L_C alone trains the train-mode logits; with batch norm the eval-mode ones can
    drift by a constant (the running statistics), which no train-mode loss sees and which
    opens the same gap F(x') - F(x) as a far-off F(x'). Each term's gradient in a logit is at
    most 1, so a far-off logit is pulled back steadily rather than by a jump.
    """
    reference = batch_baseline(loop, images)
    if reference is None:
        reference = torch.zeros_like(images[:1])
    with eval_mode(loop.model):
        logit = pathological_logit(loop.model(reference.to(images.dtype))).float()
    boundary = nn.functional.binary_cross_entropy_with_logits(logit, torch.full_like(logit, 0.5))
    sides = nn.functional.binary_cross_entropy_with_logits(deployed.float(), labels.float())
    return boundary + sides


class ConstrainedTask(Task):
    """A network with one output per image, its head loss and the attribution constraint."""

    #: Whether subjects carry a regression target (items get it; subjects without one are
    #: left out of every split).
    uses_targets: bool = False
    #: Validation metric names (without ``val_``) reported as ``None`` without a split.
    empty_val_names: tuple[str, ...] = ()
    #: evidence_floor "every_epoch": the healthy images the floors are fitted on (``floor_images``).
    _floor_images: torch.Tensor | None = None

    # ------------------------------------------------------------------ task hooks

    @abc.abstractmethod
    def needs_masks(self, config: RunConfig, split: Split) -> bool:
        """Whether a split's lesion masks are read."""

    @abc.abstractmethod
    def head_loss(
        self, loop: Loop, outputs: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]
    ) -> torch.Tensor:
        """The head loss of a batch (float32): L_C, or L_R of a regression."""

    @abc.abstractmethod
    def constraint_loss(
        self,
        loop: Loop,
        batch: dict[str, Any],
        *,
        setting: LossSetting,
        labels: torch.Tensor,
        attributions: torch.Tensor,
        masks: torch.Tensor,
        available: torch.Tensor,
        brain: torch.Tensor | None,
        gain: float,
    ) -> torch.Tensor:
        """L_A of a batch from its attributions (``gain`` times the true ones)."""

    @abc.abstractmethod
    def head_metrics(self, loop: Loop, dataset: CacheDataset) -> Metrics:
        """Metrics of the prediction on a split, with its ``loss``."""

    @abc.abstractmethod
    def val_values(self, metrics: Metrics) -> Metrics:
        """The ``val_...`` keys of the history from ``head_metrics`` of the validation split."""

    def attribution_gain(self, loop: Loop) -> float:
        """Factor on the explained output inside the training attribution."""
        return amp_attribution_gain(loop)

    def calibrate(self, loop: Loop, datasets: dict[str, CacheDataset]) -> float | None:
        """Adjust best.pt after training; the offset it applied, or ``None`` (default)."""
        return None

    def predict_subjects(
        self,
        loop: Loop,
        datasets: dict[str, CacheDataset],
        subjects: Sequence[SubjectSample],
    ) -> list[SubjectPrediction]:
        """Per-subject predictions of best.pt (default: none)."""
        return []

    # ------------------------------------------------------------------ setup

    def build_model(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> nn.Module:
        return build_model(config, subjects)

    def build_datasets(
        self, config: RunConfig, subjects: Sequence[SubjectSample]
    ) -> dict[str, CacheDataset]:
        def items_of(split: Split) -> list[dict[str, Any]]:
            with_masks = self.needs_masks(config, split)
            return [
                as_item(s, with_masks, split, with_target=self.uses_targets)
                for s in subjects
                if s.split == split and not (self.uses_targets and s.target is None)
            ]

        return cached_splits(config, items_of)

    def references(
        self,
        config: RunConfig,
        subjects: Sequence[SubjectSample],
        datasets: dict[str, CacheDataset],
        device: torch.device,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return healthy_references(config, subjects, datasets, device)

    def prepare(
        self,
        loop: Loop,
        subjects: Sequence[SubjectSample],
        datasets: dict[str, CacheDataset],
    ) -> None:
        self._floor_images = None
        if loop.config.evidence_floor == "every_epoch":
            self._floor_images = floor_images(loop.config, subjects, datasets)

    def after_train_epoch(self, loop: Loop, history: Sequence[dict[str, Any]]) -> None:
        # The floors of this epoch's weights: validated and saved with them, and kept by the
        # next epoch's steps; from the first epoch, or once an earlier epoch's validation AUROC
        # reached evidence_floor_start_auroc (until then the detectors learn unfloored).
        if self._floor_images is not None and floors_started(loop.config, history):
            set_floors(loop, self._floor_images)

    # ------------------------------------------------------------------ steps

    def train_step(
        self,
        loop: Loop,
        batch: dict[str, Any],
        *,
        epoch: int,
        step: int,
        steps: int,
        generator: torch.Generator,
    ) -> StepStats:
        config = loop.config
        position = (epoch - 1) + (step - 1) / steps  # fractional 0-based epoch, for lambda
        if config.loss_setting == "lc_only":
            if step <= config.grad_probe_batches:
                return self.constrained_step(loop, batch, position, generator, probe=True)
            return self.plain_step(loop, batch)
        first, current = (epoch - 1) * steps, (epoch - 1) * steps + step - 1  # global steps
        every = config.la_every_n_steps
        if la_due(current, every):
            # This step's rank among the epoch's L_A steps (1 for the first).
            rank = current // every - (first - 1) // every
            instrument = rank <= config.grad_probe_batches
            return self.constrained_step(loop, batch, position, generator, instrument=instrument)
        return self.plain_step(loop, batch)

    def plain_step(self, loop: Loop, batch: dict[str, Any]) -> StepStats:
        """One optimisation step on the head loss alone: one forward, one backward."""
        started = time.perf_counter()
        images, labels = batch_tensors(batch, loop.device)
        loop.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
        ):
            logits = pathological_logit(loop.model(images))  # (B,)
        # The loss is computed in float32 even under autocast, for a stable BCE.
        loss_c = self.head_loss(loop, logits, labels, batch)
        loop.scaler.scale(loss_c).backward()
        # Unscale first so the reported norm is that of the true gradient of L_C.
        loop.scaler.unscale_(loop.optimizer)
        params = [p for p in loop.model.parameters() if p.requires_grad]
        grad_norm_c, clipped = clip(params, loop.config.grad_clip_norm)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loss_value = float(loss_c.detach())
        return StepStats(
            loss_c=loss_value,
            grad_norm_c=grad_norm_c,
            step_seconds=since(started, loop.device),
            loss=loss_value,
            grad_norm_total=grad_norm_c,
            clip_fraction=None if clipped is None else float(clipped),
        )

    def constrained_step(
        self,
        loop: Loop,
        batch: dict[str, Any],
        position: float,
        generator: torch.Generator,
        *,
        probe: bool = False,
        instrument: bool = True,
    ) -> StepStats:
        """One optimisation step of a setting with L_A (double back-propagation).

        With ``instrument``, or a gradient balancing that needs both terms, the gradients of
        the head loss and of lambda * L_A are taken separately (``torch.autograd.grad``, the
        first keeping the shared graph) and combined into ``p.grad`` by
        ``worker.ml.gradients`` (a plain sum, or balanced; then clipped if configured), with
        each term's norm and their cosine as by-products. Otherwise one backward pass of
        L_C + lambda * L_A gives the same sum: where L_C's logits come from the attribution's
        own forward, the graph of that forward is traversed once instead of twice
        (``train_step`` instruments the first ``grad_probe_batches`` L_A steps of each epoch).

        With ``probe`` (the instrumentation of ``lc_only``), L_A is the weakly supervised
        one, its gradient is measured but not applied, and the step trains L_C alone.
        """
        config = loop.config
        setting = "lc_la_unsupervised" if probe else config.loss_setting
        model = loop.model
        started = time.perf_counter()
        images, labels = batch_tensors(batch, loop.device)
        masks = batch[MASK_KEY]
        masks = plain(masks).to(loop.device, non_blocking=True)  # (B, 1, D, H, W)
        available = torch.as_tensor(batch[MASK_AVAILABLE_KEY]).to(loop.device) > 0.5  # (B,)
        loop.optimizer.zero_grad(set_to_none=True)

        kwargs = training_attribution_params(
            config, generator, baseline=batch_baseline(loop, images), references=loop.references
        )
        chunk = path_chunk(loop, images.shape[0])
        if chunk is not None:
            kwargs["internal_batch_size"] = chunk
        gain = self.attribution_gain(loop)
        explained = model if gain == 1.0 else ScaledLogit(model, gain)
        # In eval mode the attribution's own F(x) is not the train-mode logit L_C needs, unless
        # the network has no layer that behaves differently (instance norm, no dropout).
        separate_forward = config.attribution_mode == "eval" and mode_dependent(model)
        anchored = config.baseline_logit_weight > 0.0 and not probe
        if "integrated_gradients" in config.train_attribution:
            # IG's endpoint forwards serve its completeness delta, which a step does not use,
            # and F(x), which L_C reuses unless it has a forward of its own (and the
            # baseline-logit term needs the eval-mode F(x)).
            kwargs["endpoints"] = "none" if separate_forward and not anchored else "input"
        with torch.autocast(
            device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
        ):
            if separate_forward:
                # The train-mode forward comes first: it updates the batch-norm running
                # statistics in place, which the eval-mode attribution graph then saves for
                # its backward.
                logits = pathological_logit(model(images))  # (B,)
                attribution_started = now(loop.device)
                with eval_mode(model), lean_graph(model):
                    out = attribute(explained, images, config.train_attribution, **kwargs)
            else:
                attribution_started = now(loop.device)
                with (
                    eval_mode(model) if config.attribution_mode == "eval" else _unchanged(),
                    lean_graph(model),  # folds no batch norm in train mode
                ):
                    out = attribute(explained, images, config.train_attribution, **kwargs)
                # Gradient and IG evaluate F(x) with its graph anyway (in train mode, the
                # forward that updates the running statistics); EG does not.
                logits = (
                    out.logits / gain
                    if out.logits is not None
                    else pathological_logit(model(images))
                )
            attribution_seconds = since(attribution_started, loop.device)
        attributions = out.attributions.float()  # (B, C, D, H, W), gain * A
        loss_c = self.head_loss(loop, logits, labels, batch)
        brain = (images != 0).any(dim=1, keepdim=True) if config.restrict_to_brain else None
        loss_a = self.constraint_loss(
            loop,
            batch,
            setting=setting,
            labels=labels,
            attributions=attributions,
            masks=masks,
            available=available,
            brain=brain,
            gain=gain,
        )
        if anchored:
            # The logits of the network the attribution explained (eval mode).
            if separate_forward and out.logits is not None:
                deployed = out.logits.float() / gain
            elif not mode_dependent(model):
                deployed = logits.float()
            else:
                with eval_mode(model):
                    deployed = pathological_logit(model(images)).float()
            loss_a = loss_a + config.baseline_logit_weight * baseline_logit_loss(
                loop, images, deployed, labels
            )
        lam = None if setting == "la_only" or probe else config.lambda_a.at(position)
        loss = loss_c if probe else total_loss(loss_c, loss_a, lam or 0.0, setting)  # reported

        # grad(loss) = grad(L_C) + grad(lambda * L_A) (la_only: grad(L_A) alone), term by term.
        params = [p for p in model.parameters() if p.requires_grad]
        scale = float(loop.scaler.get_scale()) if loop.use_amp else 1.0
        weighted_a = loss_a if lam is None else lam * loss_a
        train_a = lam is None or lam > 0.0  # during a warm-up at 0, skip the double backward
        if not (probe or instrument or setting == "la_only" or loop.balancer.mode != "none"):
            # One backward of the applied sum (la_only has one term: nothing to fuse).
            total = loss_c + weighted_a if train_a else loss_c
            grads = torch.autograd.grad(loop.scaler.scale(total), params, allow_unused=True)
            combine(params, grads, None)
            loop.scaler.unscale_(loop.optimizer)
            fused = GradientStats()
            fused.norm_total, fused.clipped = clip(params, config.grad_clip_norm)
            loop.scaler.step(loop.optimizer)
            loop.scaler.update()
            return StepStats(
                loss_c=float(loss_c.detach()),
                grad_norm_c=None,
                step_seconds=since(started, loop.device),
                loss=float(loss.detach()),
                loss_a=float(loss_a.detach()),
                lambda_a=lam,
                attribution_abs_mean=float(attributions.detach().abs().mean()) / gain,
                attribution_seconds=attribution_seconds,
                **_gradient_fields(fused, w_a=1.0, applied=train_a),
            )
        grads_c = None
        if setting != "la_only":
            grads_c = torch.autograd.grad(
                loop.scaler.scale(loss_c), params, retain_graph=train_a, allow_unused=True
            )
        grads_a: Grads | None = None
        if train_a:
            # allow_unused: e.g. the head's bias moves the logit but not its input gradient.
            grads_a = torch.autograd.grad(loop.scaler.scale(weighted_a), params, allow_unused=True)
        gradients = measure(grads_c, grads_a, scale)
        w_c, w_a = loop.balancer.weights(
            gradients, lam=lam, loss_c=float(loss_c.detach()), loss_a=float(loss_a.detach())
        )
        grads_a = loop.balancer.adjust(grads_c, grads_a)
        combine(params, grads_c, None if probe else grads_a, w_c=w_c, w_a=w_a)
        loop.scaler.unscale_(loop.optimizer)
        gradients.norm_total, gradients.clipped = clip(params, config.grad_clip_norm)
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        return StepStats(
            loss_c=float(loss_c.detach()),
            grad_norm_c=gradients.norm_c,
            step_seconds=since(started, loop.device),
            loss=float(loss.detach()),
            loss_a=float(loss_a.detach()),
            grad_norm_a=0.0 if grads_a is None else gradients.norm_a,
            lambda_a=lam,
            attribution_abs_mean=float(attributions.detach().abs().mean()) / gain,
            attribution_seconds=attribution_seconds,
            **_gradient_fields(gradients, w_a=w_a, applied=grads_a is not None and not probe),
        )

    def summarize(self, records: Sequence[StepStats]) -> StepStats:
        """Epoch means of the losses, gradient norms and attribution scale; lambda of the
        last step; total seconds (attribution and whole steps)."""
        return StepStats(
            loss_c=float(np.mean([r.loss_c for r in records])),
            grad_norm_c=mean_or_none([r.grad_norm_c for r in records]),
            step_seconds=float(np.sum([r.step_seconds for r in records])),
            loss=mean_or_none([r.loss for r in records]),
            loss_a=mean_or_none([r.loss_a for r in records]),
            grad_norm_a=mean_or_none([r.grad_norm_a for r in records]),
            lambda_a=records[-1].lambda_a if records else None,
            attribution_abs_mean=mean_or_none([r.attribution_abs_mean for r in records]),
            attribution_seconds=sum_or_none([r.attribution_seconds for r in records]),
            grad_ratio=mean_or_none([r.grad_ratio for r in records]),
            grad_cosine=mean_or_none([r.grad_cosine for r in records]),
            grad_weight_a=mean_or_none([r.grad_weight_a for r in records]),
            grad_norm_total=mean_or_none([r.grad_norm_total for r in records]),
            clip_fraction=mean_or_none([r.clip_fraction for r in records]),
        )

    def train_record(self, loop: Loop, summary: StepStats) -> dict[str, Any]:
        share = None
        if summary.attribution_seconds is not None and summary.step_seconds:
            share = summary.attribution_seconds / summary.step_seconds
        return {
            "train_loss": summary.loss,
            "train_loss_c": summary.loss_c,
            "train_grad_norm_c": summary.grad_norm_c,
            "train_loss_a": summary.loss_a,
            "train_grad_norm_a": summary.grad_norm_a,
            "lambda_a": summary.lambda_a,
            "train_attribution_abs_mean": summary.attribution_abs_mean,
            "train_attribution_seconds": summary.attribution_seconds,
            "train_step_seconds": summary.step_seconds,
            # The gradient instrumentation (worker.ml.gradients) of the epoch.
            "train_grad_ratio": summary.grad_ratio,
            "train_grad_cosine": summary.grad_cosine,
            "train_grad_weight_a": summary.grad_weight_a,
            "train_grad_norm_total": summary.grad_norm_total,
            "train_clip_fraction": summary.clip_fraction,
            "train_attribution_share": share,
            "amp_active": float(loop.use_amp),
        }

    # ------------------------------------------------------------------ evaluation

    def evaluate_val(self, loop: Loop, dataset: CacheDataset | None) -> Metrics:
        """Validation head metrics; with ``val_attribution``, attribution metrics of IG maps
        (``VAL_IG_STEPS`` points) against the lesion masks."""
        if dataset is None:
            return {"val_loss": None, **{f"val_{name}": None for name in self.empty_val_names}}
        values = self.val_values(self.head_metrics(loop, dataset))
        if loop.config.evidence_floor == "every_epoch":
            # Whether this epoch's weights have their floors (not yet, below the AUROC gate of
            # evidence_floor_start_auroc): model selection prefers those that do.
            values["val_evidence_floored"] = float(bool(floored_network(loop)[1].any()))
        if loop.config.val_attribution:
            evaluation = attribution_eval(loop, dataset, steps=VAL_IG_STEPS)
            found = evaluation.metrics
            values.update(
                {
                    "val_attr_auroc": found["voxel_auroc"],
                    "val_lesion_mass": found["lesion_mass"],
                    "val_attr_threshold": evaluation.chosen_threshold,
                    # At the threshold chosen on these same maps: optimistic, for monitoring.
                    "val_attr_dice": found["dice_at_threshold"],
                    "val_attr_dice_top5": found["dice_top_k"],
                    "val_attr_healthy_share": found["healthy_share"],
                    "val_attr_seconds": evaluation.seconds,
                }
            )
        return json_safe(values)

    def conclude(
        self,
        loop: Loop,
        datasets: dict[str, CacheDataset],
        subjects: Sequence[SubjectSample],
    ) -> tuple[Metrics, list[SubjectPrediction]]:
        floored = fit_evidence_floor(loop, subjects, datasets)  # before the calibration
        offset = self.calibrate(loop, datasets)
        test_metrics = self.evaluate_test(loop, datasets)
        predictions = self.predict_subjects(loop, datasets, subjects)
        if offset is not None:
            test_metrics["calibration_offset"] = offset
        if floored is not None:
            test_metrics["evidence_floored_features"] = floored
        return test_metrics, predictions

    def evaluate_test(self, loop: Loop, datasets: dict[str, CacheDataset]) -> Metrics:
        """Test metrics of the best checkpoint's weights: the head's, and attribution maps
        against the lesion masks with the Dice threshold chosen on the validation maps."""
        dataset = datasets.get("test")
        if dataset is None:
            return {}
        loop.check_cancel(loop.config.epochs)
        payload = load_payload(loop.checkpoint_dir / BEST_CHECKPOINT, loop.device)
        loop.model.load_state_dict(payload["model"])
        metrics: Metrics = self.head_metrics(loop, dataset)

        threshold = None
        if "val" in datasets:
            threshold = attribution_eval(
                loop, datasets["val"], steps=TEST_IG_STEPS
            ).chosen_threshold
        found = attribution_eval(loop, dataset, steps=TEST_IG_STEPS, threshold=threshold).metrics
        metrics.update(
            {
                "attr_dice": found["dice_at_threshold"],
                "attr_dice_top5": found["dice_top_k"],
                "attr_voxel_auroc": found["voxel_auroc"],
                "attr_voxel_auprc": found["voxel_auprc"],
                "attr_lesion_mass": found["lesion_mass"],
                "attr_pointing_game": found["pointing_game"],
                "attr_healthy_share": found["healthy_share"],
                "attr_lesion_positive": found["lesion_positive"],
                "attr_threshold": threshold,
                "attr_ig_delta": found["ig_delta_abs_mean"],
                "attr_n_pathological": found["n_pathological"],
                "attr_n_healthy": found["n_healthy"],
            }
        )
        return json_safe(metrics)

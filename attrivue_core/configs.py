"""Validated settings of a training run and of an attribution job.

Every field has a default that runs on a CPU-only machine, so ``RunConfig()`` is a valid run.
New options are added as new fields with defaults: a checkpoint written by an older version
still loads, because its stored config validates against the newer model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AttributionConfig",
    "ATTRIBUTION_EARLY_STOPPING",
    "AttributionMethod",
    "MAX_IG_POINTS",
    "METHOD_FIELDS",
    "BaselineName",
    "EarlyStoppingMetric",
    "GradBalance",
    "GridSize",
    "LambdaSchedule",
    "LossSetting",
    "NetworkName",
    "RegressionConstraint",
    "RegressionSettings",
    "ReferenceSource",
    "RiemannMethod",
    "RegionSpec",
    "SEGMENTATION_NETWORKS",
    "RunConfig",
    "TaskName",
    "TrainAttributionName",
]

# Registry keys of worker.ml.nets; extend the Literal when a network is registered.
NetworkName = Literal["small_cnn", "patchgan", "densenet121", "resnet18", "resnet10", "unet"]
# Networks whose output is an image (a logit per voxel): the segmentation task's only choices.
SEGMENTATION_NETWORKS = frozenset({"unet"})
# The four settings of docs/method.md section 3 (worker.ml.losses.LossSettingName).
LossSetting = Literal["lc_only", "la_only", "lc_la_supervised", "lc_la_unsupervised"]
# Keys of worker.ml.attribution.differentiable.ATTRIBUTION_METHODS (kept in sync by a test).
TrainAttributionName = Literal[
    "gradient", "gradient_x_input", "integrated_gradients", "expected_gradients"
]
EarlyStoppingMetric = Literal[
    "val_auroc",
    "val_loss",
    "val_accuracy",
    "val_attr_auroc",
    "val_lesion_mass",
    "val_attr_dice",
    "val_attr_healthy_share",
    "val_dice",
    "val_mae",
]
# Early-stopping metrics computed from the validation split's attribution maps
# (val_attr_healthy_share, lower is better, needs no lesion mask: the weakly supervised target).
ATTRIBUTION_EARLY_STOPPING = frozenset(
    {"val_attr_auroc", "val_lesion_mass", "val_attr_dice", "val_attr_healthy_share"}
)
# What a run learns: the image label, a continuous target, or lesion masks.
TaskName = Literal["classification", "regression", "segmentation"]
# The regression constraint's options (worker.ml.regression, docs/experiments.md).
RegressionConstraint = Literal["outside_lesions", "zero_target", "mass_scaling"]
BaselineName = Literal["zero", "blur", "healthy_mean"]
# Where gradient_shap (Expected Gradients) draws its references x'.
ReferenceSource = Literal["noise", "healthy"]
RiemannMethod = Literal[
    "gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right"
]

# Methods of worker.ml.attribution.captum_eval; extend the Literal when a method is added.
AttributionMethod = Literal[
    "integrated_gradients",
    "gradient_shap",
    "saliency",
    "input_x_gradient",
    "deeplift",
    "guided_backprop",
    "occlusion",
    "smoothgrad",
    "grad_cam",
]

# Balancing of the gradients of L_C and lambda * L_A (worker.ml.gradients.GradientBalancer).
GradBalance = Literal["none", "fixed_ratio", "gradnorm", "project"]

GridSize = Annotated[int, Field(ge=8, le=512)]
WindowSize = Annotated[int, Field(ge=1, le=512)]


class LambdaSchedule(BaseModel):
    """The weight lambda of L_A over training.

    Attributes:
        kind: ``"constant"``, or ``"linear_warmup"`` from 0 at epoch 0 to ``value`` at
            ``warmup_epochs`` (then constant). A warm-up lets the classifier learn before the
            constraint bites (docs/method.md section 6.1).
        value: Final lambda.
        warmup_epochs: Length of the warm-up, in (possibly fractional) epochs; pass
            ``epoch + step / steps_per_epoch`` to ``at`` for a per-step ramp.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["constant", "linear_warmup"] = "constant"
    value: float = Field(default=1.0, ge=0.0)
    warmup_epochs: float = Field(default=0.0, ge=0.0)

    def at(self, epoch: float) -> float:
        """Lambda at ``epoch`` (0-based, fractional allowed)."""
        if self.kind == "constant" or self.warmup_epochs == 0.0:
            return self.value
        return self.value * min(max(epoch / self.warmup_epochs, 0.0), 1.0)


class RegressionSettings(BaseModel):
    """What a regression run (``RunConfig.task == "regression"``) adds; see worker.ml.regression.

    Attributes:
        loss: Prediction loss L_R on standardised targets: ``l1`` (mean absolute error) or
            ``mse`` (mean squared error).
        constraints: Parts of the regression constraint L_A (positive relevance raises the
            prediction): ``outside_lesions``, no positive relevance outside the lesion mask;
            ``zero_target``, no positive relevance anywhere on a subject whose target is zero;
            ``mass_scaling``, each subject's positive relevance mass proportional to its
            target. ``None``: the loss setting's default, ``outside_lesions`` and
            ``zero_target`` for ``lc_la_supervised``, ``zero_target`` for
            ``lc_la_unsupervised`` (targets only; ``outside_lesions`` is refused there).
        penalty: Per-voxel penalty on relevance that must not be positive: ``softplus``
            (BCE against 0, the classification constraint's form) or ``relu_squared``
            (only the positive part is penalised).
        zero_tolerance: Targets at or below this value count as zero.
        mass_weight: Weight of the ``mass_scaling`` term inside L_A.
    """

    model_config = ConfigDict(extra="forbid")

    loss: Literal["l1", "mse"] = "l1"
    constraints: list[RegressionConstraint] | None = None
    penalty: Literal["softplus", "relu_squared"] = "softplus"
    zero_tolerance: float = Field(default=0.0, ge=0.0)
    mass_weight: float = Field(default=1.0, ge=0.0)


class RunConfig(BaseModel):
    """Hyper-parameters of one training run.

    Attributes:
        network: Registry key of the classifier (see ``worker.ml.nets.build_network``):
            ``small_cnn``; ``patchgan``, the published classifier of docs/method.md section 3
            (base width 64); MONAI's ``densenet121``, ``resnet18`` and ``resnet10``.
        in_channels: Input channels of the network: the number of modalities of the run's
            dataset, in the dataset's channel order (set by the API from the dataset).
        pooling: ``small_cnn`` only: the global pooling of its last feature map (``max``, the
            network's default; ``avg``; ``avgmax``, both concatenated). Max pooling finds "the
            brightest thing in the brain", which suits hyperintense lesions; a hypointense
            lesion reads like grey matter inside white matter and is seen by the average of
            local-contrast features rather than their maximum.
        activation: ``small_cnn`` only: the activation of its blocks (``leakyrelu``, slope
            0.2, the default; ``relu``). Through LeakyReLU's slope a lesion detector that does
            not fire still passes a fifth of its gradient, so healthy tissue that resembles
            a lesion gets pathological relevance; ReLU passes none below the threshold. A
            research option: it did not lower the constrained presets' healthy share
            (docs/experiments.md, "The presets with the baseline's logit held").
        evidence_floor: ``small_cnn``, classification: floor each lesion detector (a pooled
            feature whose head weight is positive) at its largest response over the healthy
            training subjects (``SmallCNN.set_evidence_floor``): ``off``; ``after_training``
            (``best.pt`` and ``last.pt``, before the logit calibration); ``every_epoch``
            (after each epoch's steps, before its validation: the floors are saved with the
            weights they were fitted to, and the next epoch trains through them). A detector
            then adds to the logit, and to the map, only what it responds beyond the healthy
            range. With the constraint alone about a third of a healthy subject's relevance
            stayed pathological, nearly all of it from detectors responding to healthy
            tissue, which no loss on the map removes (a map depends on a threshold only
            through which units are on, so its gradient there is 0). A research option, off
            in the presets: on held-out bright ellipsoids it brought the healthy share to
            0.01-0.03, but on small lesions and faint ones it cost AUROC, since it also takes
            away a detector's answer to a lesion no stronger than healthy tissue
            (docs/experiments.md, "A floor for the lesion detectors"; softened by the three
            options below, "The floor below the healthy maximum").
        evidence_floor_quantile: With ``evidence_floor``: which of the healthy responses is a
            detector's floor, 1 (the default) for the largest, below 1 that quantile, so that
            a share of healthy subjects keeps some of its response and weak lesions lose less.
        evidence_floor_leak: With ``evidence_floor``: the slope of a floored feature below its
            floor (0, the default: nothing passes). A slope keeps a gradient through a
            detector that a subject does not lift above its floor.
        evidence_floor_start_auroc: With ``evidence_floor="every_epoch"``: fit the floors only
            once an epoch's validation AUROC has reached this value (0, the default: from the
            first epoch). Before that the detectors learn unfloored, so a floor fitted to
            detectors that do not yet find the lesions cannot cut off their gradient.
        evidence_floor_subjects: With ``evidence_floor``: whose healthy responses set the
            floors, ``train`` (the default: the healthy subjects of the training split) or
            ``validation`` (those of the validation split). The network is trained to keep
            the healthy training subjects' responses low, so their floors sit below what an
            unseen healthy brain makes a detector respond, and unseen healthy subjects get
            red back; healthy subjects it never trained on set floors that carry over. The
            validation subjects then also select the epoch and calibrate the logit, so their
            healthy share is optimistic; the test split is what to read.
        loss_setting: Which losses are trained (docs/method.md section 3): ``lc_only`` (L_C),
            ``la_only`` (L_A with supervised targets), ``lc_la_supervised`` (L_C + lambda L_A,
            lesion masks as targets) or ``lc_la_unsupervised`` (L_C + lambda L_A, image labels
            only: every voxel of a healthy subject must carry healthy relevance).
            Subjects without a mask are unconstrained where a mask would be needed.
        train_attribution: Differentiable attribution(s) inside L_A (several are summed); keys
            of ``worker.ml.attribution.differentiable.ATTRIBUTION_METHODS``.
        ig_steps: Integration points of ``integrated_gradients`` in training.
        ig_method: Quadrature of ``integrated_gradients`` in training. ``riemann_middle``
            and ``gausslegendre`` use fixed points; ``riemann_stratified`` draws one uniform
            point in each of the ``ig_steps`` intervals for every image and step, so the map
            that L_A sees is exact IG in expectation and the network cannot meet the
            constraint at a few fixed alphas only.
        eg_k: Samples (reference, alpha) per image of ``expected_gradients`` in training.
        eg_zero_reference_prob: Probability that an EG reference is the zero image.
        attribution_scale: Temperature of L_A, relative to the grid: the loss sees
            ``attribution_scale * n_voxels * A`` (``n_voxels`` = voxels of ``grid``). Raw
            attributions are about (logit difference) / n_voxels per voxel (completeness), so
            ``n_voxels * A`` is O(1) on any grid. With the default 1.0, |scaled A| averages
            0.1-0.6 on a freshly initialised small_cnn (grids 16x20x16 to 48x56x48) and grows
            to a few units as the constraint is learnt: the useful range of the BCE.
        attribution_loss: ``bce`` (BCE-with-logits against the target map), ``rrr``
            (squared attribution outside the target, Ross et al. 2017) or ``mass`` (per
            subject, the share of the map's absolute mass with the wrong sign: positive where
            the target is 0, negative where it is 1; on a healthy subject, its healthy share).
            The BCE's gradient in a voxel is at most 1 however much wrong relevance the voxel
            carries; ``mass`` weighs each voxel by its relevance, as the healthy share and the
            lesion mass do. ``attribution_scale``, ``attribution_normalise`` and
            ``attribution_balance`` do not apply to it.
        attribution_balance: ``bce`` only: within each subject, the voxels with target 1
            (lesion) and those with target 0 weigh equally in L_A (each class's mean BCE,
            averaged), instead of every constrained voxel weighing the same: with a lesion
            load of 0.5 %, the plain mean gives the lesions 0.5 % of the loss, and the cheapest
            way down is to make every voxel negative.
        attribution_normalise: Divide each subject's training map by its mean |A| over the
            subject's constrained voxels before L_A; ``attribution_scale`` is then the
            temperature of a map of mean magnitude 1. L_A no longer changes with the size of
            the map, so the network cannot lower it by flattening (every map towards 0, the
            logit towards a constant: the collapse of the unnormalised presets); only moving
            relevance between voxels lowers it. On in the constrained presets.
        attribution_baseline: Reference of the path attributions, in training (IG, EG) and in
            the run's evaluation maps (IG): ``zero`` (the zero image, i.e. the mean intensity
            after z-scoring) or ``healthy``: IG starts from the mean healthy training image
            and EG draws its references among the healthy training images, so that
            "pathological relevance" means "differs from healthy subjects in the direction
            that raises the logit", whatever the lesions' contrast; sum(A) = F(x) - F(healthy)
            is then near 0 for a healthy subject and cannot be made negative for every one.
            The mean image is stored in the checkpoint (the research suite scores with it);
            an attribution job uses a healthy baseline only when asked for one
            (``AttributionConfig.baseline = "healthy_mean"``, computed from the same subjects).
            ``blur`` (Integrated Gradients only): each image's own local mean, a Gaussian
            average (``attribution_blur_sigma`` voxels) of its brain voxels
            (``worker.ml.attribution.baselines.local_mean``), so that x - x' is the image's
            local contrast; a map then says which contrasts raise the logit.
        attribution_blur_sigma: Standard deviation of that local mean, in voxels of
            ``grid``.
        baseline_logit_weight: Weight, inside L_A, of a term that holds the attribution
            baseline at the decision boundary: the BCE of the baseline's pathological logit
            F(x') against probability 1/2. By completeness sum(A) = F(x) - F(x'), so a
            network whose baseline logit runs far above every subject's makes every map
            mostly negative, and meets "healthy subjects carry no pathological relevance"
            without moving any relevance (with the normative input, the zero image reads as
            a deviation of -mean/sd everywhere, and F(0) reached 20-25 against subject
            logits of -2 to 1). With F(x') at 0, a healthy subject's map sums to a negative
            and a pathological subject's to a positive amount, each the size of its own
            logit. A second term, the BCE of the batch's eval-mode logits (those the
            attribution explains) against their labels, closes the other route to the same
            gap: with batch norm the eval-mode logits can drift away from the train-mode
            logits that L_C trains. 0 (default) turns both off; classification only.
        lambda_a: Weight of L_A over training (constant, or a linear warm-up from 0);
            unused by ``lc_only`` and ``la_only``.
        attribution_mode: Mode of the network while the training attribution is computed.
            ``eval`` (default): batch norm uses its running statistics (dropout is off), so
            each subject's map is that of the network as deployed, independent of the batch;
            L_C then needs its own train-mode forward. ``train``: batch statistics of the
            batch (of each chunk of interpolation points for IG/EG); the maps of a batch are
            then coupled, and the network can escape L_A by making the batch's summed logit
            insensitive to the input (observed on small_cnn: L_A stalled at log 2 and the
            evaluation maps were no better than without the constraint). No difference for
            networks without batch norm or dropout.
        restrict_to_brain: Constrain only voxels inside the brain, i.e. the non-zero voxels
            of the normalised image (the synthetic background is exactly 0).
        calibrate_logit: Classification: after training, the constant that minimises the
            validation BCE when added to every logit (``training.calibration_offset``) is
            added to the output bias of ``best.pt``. A constant on the logit changes no
            attribution map, but the constraint tends to push every logit down (accuracy 0.5
            at AUROC 1.0); this gives the decision its threshold back. Off: no change.
        val_attribution: After every epoch, attribution metrics on the validation split
            (Integrated Gradients, 8 Gauss-Legendre steps, eval mode): ``val_attr_auroc``,
            ``val_lesion_mass``, ``val_attr_healthy_share`` (the share of positive relevance
            on healthy subjects, which needs no lesion mask), the Dice threshold chosen
            there, and more. Test metrics
            with attributions are computed at the end of every run regardless.
        epochs: Number of epochs to train in total (a resumed run counts earlier epochs).
        batch_size: Subjects per optimisation step.
        learning_rate: Optimiser step size (of the first epoch, with ``lr_schedule``).
        lr_schedule: ``constant`` (default), or ``cosine``: the step size of epoch e (1..E)
            is ``learning_rate * (1 + cos(pi (e - 1) / E)) / 2``, from the full rate at the
            first epoch to a few percent of it at the last, so the last epochs refine the
            weights instead of moving them around. Set per epoch from the epoch number alone,
            so a resumed run continues on the same schedule.
        weight_decay: L2 penalty (decoupled for AdamW).
        optimizer: Optimiser family.
        seed: Seed of every random generator (weights, shuffling, augmentation).
        grid: Working grid (voxels) that every subject is resized to.
        intensity: Intensity normalisation: z-score over non-zero voxels, or 0.5-99.5
            percentiles mapped to [0, 1].
        brain: ``mask`` (default): each subject's brain mask (the user's, or one computed
            from the image, ``attrivue_core.brainmask``) crops the volume to the brain before the
            resize and zeroes everything outside it, so the constraint, the metrics and the
            network see the brain and not a noisy background. ``nonzero``: the former
            behaviour (no crop; "brain" = non-zero voxels, right only for data whose
            background is exactly 0).
        augment: Light random flips and affine jitter on the training split.
        early_stopping_patience: Epochs without improvement of ``early_stopping_metric``
            before training stops; ``None`` trains for all epochs.
        early_stopping_metric: Validation metric that selects ``best.pt``.
        selection_auroc_margin: With an attribution ``early_stopping_metric``: only epochs
            whose ``val_auroc`` is within this margin of the highest ``val_auroc`` seen so far
            compete on the attribution metric; an epoch below the margin can become
            ``best.pt`` only when no epoch is inside it (``worker.ml.training.selection``).
            ``None``: no margin (the attribution metric alone, above the classification
            floor).
        device: ``auto`` picks CUDA when available.
        amp: Mixed precision (``torch.autocast`` float16 with a ``GradScaler``); only ever
            used on CUDA. Where the run lands on a CPU (``device`` ``cpu``, or ``auto`` without
            CUDA) it is a no-op: the history records ``amp_active = 0`` and, if ``amp`` was set
            explicitly, training warns (``RuntimeWarning``, in the worker's log).
        grad_probe_batches: Instrumentation of ``lc_only`` runs: on the first this many
            batches of every epoch, the weakly supervised L_A (image labels only) is computed
            and back-propagated without being applied, so the gradient norm of L_A, its ratio
            to that of L_C and their cosine are known for the baseline too (an extra
            attribution and double backward on those batches only). 0 turns it off.
            Constrained settings take the gradients of L_C and lambda * L_A separately (norms,
            ratio, cosine) on their first this many L_A steps of every epoch, and on every
            step with ``grad_balance`` (which needs both); their other steps take one backward
            of the sum, the same gradient at a lower cost (no per-term instrumentation).
        grad_clip_norm: Remedy: clip the L2 norm of the total gradient (all weights together)
            to this value before the optimiser step (``torch.nn.utils.clip_grad_norm_``);
            ``None``: no clipping.
        grad_balance: Remedy (``lc_la_*`` settings): ``none``; ``fixed_ratio`` rescales the
            gradient of L_A on every step so that its norm is ``grad_balance_ratio`` times the
            norm of the gradient of L_C (times lambda(t) / lambda.value, so a warm-up still
            ramps it); ``gradnorm`` adapts two weights GradNorm-style (Chen et al., ICML 2018)
            so that the weighted gradient norms follow the relative training rates of L_C and
            L_A (exponent ``gradnorm_alpha``; see ``worker.ml.gradients``); ``project``
            removes from the gradient of L_A its component against the gradient of L_C when
            the two conflict (negative dot product; after PCGrad, Yu et al., NeurIPS 2020),
            so that, to first order, a step never raises L_C on its batch.
        grad_balance_ratio: Target ||grad of L_A|| / ||grad of L_C|| of ``fixed_ratio``.
        gradnorm_alpha: Asymmetry exponent of ``gradnorm`` (0: equal norms).
        la_every_n_steps: Remedy (``lc_la_*`` settings): compute L_A (the attribution and the
            double backward) on one step in ``n`` only; the other steps train L_C alone.
        watch_subjects: Subject ids (at most 8) whose attribution map (the evaluation
            method of the run's validation: Integrated Gradients, 8 Gauss-Legendre points, on
            the working grid) is stored after every epoch (``worker.ml.epoch_maps``).
        task: ``classification`` (the label), ``regression`` (the subject's continuous
            target, with the same networks' single output as the prediction) or
            ``segmentation`` (lesion masks; MONAI's 3D UNet ``network="unet"``, Dice +
            cross-entropy; ``worker.ml.segmentation``). With ``task="segmentation"`` and no
            network given, the network is ``unet`` and the early-stopping metric
            ``val_dice``; ``loss_setting`` does not apply.
        regression: Settings of a regression run (ignored for classification).
        seg_annotated_fraction: Segmentation only: the fraction of training subjects whose
            annotation (the lesion mask; an empty mask for a healthy subject) is used; the
            others keep only their image label (mixed supervision, docs/method.md section 6.3).
            The subset is drawn per label with ``seed``.
        seg_constraint: Segmentation only: label-only healthy subjects get the attribution
            constraint (no positive relevance anywhere for the mean foreground logit, target
            0 on every brain voxel), weighted by ``lambda_a`` and computed with
            ``train_attribution``, ``attribution_scale`` and ``attribution_loss``.
    """

    model_config = ConfigDict(extra="forbid")

    network: NetworkName = "small_cnn"
    in_channels: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Input channels: the dataset's modalities (set from the dataset when the "
        "run is created).",
    )
    pooling: Literal["max", "avg", "avgmax"] | None = Field(
        default=None,
        description="small_cnn only: global pooling of the last feature map (None: max).",
    )
    activation: Literal["leakyrelu", "relu"] | None = Field(
        default=None,
        description="small_cnn only: the blocks' activation (None: LeakyReLU, slope 0.2). "
        "With ReLU a feature below its threshold passes no gradient, so a lesion detector "
        "gives no relevance to healthy tissue it does not fire on (a candidate: on bright "
        "ellipsoids it left the constrained run's healthy share unchanged).",
    )
    evidence_floor: Literal["off", "after_training", "every_epoch"] = Field(
        default="off",
        description="small_cnn, classification: floor each lesion detector (a pooled feature "
        "with a positive head weight) at its largest response over healthy subjects "
        "(evidence_floor_subjects says whose), so that only responses beyond the healthy range "
        "add to the logit and the maps: once after training, or after every epoch (training "
        "then goes on with the floors of the previous epoch).",
    )
    evidence_floor_quantile: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="With evidence_floor: the quantile of the healthy subjects' responses "
        "that is a detector's floor (1: their largest).",
    )
    evidence_floor_leak: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="With evidence_floor: the slope of a floored feature below its floor "
        "(0: it passes nothing there).",
    )
    evidence_floor_start_auroc: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="With evidence_floor 'every_epoch': fit the floors only once an epoch's "
        "validation AUROC has reached this value (0: from the first epoch).",
    )
    evidence_floor_subjects: Literal["train", "validation"] = Field(
        default="train",
        description="With evidence_floor: whose healthy responses set the floors, the training "
        "split's healthy subjects or the validation split's (which the network never trained "
        "on, so the floors carry over to unseen healthy brains).",
    )
    normative_input: bool = Field(
        default=False,
        description="Classification: give the network, beside the image, each voxel's z-score "
        "against the healthy training subjects on the working grid (smoothed, sigma 1 voxel; "
        "computed inside the model, so maps stay on the image's channels). What lets a small "
        "network see lesions darker than white matter (docs/method.md, section 3.1).",
    )
    loss_setting: LossSetting = "lc_only"
    train_attribution: list[TrainAttributionName] = Field(
        default_factory=lambda: list[TrainAttributionName](["gradient"]),
        min_length=1,
        description="Differentiable attribution(s) inside L_A; several are summed.",
    )
    ig_steps: int = Field(
        default=8, ge=1, le=256, description="Integrated Gradients points in training."
    )
    ig_method: Literal["riemann_middle", "gausslegendre", "riemann_stratified"] = Field(
        default="riemann_middle",
        description="Integrated Gradients quadrature in training: fixed points "
        "(riemann_middle, gausslegendre) or one random point per interval, drawn afresh for "
        "every image and step (riemann_stratified: the map equals exact IG in expectation).",
    )
    eg_k: int = Field(
        default=1, ge=1, le=256, description="Expected Gradients samples per image in training."
    )
    eg_zero_reference_prob: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Probability of the zero image as EG reference."
    )
    attribution_scale: float = Field(
        default=1.0,
        gt=0.0,
        description="Temperature of L_A in units of 1/n_voxels: L_A sees scale * n_voxels * A.",
    )
    attribution_normalise: bool = Field(
        default=False,
        description=(
            "Divide each subject's training map by its mean |A| before L_A (scale-invariant "
            "L_A: attribution_scale is then the temperature of a map of mean magnitude 1)."
        ),
    )
    attribution_loss: Literal["bce", "rrr", "mass"] = Field(
        default="bce",
        description="Form of L_A: BCE against the target map, RRR, or the share of each "
        "subject's relevance mass that has the wrong sign.",
    )
    attribution_balance: bool = Field(
        default=False,
        description="L_A: lesion and non-lesion voxels weigh equally within each subject.",
    )
    attribution_baseline: Literal["zero", "healthy", "blur"] = Field(
        default="zero",
        description="Reference of IG/EG in training and evaluation: the zero image, "
        "healthy training subjects (their mean for IG, the subjects themselves for EG), or "
        "(IG only) each image's own local mean inside the brain (attribution_blur_sigma).",
    )
    attribution_blur_sigma: float = Field(
        default=4.0,
        gt=0.0,
        le=16.0,
        description="attribution_baseline 'blur': standard deviation, in voxels of the "
        "working grid, of the Gaussian local mean that serves as each image's baseline.",
    )
    baseline_logit_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="Inside L_A: weight of the BCE that holds the attribution baseline's "
        "pathological probability at 1/2, plus the BCE of the batch's eval-mode logits "
        "against their labels (0: off; classification only).",
    )
    lambda_a: LambdaSchedule = Field(
        default_factory=LambdaSchedule, description="Weight of L_A over training."
    )
    attribution_mode: Literal["eval", "train"] = Field(
        default="eval",
        description="Network mode during the training attribution (batch norm statistics).",
    )
    restrict_to_brain: bool = Field(
        default=True, description="Constrain only non-zero voxels of the normalised image."
    )
    calibrate_logit: bool = Field(
        default=True,
        description="Classification: fold the validation-chosen logit offset into the "
        "output bias of best.pt (maps unchanged).",
    )
    val_attribution: bool = Field(
        default=True, description="Attribution metrics on the validation split every epoch."
    )
    epochs: int = Field(default=3, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=1024)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="Step size over the epochs: constant, or a cosine decay from "
        "learning_rate at the first epoch towards 0 at the last.",
    )
    weight_decay: float = Field(default=0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    seed: int = Field(default=0, ge=0)
    grid: tuple[GridSize, GridSize, GridSize] = (48, 56, 48)
    intensity: Literal["zscore", "percentile"] = "zscore"
    brain: Literal["mask", "nonzero"] = Field(
        default="mask",
        description="Brain of each subject: its brain mask (crop, background set to 0), or "
        "the non-zero voxels.",
    )
    augment: bool = False
    early_stopping_patience: int | None = Field(default=None, ge=1)
    early_stopping_metric: EarlyStoppingMetric = "val_auroc"
    selection_auroc_margin: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="With an attribution early-stopping metric: only epochs whose val_auroc is "
        "within this margin of the best val_auroc so far compete on it.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    watch_subjects: list[int] = Field(
        default_factory=list,
        max_length=8,
        description="Subject ids whose attribution map is stored after every epoch.",
    )
    task: TaskName = "classification"
    regression: RegressionSettings = Field(default_factory=RegressionSettings)
    # Instrumentation and remedies of docs/method.md section 6.1 (worker.ml.gradients).
    grad_probe_batches: int = Field(
        default=1, ge=0, le=1024, description="lc_only: batches per epoch probing L_A's gradient."
    )
    grad_clip_norm: float | None = Field(
        default=None, gt=0.0, description="Clip the total gradient norm to this value."
    )
    grad_balance: GradBalance = Field(
        default="none", description="Balancing of the gradients of L_C and lambda * L_A."
    )
    grad_balance_ratio: float = Field(
        default=1.0, gt=0.0, le=1000.0, description="fixed_ratio: ||g_A|| / ||g_C|| target."
    )
    gradnorm_alpha: float = Field(
        default=1.5, ge=0.0, le=10.0, description="gradnorm: asymmetry exponent alpha."
    )
    la_every_n_steps: int = Field(
        default=1, ge=1, le=1000, description="Compute L_A on one step in n only."
    )

    @model_validator(mode="after")
    def _remedies_apply_to_setting(self) -> RunConfig:
        weighted = self.loss_setting in ("lc_la_supervised", "lc_la_unsupervised")
        if self.grad_balance != "none" and not weighted:
            raise ValueError(
                f"grad_balance {self.grad_balance!r} balances L_C against L_A and needs "
                f"lc_la_supervised or lc_la_unsupervised, not {self.loss_setting!r}"
            )
        if self.la_every_n_steps > 1 and not weighted:
            raise ValueError(
                f"la_every_n_steps > 1 skips L_A on some steps and needs lc_la_supervised or "
                f"lc_la_unsupervised, not {self.loss_setting!r}"
            )
        if self.grad_balance == "fixed_ratio" and self.lambda_a.value == 0.0:
            raise ValueError("grad_balance 'fixed_ratio' needs lambda_a.value > 0")
        return self

    @model_validator(mode="after")
    def _margin_needs_attribution_metric(self) -> RunConfig:
        if self.selection_auroc_margin is None:
            return self
        if self.early_stopping_metric not in ATTRIBUTION_EARLY_STOPPING:
            raise ValueError(
                "selection_auroc_margin ranks epochs by an attribution metric inside an AUROC "
                f"margin and needs early_stopping_metric in {sorted(ATTRIBUTION_EARLY_STOPPING)}, "
                f"not {self.early_stopping_metric!r}"
            )
        if not self.val_attribution:
            raise ValueError(
                "selection_auroc_margin needs val_attribution (the attribution metric of every "
                "epoch)"
            )
        return self

    @model_validator(mode="after")
    def _regression_fits(self) -> RunConfig:
        if self.task == "regression":
            _check_regression(self)
        return self

    seg_annotated_fraction: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Segmentation: fraction of training subjects whose annotation is used.",
    )
    seg_constraint: bool = Field(
        default=False,
        description="Segmentation: label-only healthy subjects get the attribution constraint.",
    )

    @model_validator(mode="before")
    @classmethod
    def _segmentation_defaults(cls, data: object) -> object:
        """A segmentation run names no network: it is the UNet, selected on validation Dice."""
        if isinstance(data, dict) and data.get("task") == "segmentation":
            data = dict(data)
            data.setdefault("network", "unet")
            data.setdefault("early_stopping_metric", "val_dice")
            # A segmentation's predicted masks and region maps are inverted to the native
            # grid voxel for voxel; it keeps the whole field of view (no brain crop).
            data.setdefault("brain", "nonzero")
        return data

    @model_validator(mode="after")
    def _task_fits_network(self) -> RunConfig:
        segmenting = self.task == "segmentation"
        if segmenting != (self.network in SEGMENTATION_NETWORKS):
            wanted = "is" if segmenting else "is not"
            raise ValueError(
                f"task {self.task!r} needs a network that {wanted} one of "
                f"{sorted(SEGMENTATION_NETWORKS)}, got {self.network!r}"
            )
        if segmenting and self.watch_subjects:
            raise ValueError("watch_subjects (maps per epoch) is not implemented for segmentation")
        if segmenting:
            # The UNet halves the grid twice: every side must be a multiple of 4.
            odd = [n for n in self.grid if n % 4]
            if odd:
                raise ValueError(f"segmentation needs grid sides divisible by 4, got {self.grid}")
        elif self.seg_annotated_fraction != 1.0 or self.seg_constraint:
            raise ValueError("seg_annotated_fraction and seg_constraint apply to segmentation only")
        return self

    @property
    def mixed_supervision(self) -> bool:
        """Whether some training subjects are used with their image label only."""
        return self.task == "segmentation" and (
            self.seg_annotated_fraction < 1.0 or self.seg_constraint
        )

    @model_validator(mode="after")
    def _normative_is_classification(self) -> RunConfig:
        if self.normative_input and self.task != "classification":
            raise ValueError(
                f"normative_input applies to the classification task only, not {self.task!r}"
            )
        return self

    @model_validator(mode="after")
    def _blur_baseline_is_integrated_gradients(self) -> RunConfig:
        if self.attribution_baseline == "blur" and "expected_gradients" in self.train_attribution:
            raise ValueError(
                "attribution_baseline 'blur' is a baseline of integrated_gradients; "
                "expected_gradients draws its own references (use 'zero' or 'healthy')"
            )
        return self

    @model_validator(mode="after")
    def _baseline_logit_is_classification(self) -> RunConfig:
        if self.baseline_logit_weight > 0.0 and self.task != "classification":
            raise ValueError(
                f"baseline_logit_weight applies to the classification task only, not {self.task!r}"
            )
        return self

    @model_validator(mode="after")
    def _pooling_is_small_cnn(self) -> RunConfig:
        if self.pooling is not None and self.network != "small_cnn":
            raise ValueError(f"pooling applies to small_cnn only, not {self.network!r}")
        if self.activation is not None and self.network != "small_cnn":
            raise ValueError(f"activation applies to small_cnn only, not {self.network!r}")
        if self.evidence_floor != "off" and self.network != "small_cnn":
            raise ValueError(f"evidence_floor applies to small_cnn only, not {self.network!r}")
        if self.evidence_floor != "off" and self.task != "classification":
            raise ValueError(
                f"evidence_floor applies to the classification task only, not {self.task!r}"
            )
        if self.evidence_floor == "off" and (
            self.evidence_floor_quantile != 1.0
            or self.evidence_floor_leak != 0.0
            or self.evidence_floor_subjects != "train"
        ):
            raise ValueError(
                "evidence_floor_quantile, evidence_floor_leak and evidence_floor_subjects "
                "apply only with an evidence_floor ('after_training' or 'every_epoch')"
            )
        if self.evidence_floor_start_auroc > 0.0 and self.evidence_floor != "every_epoch":
            raise ValueError(
                "evidence_floor_start_auroc applies only with evidence_floor 'every_epoch'"
            )
        return self

    @model_validator(mode="after")
    def _distinct_train_attributions(self) -> RunConfig:
        repeated = sorted(
            {m for m in self.train_attribution if self.train_attribution.count(m) > 1}
        )
        if repeated:
            raise ValueError(f"train_attribution names {repeated} more than once")
        return self


def _check_regression(config: RunConfig) -> None:
    """Refuse regression settings that would silently do something else than asked."""
    setting, chosen = config.loss_setting, config.regression.constraints
    if setting == "la_only":
        raise ValueError(
            "loss_setting 'la_only' is not defined for regression (nothing would fit the "
            "targets); use 'lc_la_supervised' or 'lc_la_unsupervised'"
        )
    if config.attribution_loss != "bce":
        raise ValueError(
            "attribution_loss applies to classification; regression uses regression.penalty"
        )
    if chosen is None:
        return
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"regression.constraints repeats a name: {chosen}")
    if setting == "lc_only" and chosen:
        raise ValueError("regression.constraints given, but loss_setting 'lc_only' trains no L_A")
    if setting != "lc_only" and not chosen:
        raise ValueError(f"loss_setting {setting!r} needs at least one regression constraint")
    if setting == "lc_la_unsupervised" and "outside_lesions" in chosen:
        raise ValueError(
            "'outside_lesions' needs lesion masks; 'lc_la_unsupervised' uses the targets only "
            "(use 'lc_la_supervised')"
        )


_BASELINE_FIELDS = frozenset({"baseline", "blur_sigma"})
# The most interpolation points per map that IG to a requested accuracy may use.
MAX_IG_POINTS = 513
DEFAULT_IG_POINTS = 129
# The fields each method reads; the others must keep their defaults.
METHOD_FIELDS: dict[str, frozenset[str]] = {
    "integrated_gradients": _BASELINE_FIELDS
    | {"steps", "riemann_method", "internal_batch_size", "target_delta", "max_points"},
    "gradient_shap": frozenset(
        {"n_samples", "stdevs", "n_references", "references", "internal_batch_size", "seed"}
    ),
    "saliency": frozenset(),
    "input_x_gradient": frozenset(),
    "deeplift": _BASELINE_FIELDS,
    "guided_backprop": frozenset(),
    "occlusion": _BASELINE_FIELDS | {"window", "stride", "internal_batch_size"},
    "smoothgrad": frozenset({"n_samples", "stdevs", "internal_batch_size", "seed"}),
    "grad_cam": frozenset({"relu_attributions"}),
}


class AttributionConfig(BaseModel):
    """Settings of one attribution computation (evaluation, through Captum).

    Each method reads only some of the fields (``METHOD_FIELDS``); giving another field a
    value other than its default is refused, so a setting never silently does nothing.

    Attributes:
        method: Attribution method (see ``worker.ml.attribution.captum_eval``).
        steps: Integration points along the path (integrated_gradients).
        baseline: Reference image x' (integrated_gradients, deeplift; occlusion fills the
            window with it): ``zero``, the zero image (the mean intensity after z-scoring);
            ``blur``, the input's local mean: a Gaussian average of its brain voxels
            (``blur_sigma``; the baseline of ``RunConfig.attribution_baseline="blur"`` too);
            ``healthy_mean``, the voxel-wise
            mean of the run's healthy training subjects, preprocessed as in training
            (computed once per run by the worker and cached beside its checkpoints).
        blur_sigma: Standard deviation (working-grid voxels) of the local-mean baseline.
        internal_batch_size: Images per forward/backward pass, which bounds memory on
            whole-brain volumes: IG's interpolation points, GradientShap's and SmoothGrad's
            samples, Occlusion's perturbed images (all images of a batch counted together).
        riemann_method: Quadrature rule along the path (Captum's ``method`` argument).
        target_delta: integrated_gradients to a requested accuracy: the relative completeness
            delta to reach, ``|sum(A) - (F(x) - F(x'))| / |F(x) - F(x')|`` (0.01: 1 %). The
            worker then chooses the points itself (``worker.ml.attribution.adaptive``: a
            trapezoid rule refined by bisection, every evaluated point reused) instead of
            ``steps`` and ``riemann_method``, which must keep their defaults; the map records
            the points used and the delta reached. ``None``: ``steps`` fixed points.
        max_points: With ``target_delta``: the most points per map (at most
            ``MAX_IG_POINTS``); a map that reaches it before the target records that it
            did not reach it.
        n_samples: Random draws per image: (reference, alpha) pairs of gradient_shap, noisy
            copies of smoothgrad.
        stdevs: Standard deviation of Gaussian noise, in the preprocessed image's intensity
            units (z-score: the brain's standard deviation; percentile: the [0, 1] range).
            smoothgrad adds it to the input; gradient_shap, when no reference images are
            given, draws its references as the zero image plus this noise.
        n_references: References gradient_shap draws from: a random subset of this size of
            the reference images given, or this many synthetic zero-plus-noise images.
        references: Where gradient_shap's references come from: ``noise``, the zero image
            plus Gaussian noise of ``stdevs``; ``healthy``, the run's healthy training
            subjects (a random subset of ``n_references`` of them), so that the map is
            Expected Gradients against healthy anatomy.
        window: Occlusion window, voxels of the working grid per axis.
        stride: Occlusion step between windows, voxels per axis, at most the window so that
            every voxel is covered; ``None``: half the window.
        relu_attributions: grad_cam only: keep only the positive part of the map. Off by
            default, because the negative part is the healthy relevance.
        seed: Seed of the random draws of gradient_shap and smoothgrad (the global random
            generators are left as they were).
    """

    model_config = ConfigDict(extra="forbid")

    method: AttributionMethod = "integrated_gradients"
    steps: int = Field(default=32, ge=1, le=1000)
    baseline: BaselineName = "zero"
    blur_sigma: float = Field(default=4.0, gt=0.0)
    internal_batch_size: int = Field(default=8, ge=1, le=4096)
    riemann_method: RiemannMethod = "gausslegendre"
    target_delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_points: int = Field(default=DEFAULT_IG_POINTS, ge=3, le=MAX_IG_POINTS)
    n_samples: int = Field(default=16, ge=1, le=1024)
    stdevs: float = Field(default=0.15, ge=0.0)
    n_references: int = Field(default=8, ge=1, le=1024)
    references: ReferenceSource = "noise"
    window: tuple[WindowSize, WindowSize, WindowSize] = (8, 8, 8)
    stride: tuple[WindowSize, WindowSize, WindowSize] | None = None
    relu_attributions: bool = False
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fields_apply_to_method(self) -> AttributionConfig:
        used = METHOD_FIELDS[self.method]
        for name in sorted(self.model_fields_set - used - {"method"}):
            if getattr(self, name) != type(self).model_fields[name].default:
                users = sorted(m for m, fields in METHOD_FIELDS.items() if name in fields)
                raise ValueError(f"{name} does not apply to {self.method} (used by: {users})")
        if (
            self.references == "healthy"
            and "stdevs" in self.model_fields_set
            and self.stdevs != type(self).model_fields["stdevs"].default
        ):
            raise ValueError(
                "stdevs does not apply to gradient_shap with references 'healthy' (it is the "
                "noise of the synthetic references)"
            )
        if self.target_delta is not None:
            fixed = [n for n in ("steps", "riemann_method") if n in self.model_fields_set]
            fixed = [n for n in fixed if getattr(self, n) != type(self).model_fields[n].default]
            if fixed:
                raise ValueError(
                    f"target_delta chooses the points itself: give it or {' and '.join(fixed)}, "
                    "not both"
                )
        elif "max_points" in self.model_fields_set and self.max_points != DEFAULT_IG_POINTS:
            raise ValueError("max_points caps the points of target_delta; give target_delta")
        if self.stride is not None and any(
            s > w for s, w in zip(self.stride, self.window, strict=True)
        ):
            raise ValueError(f"stride {self.stride} exceeds window {self.window}")
        return self


class RegionSpec(BaseModel):
    """Which region of a segmentation output to explain (docs/method.md section 1).

    The attribution explains the sum of the foreground logits over the region. Every kind is
    resolved by the attribution job on the subject's native grid, where the viewer shows it:

    - ``whole``: the whole predicted mask (foreground logit > 0).
    - ``component``: one connected component of the predicted mask, numbered as in the
      prediction volume that a ``whole`` map stores (``/attributions/{id}/prediction.nii.gz``).
    - ``point``: the predicted component containing a point given in scanner millimetres
      (what a click in the viewer gives).
    - ``box``: every voxel whose centre lies in an axis-aligned box of scanner millimetres.

    Attributes:
        kind: One of the four kinds.
        component: Component number (1-based), for ``component``.
        mm: The point, for ``point``.
        mm_min: Lower corner of the box, for ``box``.
        mm_max: Upper corner of the box, for ``box``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["whole", "component", "point", "box"] = "whole"
    component: int | None = Field(default=None, ge=1)
    mm: tuple[float, float, float] | None = None
    mm_min: tuple[float, float, float] | None = None
    mm_max: tuple[float, float, float] | None = None

    @model_validator(mode="after")
    def _fields_of_kind(self) -> RegionSpec:
        needed = {
            "whole": set(),
            "component": {"component"},
            "point": {"mm"},
            "box": {"mm_min", "mm_max"},
        }[self.kind]
        given = {n for n in ("component", "mm", "mm_min", "mm_max") if getattr(self, n) is not None}
        if given != needed:
            raise ValueError(
                f"region kind {self.kind!r} takes {sorted(needed) or 'no other field'}, "
                f"got {sorted(given) or 'none'}"
            )
        if self.kind == "box":
            assert self.mm_min is not None and self.mm_max is not None
            if any(lo > hi for lo, hi in zip(self.mm_min, self.mm_max, strict=True)):
                raise ValueError(f"box mm_min {self.mm_min} exceeds mm_max {self.mm_max}")
        return self

// The choices the launch form offers, typed against the schema generated from the backend's
// OpenAPI document (api/schema.d.ts: RunConfig, LambdaSchedule, RegressionSettings and the
// attribution method, as attrivue_core/configs.py defines them). Each list must name every
// value of its schema enum and nothing else: TypeScript refuses a missing or unknown choice,
// and choices.test.ts compares each list with frontend/openapi.json's enum at run time.
import type { components } from "../api/schema";

type Schemas = components["schemas"];
type RunConfig = Schemas["RunConfig"];
type Item<T> = T extends readonly (infer E)[] ? E : T;

/** The values a RunConfig field accepts (for a list field, those of its items). */
export type RunConfigChoice<K extends keyof RunConfig> = Item<NonNullable<RunConfig[K]>>;

export type NetworkName = RunConfigChoice<"network">;
export type LossSetting = RunConfigChoice<"loss_setting">;
export type TrainAttributionName = RunConfigChoice<"train_attribution">;
export type EarlyStoppingMetric = RunConfigChoice<"early_stopping_metric">;
export type AttributionLoss = RunConfigChoice<"attribution_loss">;
export type TaskName = RunConfigChoice<"task">;
export type GradBalance = RunConfigChoice<"grad_balance">;
export type DeviceName = RunConfigChoice<"device">;
export type LambdaKind = NonNullable<Schemas["LambdaSchedule"]["kind"]>;
export type RegressionLoss = NonNullable<Schemas["RegressionSettings"]["loss"]>;
export type RegressionPenalty = NonNullable<Schemas["RegressionSettings"]["penalty"]>;
export type RegressionConstraint = Item<NonNullable<Schemas["RegressionSettings"]["constraints"]>>;
/** The evaluation methods of a map (AttributionCreate.method). */
export type AttributionMethodName = NonNullable<Schemas["AttributionCreate"]["method"]>;

/** `U`'s values not in the list `L`. */
type Missing<U, L extends readonly unknown[]> = Exclude<U, L[number]>;

/**
 * Every value of the union `U`, in display order: a value not in `U` or a missing one does
 * not compile, e.g. `every<DeviceName>()(["auto", "cpu", "cuda"])`.
 */
function every<U extends string>() {
  return <const L extends readonly U[]>(list: L & ([Missing<U, L>] extends [never] ? unknown : never)): L =>
    list;
}

/** Every value of `U` with its display fields, in the order of `entries` (one key per value). */
function labelled<U extends string, T extends object>(entries: Record<U, T>): ({ value: U } & T)[] {
  return (Object.keys(entries) as U[]).map((value) => ({ value, ...entries[value] }));
}

/** RunConfig.network; the segmentation task's network is not offered (the task selects it). */
export const NETWORK_NAMES = every<NetworkName>()(["small_cnn", "patchgan", "densenet121", "resnet18", "resnet10", "unet"]);
export const SEGMENTATION_NETWORKS = ["unet"] as const satisfies readonly NetworkName[];
export const CLASSIFICATION_NETWORKS = NETWORK_NAMES.filter(
  (n): n is Exclude<NetworkName, (typeof SEGMENTATION_NETWORKS)[number]> =>
    !(SEGMENTATION_NETWORKS as readonly string[]).includes(n),
);

export const LOSS_SETTING_CHOICES = labelled<LossSetting, { label: string; help: string }>({
  lc_only: { label: "L_C only", help: "Classification loss only: the unconstrained baseline." },
  la_only: { label: "L_A only", help: "Attribution loss only, with the lesion masks as targets." },
  lc_la_supervised: {
    label: "L_C + λ L_A, supervised",
    help: "Classifier plus attribution constraint; lesion masks say where pathological relevance belongs.",
  },
  lc_la_unsupervised: {
    label: "L_C + λ L_A, unsupervised",
    help: "Classifier plus constraint from image labels only: healthy subjects must carry healthy relevance everywhere.",
  },
});

export const TRAIN_ATTRIBUTION_CHOICES = labelled<TrainAttributionName, { label: string }>({
  gradient: { label: "Gradient" },
  gradient_x_input: { label: "Gradient × input" },
  integrated_gradients: { label: "Integrated Gradients" },
  expected_gradients: { label: "Expected Gradients" },
});

/** RunConfig.early_stopping_metric: those of a segmentation run, and the others. */
export const EARLY_STOPPING_METRIC_NAMES = every<EarlyStoppingMetric>()([
  "val_auroc",
  "val_loss",
  "val_accuracy",
  "val_attr_auroc",
  "val_lesion_mass",
  "val_attr_dice",
  "val_attr_healthy_share",
  "val_dice",
  "val_mae",
]);
export const SEGMENTATION_EARLY_STOPPING_METRICS = ["val_dice", "val_loss"] as const satisfies readonly EarlyStoppingMetric[];
/** A classification or regression run's metrics: all but the segmentation-only val_dice. */
export const CLASSIFICATION_EARLY_STOPPING_METRICS = EARLY_STOPPING_METRIC_NAMES.filter(
  (m): m is Exclude<EarlyStoppingMetric, "val_dice"> => m !== "val_dice",
);

export const LAMBDA_KIND_NAMES = every<LambdaKind>()(["constant", "linear_warmup"]);
export const ATTRIBUTION_LOSS_NAMES = every<AttributionLoss>()(["bce", "rrr", "mass"]);

export const GRAD_BALANCE_CHOICES = labelled<GradBalance, { label: string }>({
  none: { label: "none (sum of the two gradients)" },
  fixed_ratio: { label: "fixed ratio ‖g_A‖ / ‖g_C‖" },
  gradnorm: { label: "GradNorm-style adaptive weights" },
  project: { label: "project g_A off g_C where they conflict (PCGrad)" },
});

export const DEVICE_NAMES = every<DeviceName>()(["auto", "cpu", "cuda"]);

export const TASK_CHOICES = labelled<TaskName, { label: string; help: string }>({
  classification: { label: "Classification", help: "Predict the label (healthy or pathological)." },
  regression: {
    label: "Regression",
    help: "Predict each subject's continuous target (e.g. a disability score); every training subject needs one.",
  },
  segmentation: {
    label: "Segmentation",
    help: "Learn the lesion masks with MONAI's 3D UNet (Dice + cross-entropy); the options below set up mixed supervision.",
  },
});

export const REGRESSION_LOSS_CHOICES = labelled<RegressionLoss, { label: string }>({
  l1: { label: "L1 (mean absolute error)" },
  mse: { label: "MSE (mean squared error)" },
});

export const REGRESSION_CONSTRAINT_CHOICES = labelled<RegressionConstraint, { label: string; help: string; needsMasks: boolean }>({
  outside_lesions: {
    label: "Outside lesions",
    help: "No voxel outside the lesion mask may raise the prediction (needs masks).",
    needsMasks: true,
  },
  zero_target: {
    label: "Zero target",
    help: "Subjects whose target is 0 carry no positive relevance anywhere.",
    needsMasks: false,
  },
  mass_scaling: {
    label: "Mass scales with target",
    help: "Each subject's positive relevance mass proportional to its target (targets only).",
    needsMasks: false,
  },
});

export const REGRESSION_PENALTY_CHOICES = labelled<RegressionPenalty, { label: string }>({
  softplus: { label: "softplus (BCE against 0)" },
  relu_squared: { label: "ReLU² (only positive relevance costs)" },
});

/** The attribution methods of maps, by display name. */
export const ATTRIBUTION_METHOD_CHOICES = labelled<AttributionMethodName, { label: string }>({
  integrated_gradients: { label: "Integrated gradients" },
  gradient_shap: { label: "Gradient SHAP" },
  saliency: { label: "Saliency" },
  input_x_gradient: { label: "Input × gradient" },
  deeplift: { label: "DeepLIFT" },
  guided_backprop: { label: "Guided backpropagation" },
  occlusion: { label: "Occlusion" },
  smoothgrad: { label: "SmoothGrad" },
  grad_cam: { label: "Grad-CAM" },
});

/**
 * Each list above that names a whole schema enum, by the schema path of its enum ("Model.field";
 * choices.test.ts reads the enum there in openapi.json).
 */
export const SCHEMA_ENUMS: Record<string, readonly string[]> = {
  "RunConfig.network": NETWORK_NAMES,
  "RunConfig.loss_setting": LOSS_SETTING_CHOICES.map((c) => c.value),
  "RunConfig.train_attribution": TRAIN_ATTRIBUTION_CHOICES.map((c) => c.value),
  "RunConfig.early_stopping_metric": EARLY_STOPPING_METRIC_NAMES,
  "RunConfig.attribution_loss": ATTRIBUTION_LOSS_NAMES,
  "RunConfig.grad_balance": GRAD_BALANCE_CHOICES.map((c) => c.value),
  "RunConfig.device": DEVICE_NAMES,
  "RunConfig.task": TASK_CHOICES.map((c) => c.value),
  "LambdaSchedule.kind": LAMBDA_KIND_NAMES,
  "RegressionSettings.loss": REGRESSION_LOSS_CHOICES.map((c) => c.value),
  "RegressionSettings.constraints": REGRESSION_CONSTRAINT_CHOICES.map((c) => c.value),
  "RegressionSettings.penalty": REGRESSION_PENALTY_CHOICES.map((c) => c.value),
  "AttributionCreate.method": ATTRIBUTION_METHOD_CHOICES.map((c) => c.value),
};

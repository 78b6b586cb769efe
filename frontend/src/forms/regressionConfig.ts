// The regression part of the launch form (RunConfig.task and RunConfig.regression in
// attrivue_core/configs.py): its choices, and pure validation into the config's fields.
import type { FieldErrors } from "./validation";

export const TASKS = [
  { value: "classification", label: "Classification", help: "Predict the label (healthy or pathological)." },
  {
    value: "regression",
    label: "Regression",
    help: "Predict each subject's continuous target (e.g. a disability score); every training subject needs one.",
  },
  {
    value: "segmentation",
    label: "Segmentation",
    help: "Learn the lesion masks with MONAI's 3D UNet (Dice + cross-entropy); the options below set up mixed supervision.",
  },
] as const;

export const REGRESSION_LOSSES = [
  { value: "l1", label: "L1 (mean absolute error)" },
  { value: "mse", label: "MSE (mean squared error)" },
] as const;

export const REGRESSION_CONSTRAINTS = [
  {
    value: "outside_lesions",
    label: "Outside lesions",
    help: "No voxel outside the lesion mask may raise the prediction (needs masks).",
    needsMasks: true,
  },
  {
    value: "zero_target",
    label: "Zero target",
    help: "Subjects whose target is 0 carry no positive relevance anywhere.",
    needsMasks: false,
  },
  {
    value: "mass_scaling",
    label: "Mass scales with target",
    help: "Each subject's positive relevance mass proportional to its target (targets only).",
    needsMasks: false,
  },
] as const;

export const REGRESSION_PENALTIES = [
  { value: "softplus", label: "softplus (BCE against 0)" },
  { value: "relu_squared", label: "ReLU² (only positive relevance costs)" },
] as const;

export interface RegressionFormValues {
  task: string;
  lossSetting: string;
  regressionLoss: string;
  regressionConstraints: string[];
  regressionPenalty: string;
}

export type RegressionField = "task" | "lossSetting" | "regressionLoss" | "regressionConstraints" | "regressionPenalty";

/** The constraints a loss setting trains by default (worker.ml.regression.constraints_for). */
export function defaultConstraints(lossSetting: string): string[] {
  if (lossSetting === "lc_la_supervised") return ["outside_lesions", "zero_target"];
  if (lossSetting === "lc_la_unsupervised") return ["zero_target"];
  return [];
}

/** The config fields of the task (nothing for classification, so its config is unchanged). */
export function regressionConfig(
  values: RegressionFormValues,
  errors: FieldErrors<RegressionField>,
): Record<string, unknown> {
  // Segmentation's own fields are built by runConfig.ts.
  if (values.task === "classification" || values.task === "segmentation") return {};
  if (values.task !== "regression") {
    errors.task = "Choose classification, regression or segmentation.";
    return {};
  }
  if (values.lossSetting === "la_only") {
    errors.lossSetting = "L_A only is not defined for regression: nothing would fit the targets.";
  }
  if (!REGRESSION_LOSSES.some((l) => l.value === values.regressionLoss)) {
    errors.regressionLoss = "Choose L1 or MSE.";
  }
  const regression: Record<string, unknown> = { loss: values.regressionLoss };
  if (values.lossSetting !== "lc_only") {
    const chosen = REGRESSION_CONSTRAINTS.filter((c) => values.regressionConstraints.includes(c.value));
    if (chosen.length === 0) errors.regressionConstraints = "Choose at least one constraint.";
    else if (values.lossSetting === "lc_la_unsupervised" && chosen.some((c) => c.needsMasks)) {
      errors.regressionConstraints = "Outside lesions needs lesion masks: use the supervised setting.";
    }
    regression.constraints = chosen.map((c) => c.value);
    if (!REGRESSION_PENALTIES.some((p) => p.value === values.regressionPenalty)) {
      errors.regressionPenalty = "Choose a penalty.";
    }
    regression.penalty = values.regressionPenalty;
  }
  return { task: "regression", regression };
}

// The regression part of the launch form (RunConfig.task and RunConfig.regression in
// attrivue_core/configs.py): its choices, and pure validation into the config's fields.
import {
  REGRESSION_CONSTRAINT_CHOICES,
  REGRESSION_LOSS_CHOICES,
  REGRESSION_PENALTY_CHOICES,
  TASK_CHOICES,
} from "./choices";
import type { FieldErrors } from "./validation";

// The choices, each checked against the schema's enum (choices.ts).
export const TASKS = TASK_CHOICES;
export const REGRESSION_LOSSES = REGRESSION_LOSS_CHOICES;
export const REGRESSION_CONSTRAINTS = REGRESSION_CONSTRAINT_CHOICES;
export const REGRESSION_PENALTIES = REGRESSION_PENALTY_CHOICES;

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

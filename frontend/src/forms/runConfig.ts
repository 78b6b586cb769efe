// The launch form of a training run: its values (strings, as the inputs hold them), the choices
// attrivue_core/configs.py RunConfig allows, pure validation into a RunCreate body, and the mapping
// of a server 422 back onto the form's fields.
import type { ValidationIssue } from "../api/http";
import type { RunCreate } from "../api/types";
import {
  ATTRIBUTION_LOSS_NAMES,
  CLASSIFICATION_EARLY_STOPPING_METRICS,
  CLASSIFICATION_NETWORKS,
  type EarlyStoppingMetric,
  LAMBDA_KIND_NAMES,
  LOSS_SETTING_CHOICES,
  SEGMENTATION_EARLY_STOPPING_METRICS,
  TRAIN_ATTRIBUTION_CHOICES,
} from "./choices";
import { REMEDY_CONFIG_FIELDS, REMEDY_DEFAULTS, type RemedyFormValues, validateRemedies } from "./remedies";
import { regressionConfig } from "./regressionConfig";
import type { FieldErrors, Validation } from "./validation";

// The choices, each checked against the schema's enum (choices.ts).
export const NETWORKS = CLASSIFICATION_NETWORKS;

/** Early-stopping metrics of a segmentation run. */
export const SEGMENTATION_EARLY_STOPPING = SEGMENTATION_EARLY_STOPPING_METRICS;

export const LOSS_SETTINGS = LOSS_SETTING_CHOICES;
export type LossSettingValue = (typeof LOSS_SETTINGS)[number]["value"];

export const TRAIN_ATTRIBUTIONS = TRAIN_ATTRIBUTION_CHOICES;
export type TrainAttribution = (typeof TRAIN_ATTRIBUTIONS)[number]["value"];

export const EARLY_STOPPING_METRICS = CLASSIFICATION_EARLY_STOPPING_METRICS;

export function isSegmentation(values: Pick<LaunchFormValues, "task">): boolean {
  return values.task === "segmentation";
}

/** Whether the form trains an attribution loss: L_A of a classifier, or the segmentation constraint. */
export function trainsAttribution(values: Pick<LaunchFormValues, "task" | "lossSetting" | "segConstraint">): boolean {
  return isSegmentation(values) ? values.segConstraint : usesAttributionLoss(values.lossSetting);
}

/** Whether lambda weighs the attribution loss. */
export function weighsLambda(values: Pick<LaunchFormValues, "task" | "lossSetting" | "segConstraint">): boolean {
  return isSegmentation(values) ? values.segConstraint : usesLambda(values.lossSetting);
}

export const LAMBDA_KINDS = LAMBDA_KIND_NAMES;
export const ATTRIBUTION_LOSSES = ATTRIBUTION_LOSS_NAMES;
/** What each form of L_A is, as the launch form lists it. */
export const ATTRIBUTION_LOSS_LABELS: Record<(typeof ATTRIBUTION_LOSS_NAMES)[number], string> = {
  bce: "BCE against the target map",
  rrr: "RRR (squared attribution outside the target)",
  mass: "share of each subject's relevance mass with the wrong sign",
};

/** The settings that train L_A (and so read the attribution and lambda fields). */
export function usesAttributionLoss(loss: string): boolean {
  return loss !== "lc_only";
}

/** The settings that weigh L_A against L_C with lambda. */
export function usesLambda(loss: string): boolean {
  return loss === "lc_la_supervised" || loss === "lc_la_unsupervised";
}

export interface LaunchFormValues extends RemedyFormValues {
  datasetId: string;
  name: string;
  /** The chosen preset's name (GET /presets), "" for none; sent as RunCreate.preset. */
  preset: string;
  network: string;
  lossSetting: string;
  trainAttribution: string[];
  igSteps: string;
  egK: string;
  attributionScale: string;
  attributionLoss: string;
  lambdaKind: string;
  lambdaValue: string;
  warmupEpochs: string;
  epochs: string;
  learningRate: string;
  batchSize: string;
  seed: string;
  augment: boolean;
  /** Classification: the normative input channel (z-score against the healthy training subjects). */
  normativeInput: boolean;
  earlyStoppingMetric: string;
  // Regression (forms/regressionConfig.ts).
  task: string;
  regressionLoss: string;
  regressionConstraints: string[];
  regressionPenalty: string;
  /** Segmentation: fraction of training subjects whose mask is used, in (0, 1]. */
  segAnnotatedFraction: string;
  /** Segmentation: label-only healthy subjects get the attribution constraint. */
  segConstraint: boolean;
}

export type LaunchField = keyof LaunchFormValues;

export const LAUNCH_DEFAULTS: LaunchFormValues = {
  datasetId: "",
  name: "",
  preset: "",
  network: "small_cnn",
  lossSetting: "lc_only",
  trainAttribution: ["gradient"],
  igSteps: "8",
  egK: "1",
  attributionScale: "1",
  attributionLoss: "bce",
  lambdaKind: "constant",
  lambdaValue: "1",
  warmupEpochs: "0",
  epochs: "3",
  learningRate: "0.001",
  batchSize: "4",
  seed: "0",
  augment: false,
  normativeInput: false,
  earlyStoppingMetric: "val_auroc",
  ...REMEDY_DEFAULTS,
  task: "classification",
  segAnnotatedFraction: "1",
  segConstraint: false,
  regressionLoss: "l1",
  regressionConstraints: ["outside_lesions", "zero_target"],
  regressionPenalty: "softplus",
};

/** The bounds RunConfig declares (attrivue_core/configs.py). */
export const LAUNCH_LIMITS = {
  epochs: [1, 1000],
  batchSize: [1, 1024],
  igSteps: [1, 256],
  egK: [1, 256],
  seed: [0, 2 ** 31 - 1],
  nameLength: 200,
} as const;

/** A whole number in [min, max], or the message. */
export function parseWhole(raw: string, label: string, [min, max]: readonly [number, number]): number | string {
  const text = raw.trim();
  if (text === "") return `${label} is required.`;
  if (!/^[+-]?\d+$/.test(text)) return `${label} must be a whole number.`;
  const value = Number(text);
  if (value < min || value > max) return `${label} must be between ${min} and ${max}.`;
  return value;
}

/** A finite number, greater than 0 (`positive`) or at least 0; or the message. */
export function parseReal(raw: string, label: string, positive: boolean): number | string {
  const text = raw.trim();
  if (text === "") return `${label} is required.`;
  const value = Number(text);
  if (!Number.isFinite(value)) return `${label} must be a number.`;
  if (positive ? value <= 0 : value < 0) return `${label} must be ${positive ? "greater than 0" : "at least 0"}.`;
  return value;
}

function oneOf(value: string, allowed: readonly string[], message: string): string | null {
  return allowed.includes(value) ? null : message;
}

export function validateLaunchForm(values: LaunchFormValues): Validation<LaunchField, RunCreate> {
  const errors: FieldErrors<LaunchField> = {};
  const take = <T>(field: LaunchField, result: T | string): T => {
    if (typeof result === "string") errors[field] = result;
    return result as T;
  };
  const datasetId = Number(values.datasetId);
  if (!/^\d+$/.test(values.datasetId.trim()) || datasetId <= 0) errors.datasetId = "Choose a dataset.";
  const name = values.name.trim();
  if (name === "") errors.name = "Name is required.";
  else if (name.length > LAUNCH_LIMITS.nameLength) {
    errors.name = `Name must be at most ${LAUNCH_LIMITS.nameLength} characters.`;
  }
  const pick = (field: LaunchField, allowed: readonly string[], message: string) => {
    const problem = oneOf(String(values[field]), allowed, message);
    if (problem) errors[field] = problem;
  };
  const segmentation = isSegmentation(values);
  const taskFields: Record<string, unknown> = {};
  if (segmentation) {
    pick("earlyStoppingMetric", SEGMENTATION_EARLY_STOPPING, "Choose an early-stopping metric.");
    const fraction = take("segAnnotatedFraction", parseReal(values.segAnnotatedFraction, "Annotated fraction", true));
    if (typeof fraction === "number" && fraction > 1) errors.segAnnotatedFraction = "Annotated fraction must be at most 1.";
    Object.assign(taskFields, {
      task: "segmentation",
      seg_annotated_fraction: fraction,
      seg_constraint: values.segConstraint,
    });
  } else {
    pick("network", NETWORKS, "Choose a network.");
    pick("lossSetting", LOSS_SETTINGS.map((l) => l.value), "Choose a loss setting.");
    pick("earlyStoppingMetric", EARLY_STOPPING_METRICS, "Choose an early-stopping metric.");
    Object.assign(taskFields, { network: values.network, loss_setting: values.lossSetting });
    // The normative channel is a classification input (RunConfig refuses it for regression).
    if (values.task !== "regression") taskFields.normative_input = values.normativeInput;
  }
  const epochs = take("epochs", parseWhole(values.epochs, "Epochs", LAUNCH_LIMITS.epochs));
  const batchSize = take("batchSize", parseWhole(values.batchSize, "Batch size", LAUNCH_LIMITS.batchSize));
  const seed = take("seed", parseWhole(values.seed, "Seed", LAUNCH_LIMITS.seed));
  const learningRate = take("learningRate", parseReal(values.learningRate, "Learning rate", true));

  const attribution: Record<string, unknown> = {};
  if (trainsAttribution(values)) {
    const methods = TRAIN_ATTRIBUTIONS.map((m) => m.value).filter((m) => values.trainAttribution.includes(m));
    if (methods.length === 0) errors.trainAttribution = "Choose at least one attribution method.";
    attribution.train_attribution = methods;
    if (methods.includes("integrated_gradients")) {
      attribution.ig_steps = take("igSteps", parseWhole(values.igSteps, "IG steps", LAUNCH_LIMITS.igSteps));
    }
    if (methods.includes("expected_gradients")) {
      attribution.eg_k = take("egK", parseWhole(values.egK, "EG samples k", LAUNCH_LIMITS.egK));
    }
    attribution.attribution_scale = take(
      "attributionScale",
      parseReal(values.attributionScale, "Attribution scale", true),
    );
    if (values.task !== "regression") {
      // Regression runs use regression.penalty instead.
      pick("attributionLoss", ATTRIBUTION_LOSSES, "Choose BCE, RRR or wrong-signed mass.");
      attribution.attribution_loss = values.attributionLoss;
    }
  }
  const task = regressionConfig(values, errors);
  if (weighsLambda(values)) {
    pick("lambdaKind", LAMBDA_KINDS, "Choose a lambda schedule.");
    const value = take("lambdaValue", parseReal(values.lambdaValue, "Lambda", false));
    let warmup = 0;
    if (values.lambdaKind === "linear_warmup") {
      warmup = take("warmupEpochs", parseReal(values.warmupEpochs, "Warm-up epochs", true));
      if (typeof warmup === "number" && typeof epochs === "number" && warmup > epochs) {
        errors.warmupEpochs = "Warm-up must not be longer than the run.";
      }
    }
    attribution.lambda_a = { kind: values.lambdaKind, value, warmup_epochs: warmup };
  }
  const lambdaValue = attribution.lambda_a as { value: unknown } | undefined;
  const remedies = validateRemedies(
    values,
    errors,
    typeof lambdaValue?.value === "number" ? lambdaValue.value : null,
  );
  return Object.keys(errors).length > 0
    ? { ok: false, errors }
    : {
        ok: true,
        value: {
          dataset_id: datasetId,
          name,
          ...(values.preset ? { preset: values.preset } : {}),
          config: {
            ...taskFields,
            ...attribution,
            epochs,
            learning_rate: learningRate,
            batch_size: batchSize,
            seed,
            augment: values.augment,
            // Checked against the metrics above (pick).
            early_stopping_metric: values.earlyStoppingMetric as EarlyStoppingMetric,
            ...remedies,
            ...task,
          },
        },
      };
}

/** Config keys (RunCreate.config, dotted for lambda_a) to the form field that edits them. */
const CONFIG_FIELDS: Record<string, LaunchField> = {
  network: "network",
  loss_setting: "lossSetting",
  train_attribution: "trainAttribution",
  ig_steps: "igSteps",
  eg_k: "egK",
  attribution_scale: "attributionScale",
  attribution_loss: "attributionLoss",
  lambda_a: "lambdaValue",
  "lambda_a.kind": "lambdaKind",
  "lambda_a.value": "lambdaValue",
  "lambda_a.warmup_epochs": "warmupEpochs",
  epochs: "epochs",
  learning_rate: "learningRate",
  batch_size: "batchSize",
  seed: "seed",
  augment: "augment",
  normative_input: "normativeInput",
  early_stopping_metric: "earlyStoppingMetric",
  ...REMEDY_CONFIG_FIELDS,
  task: "task",
  seg_annotated_fraction: "segAnnotatedFraction",
  seg_constraint: "segConstraint",
  "regression.loss": "regressionLoss",
  "regression.constraints": "regressionConstraints",
  "regression.penalty": "regressionPenalty",
  regression: "task",
  preset: "preset",
};

/**
 * Splits a 422's issues into messages per form field and the rest (shown at the form).
 * FastAPI locates body errors as ["body", "config", "lambda_a", "value"]; the service's own
 * RunConfig check may answer ["config", ...] or ["lambda_a", ...] without the prefix.
 */
export function serverFieldErrors(detail: unknown): { fields: FieldErrors<LaunchField>; form: string[] } {
  const fields: FieldErrors<LaunchField> = {};
  const form: string[] = [];
  if (typeof detail === "string") return splitConfigMessage(detail);
  if (!Array.isArray(detail)) return { fields, form };
  for (const issue of detail as ValidationIssue[]) {
    if (!issue || typeof issue.msg !== "string") continue;
    const loc = (issue.loc ?? []).map(String).filter((p) => p !== "body");
    let field: LaunchField | undefined;
    if (loc[0] === "name") field = "name";
    else if (loc[0] === "dataset_id") field = "datasetId";
    else {
      const path = (loc[0] === "config" ? loc.slice(1) : loc).filter((p) => !/^\d+$/.test(p));
      field = CONFIG_FIELDS[path.slice(0, 2).join(".")] ?? CONFIG_FIELDS[path[0] ?? ""];
    }
    if (field) fields[field] = fields[field] ? `${fields[field]} ${issue.msg}` : issue.msg;
    else form.push(loc.length > 0 ? `${loc.join(".")}: ${issue.msg}` : issue.msg);
  }
  return { fields, form };
}

const CONFIG_PREFIX = "invalid run config: ";

/**
 * The service validates the config with RunConfig itself and answers one string:
 * "invalid run config: config.lambda_a.value: msg; config.epochs: msg".
 */
function splitConfigMessage(detail: string): { fields: FieldErrors<LaunchField>; form: string[] } {
  if (!detail.startsWith(CONFIG_PREFIX)) return { fields: {}, form: [detail] };
  const issues: ValidationIssue[] = [];
  const form: string[] = [];
  for (const part of detail.slice(CONFIG_PREFIX.length).split("; ")) {
    const match = /^(config(?:\.[\w]+)*): (.*)$/s.exec(part);
    if (match) issues.push({ loc: match[1].split("."), msg: match[2] });
    else form.push(part);
  }
  const parsed = serverFieldErrors(issues);
  return { fields: parsed.fields, form: [...form, ...parsed.form] };
}

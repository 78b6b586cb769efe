// Named presets of the launch form (GET /presets, attrivue_core/presets.py): a preset's RunConfig
// values as the form's fields, and as the lines the form shows under the picker. The run is
// created with the preset's name: the server applies the preset's values first, then the
// config the form sends, so a preset value the form has no field for still reaches the run.
import type { Preset } from "../api/types";
import { REMEDY_CONFIG_FIELDS } from "./remedies";
import { LAUNCH_DEFAULTS, type LaunchField, type LaunchFormValues } from "./runConfig";

/** Plain config keys to the form field that shows them. */
const FIELDS: Record<string, LaunchField> = {
  network: "network",
  loss_setting: "lossSetting",
  train_attribution: "trainAttribution",
  ig_steps: "igSteps",
  eg_k: "egK",
  attribution_scale: "attributionScale",
  attribution_loss: "attributionLoss",
  epochs: "epochs",
  learning_rate: "learningRate",
  batch_size: "batchSize",
  seed: "seed",
  augment: "augment",
  normative_input: "normativeInput",
  early_stopping_metric: "earlyStoppingMetric",
  task: "task",
  ...REMEDY_CONFIG_FIELDS,
};
const LAMBDA_FIELDS: Record<string, LaunchField> = {
  kind: "lambdaKind",
  value: "lambdaValue",
  warmup_epochs: "warmupEpochs",
};

function asField(value: unknown): string | boolean | string[] {
  if (typeof value === "boolean") return value;
  if (Array.isArray(value)) return value.map(String);
  if (value === null || value === undefined) return "";
  return String(value);
}

/** The form values a preset's config sets (config keys the form has no field for are left out). */
export function presetFormValues(config: Record<string, unknown>): Partial<LaunchFormValues> {
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(config)) {
    if (key === "lambda_a" && value && typeof value === "object") {
      for (const [part, inner] of Object.entries(value as Record<string, unknown>)) {
        const field = LAMBDA_FIELDS[part];
        if (field) values[field] = asField(inner);
      }
    } else if (FIELDS[key]) values[FIELDS[key]] = asField(value);
  }
  return values as Partial<LaunchFormValues>;
}

/**
 * The form after choosing `preset`: the defaults with the preset's values on top, keeping the
 * dataset and the name already entered. No preset (null) leaves the fields as they are.
 */
export function withPreset(values: LaunchFormValues, preset: Preset | null): LaunchFormValues {
  if (!preset) return { ...values, preset: "" };
  return {
    ...LAUNCH_DEFAULTS,
    ...presetFormValues(preset.config),
    datasetId: values.datasetId,
    name: values.name,
    preset: preset.name,
  };
}

export interface PresetLine {
  key: string;
  value: string;
  /** Whether the launch form has a field for it (else the server applies it). */
  onForm: boolean;
}

function shown(value: unknown): string {
  if (Array.isArray(value)) return value.join(", ");
  if (value && typeof value === "object") {
    return Object.entries(value as Record<string, unknown>)
      .map(([k, v]) => `${k} ${shown(v)}`)
      .join(", ");
  }
  return String(value);
}

/** Every value a preset sets, one line per config key, in the preset's order. */
export function presetLines(config: Record<string, unknown>): PresetLine[] {
  return Object.entries(config).map(([key, value]) => ({
    key,
    value: shown(value),
    onForm: key === "lambda_a" || key in FIELDS,
  }));
}

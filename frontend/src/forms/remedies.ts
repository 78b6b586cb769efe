// The launch form's training remedies (docs/method.md section 6.1; worker/ml/gradients.py):
// clipping, gradient balancing, L_A every n steps, mixed precision and the device, and the
// probe of L_A's gradient in L_C-only runs. Values the form leaves at RunConfig's defaults are
// not sent, so a plain launch carries no remedy at all.
import { DEVICE_NAMES, GRAD_BALANCE_CHOICES } from "./choices";
import type { FieldErrors } from "./validation";

export const GRAD_BALANCES = GRAD_BALANCE_CHOICES;

export const DEVICES = DEVICE_NAMES;

export interface RemedyFormValues {
  gradClipNorm: string;
  gradBalance: string;
  gradBalanceRatio: string;
  gradnormAlpha: string;
  laEveryNSteps: string;
  gradProbeBatches: string;
  device: string;
  amp: boolean;
}

export type RemedyField = keyof RemedyFormValues;

export const REMEDY_DEFAULTS: RemedyFormValues = {
  gradClipNorm: "",
  gradBalance: "none",
  gradBalanceRatio: "1",
  gradnormAlpha: "1.5",
  laEveryNSteps: "1",
  gradProbeBatches: "1",
  device: "auto",
  amp: true,
};

/** The bounds RunConfig declares for these fields (attrivue_core/configs.py). */
export const REMEDY_LIMITS = {
  laEveryNSteps: [1, 1000],
  gradProbeBatches: [0, 1024],
  gradBalanceRatio: 1000,
  gradnormAlpha: 10,
} as const;

/** Config keys to the form field that edits them (for a server 422). */
export const REMEDY_CONFIG_FIELDS: Record<string, RemedyField> = {
  grad_clip_norm: "gradClipNorm",
  grad_balance: "gradBalance",
  grad_balance_ratio: "gradBalanceRatio",
  gradnorm_alpha: "gradnormAlpha",
  la_every_n_steps: "laEveryNSteps",
  grad_probe_batches: "gradProbeBatches",
  device: "device",
  amp: "amp",
};

function whole(raw: string, label: string, [min, max]: readonly [number, number]): number | string {
  const text = raw.trim();
  if (!/^[+-]?\d+$/.test(text)) return `${label} must be a whole number.`;
  const value = Number(text);
  return value < min || value > max ? `${label} must be between ${min} and ${max}.` : value;
}

function bounded(raw: string, label: string, min: number, max: number, openMin: boolean): number | string {
  const text = raw.trim();
  const value = Number(text);
  if (text === "" || !Number.isFinite(value)) return `${label} must be a number.`;
  if ((openMin ? value <= min : value < min) || value > max) {
    const upper = Number.isFinite(max) ? ` and at most ${max}` : "";
    return `${label} must be ${openMin ? "greater than" : "at least"} ${min}${upper}.`;
  }
  return value;
}

/**
 * Validates the remedy fields of a launch with loss setting `lossSetting` and lambda value
 * `lambdaValue` (null where the setting has none, or it is invalid); writes messages into
 * `errors` and returns the config keys to send.
 */
export function validateRemedies(
  values: RemedyFormValues & { lossSetting: string },
  errors: FieldErrors<RemedyField>,
  lambdaValue: number | null,
): Record<string, unknown> {
  const config: Record<string, unknown> = {};
  const take = (field: RemedyField, result: number | string): number | null => {
    if (typeof result === "string") {
      errors[field] = result;
      return null;
    }
    return result;
  };
  const weighted = values.lossSetting === "lc_la_supervised" || values.lossSetting === "lc_la_unsupervised";

  if (values.gradClipNorm.trim() !== "") {
    config.grad_clip_norm = take(
      "gradClipNorm",
      bounded(values.gradClipNorm, "Clip norm", 0, Number.POSITIVE_INFINITY, true),
    );
  }
  if (weighted) {
    if (!GRAD_BALANCES.some((b) => b.value === values.gradBalance)) {
      errors.gradBalance = "Choose a gradient balancing.";
    } else if (values.gradBalance !== "none") {
      config.grad_balance = values.gradBalance;
    }
    if (values.gradBalance === "fixed_ratio") {
      config.grad_balance_ratio = take(
        "gradBalanceRatio",
        bounded(values.gradBalanceRatio, "Gradient ratio", 0, REMEDY_LIMITS.gradBalanceRatio, true),
      );
      if (lambdaValue === 0) errors.gradBalance = "Fixed-ratio balancing needs lambda greater than 0.";
    }
    if (values.gradBalance === "gradnorm") {
      config.gradnorm_alpha = take(
        "gradnormAlpha",
        bounded(values.gradnormAlpha, "GradNorm alpha", 0, REMEDY_LIMITS.gradnormAlpha, false),
      );
    }
    const every = take("laEveryNSteps", whole(values.laEveryNSteps, "L_A every n steps", REMEDY_LIMITS.laEveryNSteps));
    if (every !== null && every !== 1) config.la_every_n_steps = every;
  }
  if (values.lossSetting === "lc_only") {
    const probe = take(
      "gradProbeBatches",
      whole(values.gradProbeBatches, "Probe batches", REMEDY_LIMITS.gradProbeBatches),
    );
    if (probe !== null && probe !== 1) config.grad_probe_batches = probe;
  }
  if (!(DEVICES as readonly string[]).includes(values.device)) errors.device = "Choose a device.";
  else if (values.device !== "auto") config.device = values.device;
  // Mixed precision is CUDA only: with device cpu it is not used (the checkbox is off and
  // disabled there), so nothing is refused and amp goes out off.
  if (!values.amp || values.device === "cpu") config.amp = false;
  return config;
}

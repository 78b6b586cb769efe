// What the provenance panel says about a map's method: the parameters that method reads (with
// the defaults the worker applied to those not given), its baseline, and its uncertainty.
// methodParams.json mirrors attrivue_core.configs (METHOD_FIELDS, AttributionConfig defaults);
// tests/test_method_params_mirror.py keeps the two equal.
import type { Attribution } from "../api/types";
import { fieldLabel, formatNumber, formatValue } from "../format";
import table from "./methodParams.json";

const METHODS: Record<string, Record<string, unknown>> = table;

export interface ParamRow {
  key: string;
  label: string;
  value: string;
  /** Not given when the map was asked for: the worker's default. */
  isDefault: boolean;
}

const LABELS: Record<string, string> = {
  steps: "Integration steps",
  riemann_method: "Quadrature",
  internal_batch_size: "Batch (images per pass)",
  n_samples: "Samples",
  stdevs: "Noise (std)",
  n_references: "References",
  relu_attributions: "Positive part only",
  blur_sigma: "Blur σ (voxels)",
  target_delta: "Target delta",
  max_points: "Most points",
};

/** IG to a requested accuracy: these replace the fixed steps and rule (and the reverse). */
const FIXED_POINTS = new Set(["steps", "riemann_method"]);
const TO_ACCURACY = new Set(["target_delta", "max_points"]);

/** Methods that draw samples and whose maps carry uncertainty volumes (sd, sign agreement). */
export const STOCHASTIC_METHODS: readonly string[] = ["smoothgrad", "gradient_shap"];

/** The baselines a map can be compared across ("Compare baselines"), in the worker's names. */
export const BASELINES = ["zero", "blur", "healthy_mean"] as const;
export type BaselineName = (typeof BASELINES)[number];

/** Whether the method compares the input with a baseline image x′. */
export function usesBaseline(method: string): boolean {
  return METHODS[method] !== undefined && "baseline" in METHODS[method];
}

/** The baseline in words (gradient_shap: where its references come from), or null. */
export function baselineText(method: string, params: Record<string, unknown> | null | undefined): string | null {
  if (method === "gradient_shap") {
    const source = String(params?.references ?? METHODS.gradient_shap.references);
    if (source === "healthy") return "healthy training subjects (references)";
    const sigma = params?.stdevs ?? METHODS.gradient_shap.stdevs;
    return `zero image + noise (σ ${formatValue(sigma)}) (references)`;
  }
  if (!usesBaseline(method)) return null;
  const defaults = METHODS[method];
  const name = String(params?.baseline ?? defaults.baseline);
  if (name === "healthy_mean") return "mean of the healthy training subjects";
  if (name === "blur") {
    const sigma = params?.blur_sigma ?? defaults.blur_sigma;
    return `blurred input (σ ${formatValue(sigma)} voxels)`;
  }
  if (name === "zero") return "zero image";
  return name;
}

/**
 * The parameters the method read, in the worker's terms: given ones as given, the others at
 * their defaults; the baseline has its own row (baselineText), and the blur only with a blurred
 * baseline. Null for a method this table does not know (then the parameters are listed as given).
 */
export function methodParams(method: string, params: Record<string, unknown> | null | undefined): ParamRow[] | null {
  const defaults = METHODS[method];
  if (!defaults) return null;
  const given = params ?? {};
  const blurred = String(given.baseline ?? defaults.baseline) === "blur";
  const toAccuracy = typeof given.target_delta === "number";
  return Object.entries(defaults)
    .filter(([key]) => key !== "baseline" && key !== "references" && (key !== "blur_sigma" || blurred))
    .filter(([key]) => !(toAccuracy ? FIXED_POINTS : TO_ACCURACY).has(key))
    .map(([key, fallback]) => {
      const isDefault = !(key in given);
      const value = isDefault ? fallback : given[key];
      return {
        key,
        label: LABELS[key] ?? fieldLabel(key),
        value:
          value === null ? "auto" : key === "target_delta" ? `${formatPercent(Number(value))} of F(x) − F(x′)` : formatValue(value),
        isDefault,
      };
    });
}

export interface Uncertainty {
  /** |Σ A − (F(x) − F(x′))|: how far the map is from explaining the output change. */
  delta: number;
  /** delta as a share of |F(x) − F(x′)|, when the stats carry it. */
  relative: number | null;
}

/** The map's own uncertainty, for methods that define one (completeness); null otherwise. */
export function uncertaintyOf(attribution: Pick<Attribution, "convergence_delta" | "stats">): Uncertainty | null {
  const delta = attribution.convergence_delta;
  if (delta === null || delta === undefined || !Number.isFinite(delta)) return null;
  const rel = (attribution.stats as Record<string, unknown> | null)?.relative_delta;
  return { delta, relative: typeof rel === "number" && Number.isFinite(rel) ? rel : null };
}

export interface SampleSpread {
  /** Mean standard deviation of the per-sample maps inside the brain. */
  meanSd: number;
  /** Share of brain voxels whose sign agreement is below 0.8. */
  lowAgreementShare: number;
}

/** The spread of a stochastic map's samples, from its stats; null for other maps. */
export function sampleSpreadOf(stats: unknown): SampleSpread | null {
  const s = (stats ?? {}) as Record<string, unknown>;
  const meanSd = s.uncertainty_mean_sd;
  const low = s.uncertainty_low_agreement_share;
  if (typeof meanSd !== "number" || typeof low !== "number") return null;
  return { meanSd, lowAgreementShare: low };
}

export interface PointsUsed {
  /** Interpolation points of an Integrated Gradients map. */
  points: number;
  /** IG to a requested accuracy: whether the target delta was reached (null: fixed steps). */
  reached: boolean | null;
}

/** The points an IG map used, from its stats (ig_points, ig_target_reached); null otherwise. */
export function pointsUsedOf(stats: unknown): PointsUsed | null {
  const s = (stats ?? {}) as Record<string, unknown>;
  if (typeof s.ig_points !== "number") return null;
  const reached = typeof s.ig_target_reached === "number" ? s.ig_target_reached > 0 : null;
  return { points: s.ig_points, reached };
}

/** One line for a compact caption: "δ 0.00123 (0.4 %)". */
export function uncertaintyText(u: Uncertainty): string {
  const rel = u.relative === null ? "" : ` (${formatPercent(u.relative)} of F(x) − F(x′))`;
  return `δ ${formatNumber(u.delta)}${rel}`;
}

export function formatPercent(fraction: number): string {
  const pct = fraction * 100;
  return `${pct >= 10 ? pct.toFixed(0) : pct >= 1 ? pct.toFixed(1) : pct.toPrecision(2)} %`;
}

/** |F(x′)| beyond which the baseline is not neutral to the model: probability outside 0.1-0.9. */
export const NEUTRAL_BASELINE_LOGIT = Math.log(9);

export interface BaselineOutput {
  /** F(x′): the model's pathological logit at the baseline (mean over references for EG). */
  baselineLogit: number;
  /** The same as a probability. */
  probability: number;
  /** F(x) − F(x′), what the whole map sums to; null when the map has no F(x). */
  total: number | null;
  /** A sentence for the reader when the model does not find the baseline neutral; null otherwise. */
  warning: string | null;
}

/**
 * What the model makes of the map's baseline (stats.baseline_logit), and a warning when it is
 * far from the decision boundary. The map sums to F(x) − F(x′): with a baseline the model
 * calls pathological, a subject it calls healthy gets a map that is blue overall whatever its
 * lesions, and the reverse; red and blue then read against that baseline, not against healthy.
 */
export function baselineOutputOf(attribution: Pick<Attribution, "logit" | "stats">): BaselineOutput | null {
  const value = (attribution.stats as Record<string, unknown> | null)?.baseline_logit;
  if (typeof value !== "number" || !Number.isFinite(value)) return null;
  const probability = 1 / (1 + Math.exp(-value));
  const logit = attribution.logit;
  const total = typeof logit === "number" && Number.isFinite(logit) ? logit - value : null;
  let warning: string | null = null;
  if (Math.abs(value) > NEUTRAL_BASELINE_LOGIT) {
    const side = value > 0 ? "pathological" : "healthy";
    const sum =
      total === null ? "" : ` This map sums to F(x) − F(x′) = ${formatNumber(total)}, ${total < 0 ? "blue" : "red"} overall.`;
    warning =
      `The model calls the baseline ${side} (p = ${probability.toFixed(2)}): the map shows how the image ` +
      `differs from a baseline that is not neutral, and its colours shift as a whole.${sum}`;
  }
  return { baselineLogit: value, probability, total, warning };
}

// Which metrics the run page draws together and how it splits the final test metrics.
import type { Metrics } from "../api/types";

/** Chart title -> the per-epoch metric names it draws (as worker/tasks/train.py stores them). */
export const CURVE_GROUPS: { title: string; names: string[] }[] = [
  { title: "Losses (L_C, L_A)", names: ["loss_c", "loss_a", "val_loss"] },
  { title: "Validation AUROC", names: ["val_auroc", "val_attr_auroc"] },
  { title: "Validation error (regression)", names: ["val_mae", "val_rmse"] },
  { title: "Validation attribution", names: ["val_lesion_mass", "val_attr_dice"] },
  { title: "Gradient norms", names: ["grad_norm_c", "grad_norm_a"] },
];

const ATTRIBUTION_WORDS = ["attr", "lesion", "dice", "mass", "relevance", "pointing"];

export function isAttributionMetric(name: string): boolean {
  return ATTRIBUTION_WORDS.some((w) => name.includes(w));
}

/** The final test metrics (numbers whose key starts with "test_"), split by kind and sorted. */
export function testMetrics(metrics: Metrics | null | undefined): {
  classification: [string, number][];
  attribution: [string, number][];
} {
  const entries = Object.entries(metrics ?? {})
    .filter((e): e is [string, number] => e[0].startsWith("test_") && typeof e[1] === "number")
    .sort((a, b) => a[0].localeCompare(b[0]));
  return {
    classification: entries.filter(([k]) => !isAttributionMetric(k)),
    attribution: entries.filter(([k]) => isAttributionMetric(k)),
  };
}

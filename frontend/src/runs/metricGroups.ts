// Which metrics the run page draws together and how it splits the final test metrics.
import type { Metrics } from "../api/types";

/** Chart title -> the per-epoch metric names it draws (as worker/tasks/train.py stores them). */
export const CURVE_GROUPS: { title: string; names: string[] }[] = [
  // Each loss on its own axis: L_A is often orders of magnitude above L_C and would flatten it.
  { title: "Classification loss L_C (train, validation)", names: ["loss_c", "val_loss"] },
  { title: "Attribution loss L_A", names: ["loss_a"] },
  { title: "Validation AUROC", names: ["val_auroc", "val_attr_auroc"] },
  { title: "Validation error (regression)", names: ["val_mae", "val_rmse"] },
  { title: "Validation attribution", names: ["val_lesion_mass", "val_attr_dice", "val_attr_healthy_share"] },
  ...instrumentationGroups(),
  { title: "Validation segmentation", names: ["val_dice", "val_lesion_f1"] },
];

/** The gradient instrumentation of every run (worker/ml/gradients.py), one chart per scale. */
function instrumentationGroups(): { title: string; names: string[] }[] {
  return [
    { title: "Gradient norms", names: ["grad_norm_c", "grad_norm_a", "grad_norm_total"] },
    {
      title: "L_A vs L_C gradients: ratio, cosine, balancing weight",
      names: ["grad_ratio", "grad_cosine", "grad_weight_a"],
    },
    { title: "Attribution scale (mean |A|)", names: ["attribution_abs_mean"] },
    { title: "Training time per epoch (s)", names: ["step_seconds", "attribution_seconds"] },
    { title: "Attribution share of the step time, clipped steps", names: ["attribution_share", "clip_fraction"] },
  ];
}

/** The per-epoch instrumentation names worker/tasks/train.py stores for every run. */
export const INSTRUMENTATION_METRICS = instrumentationGroups().flatMap((g) => g.names);

/** What the instrumentation charts mean, shown under them on the run page. */
export const INSTRUMENTATION_NOTE =
  "Gradients are taken w.r.t. all weights: g_C of L_C, g_A of λ·L_A (ratio = ‖g_A‖/‖g_C‖; a cosine below 0 " +
  "means the constraint pulls against the classifier). Constrained runs measure them on every step that " +
  "trains L_A; L_C-only runs probe the weakly supervised L_A (not applied) on the first batch(es) of each " +
  "epoch, an extra attribution and backward on those batches only. Attribution time is the attribution's " +
  "forward and first backward; the back-propagation of L_A through it counts in the step time.";

/** Groups to draw: those with at least one of their metrics among `names`. */
export function groupsWithData(names: Iterable<string>): { title: string; names: string[] }[] {
  const present = new Set(names);
  return CURVE_GROUPS.filter((g) => g.names.some((n) => present.has(n)));
}

const ATTRIBUTION_WORDS = ["attr", "lesion", "dice", "mass", "relevance", "pointing"];

// Segmentation runs' own metrics (worker/ml/segmentation.py), about the predicted masks.
const SEGMENTATION_METRICS = new Set([
  "dice",
  "hd95_voxels",
  "lesion_sensitivity",
  "lesion_precision",
  "lesion_f1",
  "n_lesion_subjects",
]);

export function isAttributionMetric(name: string): boolean {
  if (SEGMENTATION_METRICS.has(name.replace(/^(test|val)_/, ""))) return false;
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

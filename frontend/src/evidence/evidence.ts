// The evidence of a map as the panel shows it: pure functions from stored checks to text,
// numbers and chart series (worker/ml/evidence.py computes them; docs/method.md explains them).
import type { components } from "../api/schema";
import { formatNumber } from "../format";
import type { Series } from "../charts/curves";

export type EvidenceCheck = components["schemas"]["EvidencePublic"];
export type EvidenceKind = EvidenceCheck["checks"][number];

export const CHECK_NAMES: Record<EvidenceKind, string> = {
  model_randomisation: "Model randomisation",
  data_randomisation: "Data randomisation",
  faithfulness: "Faithfulness",
};

/** Whether the check's job has not ended yet (the panel keeps polling). */
export function isPending(check: EvidenceCheck): boolean {
  return check.status === "queued" || check.status === "running";
}

/** One line for the check as a whole: its verdict, or where it stands. */
export function verdictText(check: EvidenceCheck): string {
  if (check.status === "failed") return `The checks failed to run: ${check.error ?? "unknown error"}`;
  if (check.status === "cancelled") return "The checks were cancelled.";
  if (isPending(check)) {
    const percent = Math.round(Math.min(Math.max(check.progress ?? 0, 0), 1) * 100);
    return `Running (${percent}%)${check.message ? `: ${check.message}` : ""}`;
  }
  if (check.verdict === "passes") return "Passes every check";
  if (check.verdict === "fails") {
    const failed = check.checks.filter((kind) => check.results[kind]?.passes === false);
    return `Fails: ${failed.map((kind) => CHECK_NAMES[kind]).join(", ")}`;
  }
  return "No verdict";
}

export interface EvidenceRow {
  check: EvidenceKind;
  label: string;
  value: string;
}

/** The numbers behind each check's verdict, labelled as the docs name them. */
export function evidenceRows(check: EvidenceCheck): EvidenceRow[] {
  const rows: EvidenceRow[] = [];
  const { model_randomisation: model, data_randomisation: data, faithfulness: faith } = check.results;
  if (faith) {
    rows.push(
      { check: "faithfulness", label: "Deletion AUC", value: formatNumber(faith.deletion_auc) },
      { check: "faithfulness", label: "Insertion AUC", value: formatNumber(faith.insertion_auc) },
      { check: "faithfulness", label: "Insertion − deletion", value: formatNumber(faith.auc_gap) },
      { check: "faithfulness", label: "Infidelity", value: formatNumber(faith.infidelity) },
    );
    if (faith.irof) {
      rows.push(
        { check: "faithfulness", label: "IROF AUC", value: formatNumber(faith.irof.auc) },
        { check: "faithfulness", label: "IROF AUC, random order", value: formatNumber(faith.irof.random_auc) },
      );
    }
  }
  if (model && model.steps.length > 0) {
    const last = model.steps[model.steps.length - 1];
    rows.push(
      { check: "model_randomisation", label: "Spearman |A|, all layers random", value: formatNumber(last.spearman_abs) },
      { check: "model_randomisation", label: "SSIM |A|, all layers random", value: formatNumber(last.ssim_abs) },
      { check: "model_randomisation", label: "Spearman signed, all layers random", value: formatNumber(last.spearman_signed) },
    );
  }
  if (data) {
    rows.push(
      { check: "data_randomisation", label: "Spearman |A|, permuted labels", value: formatNumber(data.spearman_abs) },
      { check: "data_randomisation", label: "SSIM |A|, permuted labels", value: formatNumber(data.ssim_abs) },
    );
  }
  return rows;
}

/** Deletion and insertion logits against the fraction of voxels changed. */
export function faithfulnessSeries(check: EvidenceCheck): Series[] {
  const faith = check.results.faithfulness;
  if (!faith) return [];
  const along = (values: number[]) =>
    faith.fractions.map((x, i) => ({ x, y: values[i] })).filter((p) => Number.isFinite(p.y));
  return [
    { name: "deletion", points: along(faith.deletion) },
    { name: "insertion", points: along(faith.insertion), dash: "4 2" },
  ];
}

/** IROF: the pathological probability against the fraction of supervoxels removed, in the map's
 * order and in random order (absent from checks stored before IROF). */
export function irofSeries(check: EvidenceCheck): Series[] {
  const irof = check.results.faithfulness?.irof;
  if (!irof) return [];
  const along = (values: (number | null)[]) =>
    irof.fractions
      .map((x, i) => ({ x, y: values[i] }))
      .filter((p): p is { x: number; y: number } => typeof p.y === "number" && Number.isFinite(p.y));
  return [
    { name: "map order", points: along(irof.probabilities) },
    { name: "random order", points: along(irof.random_probabilities), dash: "4 2" },
  ];
}

/** Similarity to the trained model's map after randomising 1, 2, ... layers from the output. */
export function layerSeries(check: EvidenceCheck): Series[] {
  const model = check.results.model_randomisation;
  if (!model) return [];
  const keys = ["spearman_abs", "ssim_abs", "spearman_signed"] as const;
  return keys.map((key) => ({
    name: key.replace("_", " "),
    points: model.steps
      .map((step, i) => ({ x: i + 1, y: step[key] }))
      .filter((p): p is { x: number; y: number } => typeof p.y === "number" && Number.isFinite(p.y)),
  }));
}

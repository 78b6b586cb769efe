// Display formatting shared by the pages.
import type { Metrics, RunConfig } from "./api/types";

/** Three significant digits; exponent notation for very small or large magnitudes. */
export function formatNumber(value: number | null | undefined, digits = 3): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude < 1e-3 || magnitude >= 1e5) return value.toExponential(digits - 1);
  return Number(value.toPrecision(digits)).toString();
}

export function formatPercent(fraction: number): string {
  return `${Math.round(Math.min(Math.max(fraction, 0), 1) * 100)}%`;
}

export function formatDate(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** Metric keys shown first, in this order, when a run reports them. */
const PRIMARY_METRICS = ["test_auroc", "auroc", "val_auroc", "test_accuracy", "accuracy"];

/** The metrics worth a table cell: numbers only, the AUROCs first, as "name value" pairs. */
export function summariseMetrics(metrics: Metrics | null | undefined, limit = 3): string[] {
  if (!metrics) return [];
  const numeric = Object.entries(metrics).filter(
    (entry): entry is [string, number] => typeof entry[1] === "number" && Number.isFinite(entry[1]),
  );
  const rank = (key: string) => {
    const i = PRIMARY_METRICS.indexOf(key);
    return i < 0 ? PRIMARY_METRICS.length : i;
  };
  numeric.sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]));
  return numeric.slice(0, limit).map(([key, value]) => `${key.replace(/_/g, " ")} ${formatNumber(value)}`);
}

/** One value of an open-ended object (run config, attribution params) as short text. */
export function formatValue(value: unknown): string {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return formatNumber(value);
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.every((v) => typeof v === "number") ? value.join(" × ") : value.map(formatValue).join(", ");
  return JSON.stringify(value);
}

/** "lambda_a" -> "Lambda a". */
export function fieldLabel(key: string): string {
  const words = key.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** A run's main settings in one line, from whichever of them its config holds. */
export function summariseConfig(config: RunConfig | null | undefined): string {
  if (!config) return "";
  const parts: string[] = [];
  const add = (key: string, show: (v: string) => string) => {
    if (config[key] !== undefined && config[key] !== null) parts.push(show(formatValue(config[key])));
  };
  add("network", (v) => v);
  add("epochs", (v) => `${v} epochs`);
  add("batch_size", (v) => `batch ${v}`);
  add("learning_rate", (v) => `lr ${v}`);
  add("seed", (v) => `seed ${v}`);
  add("loss_setting", (v) => v);
  return parts.join(" · ");
}

export function labelName(label: number): string {
  return label === 1 ? "pathological" : "healthy";
}

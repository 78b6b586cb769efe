// What the shortcut report says in words: the flag's sentence, the counterfactual's numbers, the
// shares outside the brain (backend: attrivue_core/shortcut.py, worker/tasks/shortcut.py).
import type { components } from "../api/schema";
import { formatNumber } from "../format";

type Schemas = components["schemas"];

export type ShortcutReport = Schemas["ShortcutReportPublic"];
export type CohortMap = Schemas["CohortMapPublic"];
export type Counterfactual = Schemas["Counterfactual"];
export type CohortWhich = "mean" | "t";

/** Two decimals, as the flags' reasons write AUROCs; "n/a" where undefined. */
export function fixed2(value: number | null | undefined): string {
  return value === null || value === undefined || Number.isNaN(value) ? "n/a" : value.toFixed(2);
}

/** A signed logit change: "+0.12", "−2.31" (a real minus sign). */
export function signed(value: number | null | undefined): string {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const text = Math.abs(value).toFixed(2);
  return value < 0 ? `\u2212${text}` : `+${text}`;
}

/** "This run may rely on a shortcut: <reason>; <reason>." when a flag was raised, else null. */
export function flagSentence(report: Pick<ShortcutReport, "flags"> | null | undefined): string | null {
  const flags = report?.flags ?? [];
  if (flags.length === 0) return null;
  return `This run may rely on a shortcut: ${flags.map((f) => f.reason).join("; ")}.`;
}

/** "AUROC 1.00 → 0.50, accuracy 100% → 50%, mean logit change −2.31". */
export function counterfactualSummary(cf: Counterfactual): string {
  const pct = (v: number) => `${Math.round(v * 100)}%`;
  return (
    `AUROC ${fixed2(cf.before.auroc)} \u2192 ${fixed2(cf.after.auroc)}, ` +
    `accuracy ${pct(cf.before.accuracy)} \u2192 ${pct(cf.after.accuracy)}, ` +
    `mean logit change ${signed(cf.mean_logit_change)}`
  );
}

/** A share as a percentage ("37%"), or "–". */
export function share(value: number | null | undefined): string {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
}

/** The site column: "all sites" for the pooled row, "(none)" for subjects without a site. */
export function siteName(site: string | null | undefined): string {
  if (site === null || site === undefined) return "all sites";
  return site === "" ? "(none)" : site;
}

/** Parses six numbers (x0 y0 z0 x1 y1 z1, mm) into a box; an error message when it cannot. */
export function parseBox(values: readonly string[]): { box: number[][] } | { error: string } {
  if (values.length !== 6) return { error: "A box needs six numbers." };
  const numbers = values.map((v) => (v.trim() === "" ? Number.NaN : Number(v)));
  if (numbers.some((n) => !Number.isFinite(n))) return { error: "Every corner coordinate must be a number (mm)." };
  const box = [numbers.slice(0, 3), numbers.slice(3)];
  if (box[0].some((v, i) => v === box[1][i])) return { error: "The two corners must differ along x, y and z." };
  return { box };
}

/** The legend of a cohort map: the mean keeps the maps' meaning, the t-map is a statistic. */
export function cohortLegend(which: CohortWhich, n: number) {
  if (which === "t") {
    return {
      positive: "t > 0: pathological in the group",
      negative: "t < 0: healthy in the group",
      description: `One-sample t statistic over ${n} subjects' maps (H0: mean relevance 0).`,
    };
  }
  return {
    positive: "mean pathological (+)",
    negative: "mean healthy (−)",
    description: `Mean signed relevance over ${n} subjects' maps: red pushes towards pathological, blue towards healthy.`,
  };
}

/** Numbers a reader can quote from a cohort map's stats ("t from −3.1 to 4.2"). */
export function statsRange(stats: Record<string, unknown> | undefined, which: CohortWhich): string {
  const s = (stats?.[which] ?? {}) as { min?: number; max?: number };
  return `${which === "t" ? "t" : "mean"} from ${formatNumber(s.min)} to ${formatNumber(s.max)}`;
}

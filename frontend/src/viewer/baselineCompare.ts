// "Compare baselines": one subject's maps of one method across the baselines zero, blurred and
// healthy mean. Finds the maps that exist (same run, subject, method and other parameters) and
// names the ones to queue; the viewer queues them and opens the compare page on all of them.
import type { Attribution } from "../api/types";
import { BASELINES, type BaselineName, usesBaseline } from "./methodParams";

/** Method used for the comparison: the map's own when it has a baseline, else Integrated Gradients. */
export function comparisonMethod(attribution: Pick<Attribution, "method">): string {
  return usesBaseline(attribution.method) ? attribution.method : "integrated_gradients";
}

export interface BaselinePlan {
  method: string;
  /** The parameters every map of the comparison shares (all but the baseline). */
  params: Record<string, unknown>;
  /** Existing maps, by baseline (queued, running or done; failed ones are asked for again). */
  existing: Partial<Record<BaselineName, number>>;
  /** Baselines with no map yet, to queue. */
  missing: BaselineName[];
}

function sameParams(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  keys.delete("baseline");
  // blur_sigma matters only for the blurred baseline; the worker stores its default otherwise.
  keys.delete("blur_sigma");
  return [...keys].every((k) => JSON.stringify(a[k]) === JSON.stringify(b[k]));
}

/**
 * The maps a comparison needs: `current` is the map shown, `maps` the subject's other maps.
 * The newest usable map per baseline is taken.
 */
export function planBaselineComparison(
  current: Pick<Attribution, "id" | "run_id" | "subject_id" | "method" | "params">,
  maps: readonly Pick<Attribution, "id" | "run_id" | "subject_id" | "method" | "params" | "status">[],
): BaselinePlan {
  const method = comparisonMethod(current);
  const params: Record<string, unknown> =
    method === current.method ? { ...(current.params ?? {}) } : {};
  delete params.baseline;
  const existing: Partial<Record<BaselineName, number>> = {};
  const candidates = [...maps].sort((a, b) => b.id - a.id);
  for (const map of candidates) {
    if (map.run_id !== current.run_id || map.subject_id !== current.subject_id) continue;
    if (map.method !== method || map.status === "failed" || map.status === "cancelled") continue;
    const given = map.params ?? {};
    if (!sameParams(given, params)) continue;
    const baseline = String(given.baseline ?? "zero") as BaselineName;
    if (BASELINES.includes(baseline) && existing[baseline] === undefined) existing[baseline] = map.id;
  }
  const missing = BASELINES.filter((b) => existing[b] === undefined);
  return { method, params, existing, missing };
}

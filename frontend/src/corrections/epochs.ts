// Epoch maps of watch subjects and corrected-subject metrics: pure helpers for the components.
import type { CorrectedTarget, EpochMap } from "../api/types";
import type { Series } from "../charts/curves";

/** One series per watch subject: a stats value (default the lesion relevance mass) by epoch. */
export function watchSeries(
  maps: readonly EpochMap[],
  names: ReadonlyMap<number, string> = new Map(),
  key = "lesion_mass",
): Series[] {
  const bySubject = new Map<number, Map<number, number>>();
  for (const m of maps) {
    const value = m.stats?.[key];
    if (typeof value !== "number" || !Number.isFinite(value)) continue;
    let points = bySubject.get(m.subject_id);
    if (!points) bySubject.set(m.subject_id, (points = new Map()));
    points.set(m.epoch, value);
  }
  return [...bySubject.entries()]
    .sort(([a], [b]) => a - b)
    .map(([subject, points]) => ({
      name: names.get(subject) ?? `subject ${subject}`,
      points: [...points.entries()].sort(([a], [b]) => a - b).map(([x, y]) => ({ x, y })),
    }));
}

/** The epochs stored for one subject, ascending. */
export function epochsOf(maps: readonly EpochMap[], subjectId: number): EpochMap[] {
  return maps.filter((m) => m.subject_id === subjectId).sort((a, b) => a.epoch - b.epoch);
}

/** The value range of a stored map, for the viewer's default thresholds (null when unknown). */
export function mapRange(map: EpochMap): { min: number; max: number } | null {
  const min = map.stats?.min;
  const max = map.stats?.max;
  return typeof min === "number" && typeof max === "number" ? { min, max } : null;
}

export interface SideMetrics {
  lesion_mass: number | null;
  dice_top5: number | null;
  pointing_game: number | null;
}

/** The lesion metrics of one side ("before": the earlier run, "after": the corrected run). */
export function sideMetrics(target: CorrectedTarget, side: "before" | "after"): SideMetrics | null {
  const raw = (target.metrics as Record<string, unknown>)[side];
  if (!raw || typeof raw !== "object") return null;
  const read = (name: string): number | null => {
    const v = (raw as Record<string, unknown>)[name];
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  };
  return { lesion_mass: read("lesion_mass"), dice_top5: read("dice_top5"), pointing_game: read("pointing_game") };
}

/** Reviewer names of a merged target, in review order, without repeats. */
export function reviewers(target: CorrectedTarget): string[] {
  const names = target.provenance.map((p) => String((p as Record<string, unknown>).reviewer ?? "?"));
  return [...new Set(names)];
}

/** The earlier run's reviewed map and the corrected run's map by the same method, if stored. */
export function sideBySideMaps(target: CorrectedTarget): number[] {
  const ids = (target.metrics as Record<string, unknown>).attribution_ids as Record<string, unknown> | undefined;
  const before = ids?.before;
  const after = ids?.after;
  return typeof before === "number" && typeof after === "number" ? [before, after] : [];
}

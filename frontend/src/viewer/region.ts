// "Why is this segmented?": the region specs a segmentation run's maps explain
// (attrivue_core/configs.py RegionSpec), built from the viewer's crosshair, and their labels.
import type { Run } from "../api/types";

export type Triple = [number, number, number];

export type RegionSpec =
  | { kind: "whole" }
  | { kind: "component"; component: number }
  | { kind: "point"; mm: Triple }
  | { kind: "box"; mm_min: Triple; mm_max: Triple };

/** Whether a run segments (its maps explain regions of its output). */
export function isSegmentationRun(run: Pick<Run, "config"> | null | undefined): boolean {
  return (run?.config as { task?: unknown } | undefined)?.task === "segmentation";
}

/** The predicted lesion under the crosshair (the job resolves it to a component). */
export function pointRegion(mm: Triple): RegionSpec {
  return { kind: "point", mm: [mm[0], mm[1], mm[2]] };
}

/** A box of half-size `half` mm centred on the crosshair. */
export function boxRegion(mm: Triple, half: number): RegionSpec {
  if (!(half > 0) || !Number.isFinite(half)) throw new Error("The box half-size must be a positive number of mm.");
  return {
    kind: "box",
    mm_min: [mm[0] - half, mm[1] - half, mm[2] - half],
    mm_max: [mm[0] + half, mm[1] + half, mm[2] + half],
  };
}

/** The box spanned by two corners (e.g. two crosshair positions), in either order. */
export function cornerBox(a: Triple, b: Triple): RegionSpec {
  return {
    kind: "box",
    mm_min: [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.min(a[2], b[2])],
    mm_max: [Math.max(a[0], b[0]), Math.max(a[1], b[1]), Math.max(a[2], b[2])],
  };
}

/** Words for a stored region (AttributionPublic.region), with the component the job resolved. */
export function describeRegion(region: unknown, stats?: Record<string, unknown> | null): string {
  const r = region as Partial<{ kind: string; component: number; mm: number[]; mm_min: number[]; mm_max: number[] }> | null;
  if (!r || !r.kind) return "";
  const resolved = typeof stats?.component === "number" ? ` (component ${stats.component})` : "";
  const fmt = (v: number[] | undefined) => (v ?? []).map((x) => x.toFixed(1)).join(", ");
  switch (r.kind) {
    case "whole":
      return "whole predicted mask";
    case "component":
      return `predicted lesion ${r.component}`;
    case "point":
      return `predicted lesion at (${fmt(r.mm)}) mm${resolved}`;
    case "box":
      return `box (${fmt(r.mm_min)}) to (${fmt(r.mm_max)}) mm`;
    default:
      return r.kind;
  }
}

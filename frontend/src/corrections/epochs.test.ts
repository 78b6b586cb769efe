import { describe, expect, it } from "vitest";
import type { CorrectedTarget, EpochMap } from "../api/types";
import { epochsOf, mapRange, reviewers, sideBySideMaps, sideMetrics, watchSeries } from "./epochs";

const map = (subject_id: number, epoch: number, stats: Record<string, unknown>): EpochMap => ({
  id: subject_id * 100 + epoch,
  subject_id,
  epoch,
  method: "integrated_gradients",
  scale: 1,
  shape: [2, 2, 2],
  stats,
});

describe("watch subjects", () => {
  it("plots the lesion mass of each subject by epoch, skipping undefined values", () => {
    const maps = [map(3, 2, { lesion_mass: 0.5 }), map(3, 1, { lesion_mass: 0.2 }), map(4, 1, { lesion_mass: null })];
    const series = watchSeries(maps, new Map([[3, "sub-3"]]));
    expect(series).toEqual([{ name: "sub-3", points: [{ x: 1, y: 0.2 }, { x: 2, y: 0.5 }] }]);
  });

  it("orders a subject's epochs and reads the range for thresholds", () => {
    const maps = [map(3, 2, { min: -1, max: 2 }), map(3, 1, {}), map(4, 1, {})];
    expect(epochsOf(maps, 3).map((m) => m.epoch)).toEqual([1, 2]);
    expect(mapRange(maps[0])).toEqual({ min: -1, max: 2 });
    expect(mapRange(maps[1])).toBeNull();
  });
});

describe("corrected subjects", () => {
  const target = {
    provenance: [{ reviewer: "a" }, { reviewer: "b" }, { reviewer: "a" }],
    metrics: { before: { lesion_mass: 0.1, dice_top5: null, pointing_game: 0 }, after: "junk" },
  } as unknown as CorrectedTarget;

  it("reads each side's metrics defensively", () => {
    expect(sideMetrics(target, "before")).toEqual({ lesion_mass: 0.1, dice_top5: null, pointing_game: 0 });
    expect(sideMetrics(target, "after")).toBeNull();
  });

  it("links both runs' maps only when both are stored", () => {
    expect(sideBySideMaps(target)).toEqual([]);
    const both = { ...target, metrics: { attribution_ids: { before: 3, after: 9 } } } as unknown as CorrectedTarget;
    expect(sideBySideMaps(both)).toEqual([3, 9]);
  });

  it("lists reviewers once, in review order", () => {
    expect(reviewers(target)).toEqual(["a", "b"]);
  });
});

import { describe, expect, it } from "vitest";
import { boxRegion, cornerBox, describeRegion, isSegmentationRun, pointRegion } from "./region";

describe("region specs", () => {
  it("recognises segmentation runs", () => {
    expect(isSegmentationRun({ config: { task: "segmentation" } })).toBe(true);
    expect(isSegmentationRun({ config: { network: "small_cnn" } })).toBe(false);
    expect(isSegmentationRun(null)).toBe(false);
  });

  it("builds point and box regions around the crosshair", () => {
    expect(pointRegion([1, -2, 3])).toEqual({ kind: "point", mm: [1, -2, 3] });
    expect(boxRegion([10, 0, -5], 4)).toEqual({ kind: "box", mm_min: [6, -4, -9], mm_max: [14, 4, -1] });
    expect(() => boxRegion([0, 0, 0], 0)).toThrow(/positive/);
    expect(cornerBox([5, -1, 2], [1, 3, 2])).toEqual({ kind: "box", mm_min: [1, -1, 2], mm_max: [5, 3, 2] });
  });

  it("describes stored regions, with the resolved component", () => {
    expect(describeRegion({ kind: "whole" })).toBe("whole predicted mask");
    expect(describeRegion({ kind: "point", mm: [1, 2, 3] }, { component: 2 })).toBe(
      "predicted lesion at (1.0, 2.0, 3.0) mm (component 2)",
    );
    expect(describeRegion(null)).toBe("");
  });
});

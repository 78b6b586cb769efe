import { describe, expect, it } from "vitest";
import { CURVE_GROUPS, INSTRUMENTATION_METRICS, groupsWithData, testMetrics } from "./metricGroups";

describe("testMetrics", () => {
  it("keeps numeric test_ metrics and splits classification from attribution", () => {
    expect(
      testMetrics({ test_auroc: 0.9, test_attr_auroc: 0.7, test_lesion_mass: 0.4, val_auroc: 0.8, test_note: "x", test_accuracy: 1 }),
    ).toEqual({
      classification: [["test_accuracy", 1], ["test_auroc", 0.9]],
      attribution: [["test_attr_auroc", 0.7], ["test_lesion_mass", 0.4]],
    });
  });

  it("counts a segmentation run's Dice and lesion detection as task metrics, not attribution", () => {
    expect(testMetrics({ test_dice: 0.6, test_lesion_f1: 0.5, test_attr_dice: 0.2 })).toEqual({
      classification: [["test_dice", 0.6], ["test_lesion_f1", 0.5]],
      attribution: [["test_attr_dice", 0.2]],
    });
  });
});

describe("instrumentation curves", () => {
  // The names worker/tasks/train.py stores per epoch (grad_norm_* and _instrumentation()).
  const stored = [
    "grad_norm_c",
    "grad_norm_a",
    "grad_norm_total",
    "grad_ratio",
    "grad_cosine",
    "grad_weight_a",
    "attribution_abs_mean",
    "attribution_seconds",
    "step_seconds",
    "attribution_share",
    "clip_fraction",
  ];

  it("draws every stored instrumentation metric in exactly one chart", () => {
    expect([...INSTRUMENTATION_METRICS].sort()).toEqual([...stored].sort());
    for (const name of stored) {
      expect(CURVE_GROUPS.filter((g) => g.names.includes(name))).toHaveLength(1);
    }
  });

  it("keeps quantities of different scales apart", () => {
    const chartOf = (name: string) => CURVE_GROUPS.find((g) => g.names.includes(name))?.title;
    expect(chartOf("grad_ratio")).toBe(chartOf("grad_cosine"));
    expect(chartOf("grad_ratio")).not.toBe(chartOf("grad_norm_a"));
    expect(chartOf("attribution_share")).not.toBe(chartOf("attribution_seconds"));
    expect(chartOf("attribution_abs_mean")).not.toBe(chartOf("loss_a"));
    expect(chartOf("loss_c")).not.toBe(chartOf("loss_a"));
    expect(chartOf("loss_c")).toBe(chartOf("val_loss"));
  });

  it("draws only the groups with data: an L_C-only run without probe has no ratio chart", () => {
    const titles = groupsWithData(["loss_c", "grad_norm_c", "step_seconds", "val_auroc"]).map((g) => g.title);
    expect(titles).toContain("Gradient norms");
    expect(titles).toContain("Training time per epoch (s)");
    expect(titles.some((t) => t.includes("ratio"))).toBe(false);
    const probed = groupsWithData(["grad_ratio", "attribution_share"]).map((g) => g.title);
    expect(probed).toHaveLength(2);
  });
});

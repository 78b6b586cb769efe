import { describe, expect, it } from "vitest";
import { testMetrics } from "./metricGroups";

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

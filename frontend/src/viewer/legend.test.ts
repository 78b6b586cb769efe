import { describe, expect, it } from "vitest";
import { relevanceLegend } from "./legend";

describe("relevanceLegend", () => {
  it("says pathological and healthy for classification runs and for unknown runs", () => {
    for (const config of [{ task: "classification" }, {}, null, undefined]) {
      const legend = relevanceLegend(config, "EDSS");
      expect(legend.positive).toBe("pathological (+)");
      expect(legend.negative).toBe("healthy (−)");
    }
  });

  it("speaks of the explained region's logits for segmentation runs", () => {
    const legend = relevanceLegend({ task: "segmentation" });
    expect(legend.positive).toMatch(/raises the region/);
    expect(legend.description).toMatch(/^Segmentation run/);
  });

  it("names the predicted target for regression runs", () => {
    const legend = relevanceLegend({ task: "regression" }, " EDSS ");
    expect(legend.positive).toBe("raises predicted EDSS (+)");
    expect(legend.negative).toBe("lowers predicted EDSS (−)");
    expect(legend.description).toContain("red raises the predicted EDSS");
  });

  it("falls back to 'target' when the dataset names none", () => {
    expect(relevanceLegend({ task: "regression" }, "").positive).toBe("raises predicted target (+)");
    expect(relevanceLegend({ task: "regression" }, null).negative).toBe("lowers predicted target (−)");
  });
});

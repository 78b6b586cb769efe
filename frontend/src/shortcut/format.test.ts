import { describe, expect, it } from "vitest";
import { cohortLegend, counterfactualSummary, fixed2, flagSentence, parseBox, share, signed, siteName, statsRange } from "./format";

describe("flagSentence", () => {
  it("is null without flags and names every reason with its numbers", () => {
    expect(flagSentence({ flags: [] })).toBeNull();
    expect(flagSentence(null)).toBeNull();
    const sentence = flagSentence({
      flags: [
        { kind: "region", reason: "erasing the box drops the AUROC from 1.00 to 0.25" },
        { kind: "site", reason: "site A has AUROC 1.00, the other sites together 0.50" },
      ],
    });
    expect(sentence).toBe(
      "This run may rely on a shortcut: erasing the box drops the AUROC from 1.00 to 0.25; " +
        "site A has AUROC 1.00, the other sites together 0.50.",
    );
  });
});

describe("numbers", () => {
  it("writes AUROCs with two decimals and signed logit changes with a real minus", () => {
    expect(fixed2(0.8)).toBe("0.80");
    expect(fixed2(null)).toBe("n/a");
    expect(signed(-2.314)).toBe("\u22122.31");
    expect(signed(0.5)).toBe("+0.50");
    expect(signed(undefined)).toBe("–");
    expect(share(0.374)).toBe("37%");
    expect(share(null)).toBe("–");
  });

  it("summarises a counterfactual before and after", () => {
    const summary = counterfactualSummary({
      region: "box",
      fill: "mean",
      n: 8,
      n_without_region: 0,
      before: { auroc: 1, accuracy: 1 },
      after: { auroc: 0.25, accuracy: 0.5 },
      mean_logit_change: -3.5,
      mean_logit_change_pathological: -7,
      mean_logit_change_healthy: 0,
    });
    expect(summary).toBe("AUROC 1.00 \u2192 0.25, accuracy 100% \u2192 50%, mean logit change \u22123.50");
  });

  it("names the pooled row and subjects without a site", () => {
    expect(siteName(null)).toBe("all sites");
    expect(siteName("")).toBe("(none)");
    expect(siteName("B")).toBe("B");
  });

  it("reads a cohort map's range from its stats", () => {
    expect(statsRange({ t: { min: -3.1, max: 4.25 } }, "t")).toBe("t from -3.1 to 4.25");
    expect(statsRange({}, "mean")).toBe("mean from – to –");
  });
});

describe("parseBox", () => {
  it("takes six numbers as two corners", () => {
    expect(parseBox(["-10", "0", "5", "10", "20", "30.5"])).toEqual({
      box: [
        [-10, 0, 5],
        [10, 20, 30.5],
      ],
    });
  });
  it("refuses missing, non-numeric and flat boxes with a reason", () => {
    expect(parseBox(["1", "2", "3"])).toEqual({ error: "A box needs six numbers." });
    expect(parseBox(["1", "x", "3", "4", "5", "6"])).toHaveProperty("error", "Every corner coordinate must be a number (mm).");
    expect(parseBox(["1", "", "3", "4", "5", "6"])).toHaveProperty("error");
    expect(parseBox(["1", "2", "3", "1", "5", "6"])).toHaveProperty("error", "The two corners must differ along x, y and z.");
  });
});

describe("cohortLegend", () => {
  it("labels the t-map as a statistic and the mean as relevance", () => {
    expect(cohortLegend("t", 5).description).toContain("t statistic over 5 subjects");
    expect(cohortLegend("t", 5).positive).toMatch(/^t > 0/);
    expect(cohortLegend("mean", 3).positive).toBe("mean pathological (+)");
  });
});

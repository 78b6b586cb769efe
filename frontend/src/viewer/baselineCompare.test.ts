import { describe, expect, it } from "vitest";
import { comparisonMethod, planBaselineComparison } from "./baselineCompare";

const base = { run_id: 1, subject_id: 7 };
const ig = (id: number, params: Record<string, unknown>, status = "succeeded") => ({
  ...base,
  id,
  method: "integrated_gradients",
  params,
  status,
});

describe("planBaselineComparison", () => {
  it("finds the existing maps by baseline and names the missing ones", () => {
    const current = ig(5, { baseline: "zero", steps: 32 });
    const maps = [current, ig(6, { baseline: "blur", blur_sigma: 4, steps: 32 }), ig(8, { baseline: "blur", steps: 64 })];
    const plan = planBaselineComparison(current, maps);
    expect(plan.method).toBe("integrated_gradients");
    expect(plan.existing).toEqual({ zero: 5, blur: 6 });
    expect(plan.missing).toEqual(["healthy_mean"]);
    expect(plan.params).toEqual({ steps: 32 });
  });

  it("skips failed maps, other runs and other subjects, and takes the newest", () => {
    const current = ig(5, { baseline: "zero" });
    const maps = [
      current,
      ig(9, { baseline: "healthy_mean" }, "failed"),
      { ...ig(10, { baseline: "blur" }), run_id: 2 },
      { ...ig(11, { baseline: "blur" }), subject_id: 8 },
      ig(12, { baseline: "zero" }),
    ];
    const plan = planBaselineComparison(current, maps);
    expect(plan.existing).toEqual({ zero: 12 });
    expect(plan.missing).toEqual(["blur", "healthy_mean"]);
  });

  it("compares Integrated Gradients with defaults for a method without a baseline", () => {
    const current = { ...base, id: 3, method: "smoothgrad", params: { n_samples: 16 }, status: "succeeded" };
    expect(comparisonMethod(current)).toBe("integrated_gradients");
    const plan = planBaselineComparison(current, [current, ig(4, {})]);
    expect(plan.params).toEqual({});
    expect(plan.existing).toEqual({ zero: 4 });
  });
});

import { describe, expect, it } from "vitest";
import {
  baselineOutputOf,
  baselineText,
  formatPercent,
  methodParams,
  pointsUsedOf,
  sampleSpreadOf,
  uncertaintyOf,
  uncertaintyText,
} from "./methodParams";

describe("method parameters", () => {
  it("lists what integrated gradients read, defaults filled in and marked", () => {
    const rows = methodParams("integrated_gradients", { steps: 16, internal_batch_size: 8 });
    expect(rows?.map((r) => r.key)).toEqual(["steps", "riemann_method", "internal_batch_size"]);
    expect(rows?.find((r) => r.key === "steps")).toMatchObject({ value: "16", isDefault: false });
    expect(rows?.find((r) => r.key === "riemann_method")).toMatchObject({ value: "gausslegendre", isDefault: true });
  });

  it("shows the target delta and the cap instead of fixed steps for IG to a requested accuracy", () => {
    const rows = methodParams("integrated_gradients", { target_delta: 0.01, max_points: 33 });
    expect(rows?.map((r) => r.key)).toEqual(["internal_batch_size", "target_delta", "max_points"]);
    expect(rows?.find((r) => r.key === "target_delta")?.value).toBe("1.0 % of F(x) − F(x′)");
    expect(rows?.find((r) => r.key === "max_points")).toMatchObject({ value: "33", isDefault: false });
    const fixed = methodParams("integrated_gradients", { steps: 8, target_delta: null });
    expect(fixed?.map((r) => r.key)).not.toContain("target_delta");
  });

  it("reads the points an IG map used, and whether it reached its target", () => {
    expect(pointsUsedOf({ ig_points: 17, ig_target_reached: 1 })).toEqual({ points: 17, reached: true });
    expect(pointsUsedOf({ ig_points: 129, ig_target_reached: 0 })).toEqual({ points: 129, reached: false });
    expect(pointsUsedOf({ ig_points: 32 })).toEqual({ points: 32, reached: null });
    expect(pointsUsedOf({ min: 0 })).toBeNull();
  });

  it("shows the blur only with a blurred baseline, and the baseline in words", () => {
    expect(baselineText("integrated_gradients", {})).toBe("zero image");
    expect(baselineText("deeplift", { baseline: "blur" })).toBe("blurred input (σ 4 voxels)");
    expect(methodParams("deeplift", { baseline: "blur", blur_sigma: 2 })?.map((r) => r.value)).toEqual(["2"]);
    expect(methodParams("deeplift", {})).toEqual([]);
  });

  it("names the healthy baselines and where Expected Gradients draws its references", () => {
    expect(baselineText("integrated_gradients", { baseline: "healthy_mean" })).toBe("mean of the healthy training subjects");
    expect(baselineText("occlusion", { baseline: "healthy_mean" })).toBe("mean of the healthy training subjects");
    expect(baselineText("gradient_shap", { references: "healthy" })).toBe("healthy training subjects (references)");
    expect(baselineText("gradient_shap", {})).toBe("zero image + noise (σ 0.15) (references)");
    expect(methodParams("gradient_shap", { references: "healthy" })?.map((r) => r.key)).not.toContain("references");
  });

  it("reads the spread over samples only from a stochastic map's stats", () => {
    expect(sampleSpreadOf({ uncertainty_mean_sd: 0.2, uncertainty_low_agreement_share: 0.1 })).toEqual({
      meanSd: 0.2,
      lowAgreementShare: 0.1,
    });
    expect(sampleSpreadOf({ min: -1, max: 1 })).toBeNull();
    expect(sampleSpreadOf(null)).toBeNull();
  });

  it("has no baseline and no parameters for saliency, and drops parameters a method does not read", () => {
    expect(baselineText("saliency", { baseline: "zero" })).toBeNull();
    expect(methodParams("saliency", { steps: 32 })).toEqual([]);
    expect(methodParams("unknown_method", {})).toBeNull();
  });

  it("reports the completeness gap only where the map has one", () => {
    expect(uncertaintyOf({ convergence_delta: null, stats: {} })).toBeNull();
    const u = uncertaintyOf({ convergence_delta: 0.002, stats: { relative_delta: 0.004 } });
    expect(u).toEqual({ delta: 0.002, relative: 0.004 });
    expect(uncertaintyText(u!)).toBe("δ 0.002 (0.40 % of F(x) − F(x′))");
    expect(formatPercent(0.25)).toBe("25 %");
  });

  it("warns when the model does not find the baseline neutral, with what the map sums to", () => {
    expect(baselineOutputOf({ logit: 1, stats: {} })).toBeNull();
    const neutral = baselineOutputOf({ logit: 3.2, stats: { baseline_logit: -0.4 } });
    expect(neutral).toMatchObject({ baselineLogit: -0.4, warning: null });
    expect(neutral!.total).toBeCloseTo(3.6);
    expect(neutral!.probability).toBeCloseTo(1 / (1 + Math.exp(0.4)));
    // The constrained network of docs/experiments.md ("The baseline's logit"): F(0) = 17.6.
    const far = baselineOutputOf({ logit: -2, stats: { baseline_logit: 17.6 } });
    expect(far!.warning).toContain("calls the baseline pathological (p = 1.00)");
    expect(far!.warning).toContain("F(x) − F(x′) = -19.6, blue overall");
    const low = baselineOutputOf({ logit: 4, stats: { baseline_logit: -3 } });
    expect(low!.warning).toContain("calls the baseline healthy (p = 0.05)");
    expect(low!.warning).toContain("= 7, red overall");
    // Just inside the neutral band (p = 0.1-0.9): no warning.
    expect(baselineOutputOf({ logit: 0, stats: { baseline_logit: 2.1 } })!.warning).toBeNull();
  });
});

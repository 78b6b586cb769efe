import { describe, expect, it } from "vitest";
import { baselineText, formatPercent, methodParams, uncertaintyOf, uncertaintyText } from "./methodParams";

describe("method parameters", () => {
  it("lists what integrated gradients read, defaults filled in and marked", () => {
    const rows = methodParams("integrated_gradients", { steps: 16, internal_batch_size: 8 });
    expect(rows?.map((r) => r.key)).toEqual(["steps", "riemann_method", "internal_batch_size"]);
    expect(rows?.find((r) => r.key === "steps")).toMatchObject({ value: "16", isDefault: false });
    expect(rows?.find((r) => r.key === "riemann_method")).toMatchObject({ value: "gausslegendre", isDefault: true });
  });

  it("shows the blur only with a blurred baseline, and the baseline in words", () => {
    expect(baselineText("integrated_gradients", {})).toBe("zero image");
    expect(baselineText("deeplift", { baseline: "blur" })).toBe("blurred input (σ 4 voxels)");
    expect(methodParams("deeplift", { baseline: "blur", blur_sigma: 2 })?.map((r) => r.value)).toEqual(["2"]);
    expect(methodParams("deeplift", {})).toEqual([]);
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
});

import { describe, expect, it } from "vitest";
import { formatNumber, formatPercent, summariseMetrics } from "./format";

describe("formatNumber", () => {
  it("uses three significant digits and exponents for tiny values", () => {
    expect(formatNumber(0.123456)).toBe("0.123");
    expect(formatNumber(12.3456)).toBe("12.3");
    expect(formatNumber(0.0000123)).toBe("1.23e-5");
    expect(formatNumber(-0.5)).toBe("-0.5");
    expect(formatNumber(0)).toBe("0");
    expect(formatNumber(null)).toBe("–");
  });
});

describe("formatPercent", () => {
  it("clamps to 0..100%", () => {
    expect(formatPercent(0.456)).toBe("46%");
    expect(formatPercent(2)).toBe("100%");
  });
});

describe("summariseMetrics", () => {
  it("puts test AUROC first and skips non-numbers", () => {
    expect(summariseMetrics({ loss: 0.3, note: "x", test_auroc: 0.91234, val_auroc: 0.8 })).toEqual([
      "test auroc 0.912",
      "val auroc 0.8",
      "loss 0.3",
    ]);
    expect(summariseMetrics(null)).toEqual([]);
  });
});

import { describe, expect, it } from "vitest";
import { DEFAULT_COMPARE_SETTINGS, panelWindows, peaksOf, scaleNote, sharedPeaks } from "./compareScale";

describe("compare colour scale", () => {
  const strong = { min: -0.6, max: 1.0 };
  const weak = { min: -0.15, max: 0.25 };
  const shared = sharedPeaks([strong, weak, null]);

  it("shares the peaks of the strongest map of each sign", () => {
    expect(shared).toEqual({ positive: 1.0, negative: 0.6 });
    expect(peaksOf(null)).toEqual({ positive: 0, negative: 0 });
  });

  it("puts threshold and full colour at the same values in every panel by default", () => {
    const a = panelWindows(DEFAULT_COMPARE_SETTINGS, peaksOf(strong), shared);
    const b = panelWindows(DEFAULT_COMPARE_SETTINGS, peaksOf(weak), shared);
    expect(a).toEqual(b);
    expect(a.positive?.max).toBe(1.0);
    expect(a.positive?.min).toBeCloseTo(0.15);
    expect(a.negative?.max).toBe(0.6);
  });

  it("fits each panel to its own peaks on request", () => {
    const settings = { ...DEFAULT_COMPARE_SETTINGS, scaleMode: "panel" as const };
    const b = panelWindows(settings, peaksOf(weak), shared);
    expect(b.positive?.max).toBe(0.25);
    expect(b.negative?.min).toBeCloseTo(0.15 * 0.15);
  });

  it("gives no window to a sign the map does not have", () => {
    const positiveOnly = panelWindows(DEFAULT_COMPARE_SETTINGS, peaksOf({ min: 0, max: 0.5 }), shared);
    expect(positiveOnly.negative).toBeNull();
    expect(positiveOnly.positive?.max).toBe(1.0);
  });

  it("says which scale is in use", () => {
    expect(scaleNote("shared", 3)).toMatch(/One colour scale for all 3 panels/);
    expect(scaleNote("panel", 3)).toMatch(/not comparable/);
  });
});

import { describe, expect, it } from "vitest";
import {
  DEFAULT_THRESHOLD_FRACTION,
  NEGATIVE_COLORMAP,
  POSITIVE_COLORMAP,
  baseVolumeOptions,
  clampWindow,
  defaultThresholds,
  lesionVolumeOptions,
  peaksFromStats,
  relevanceVolumeOptions,
  stepWindow,
  toCalibration,
  withHiddenSigns,
} from "./overlay";

describe("defaultThresholds", () => {
  it("hides each sign below a fraction of its own peak and saturates at the peak", () => {
    const t = defaultThresholds({ min: -0.5, max: 2 });
    expect(t.positive).toEqual({ min: 2 * DEFAULT_THRESHOLD_FRACTION, max: 2 });
    expect(t.negative).toEqual({ min: 0.5 * DEFAULT_THRESHOLD_FRACTION, max: 0.5 });
  });

  it("keeps the default fraction between 10% and 20%", () => {
    expect(DEFAULT_THRESHOLD_FRACTION).toBeGreaterThanOrEqual(0.1);
    expect(DEFAULT_THRESHOLD_FRACTION).toBeLessThanOrEqual(0.2);
  });

  it("has no negative window for a map with only positive values", () => {
    const t = defaultThresholds({ min: 0, max: 3 });
    expect(t.positive?.min).toBeCloseTo(3 * DEFAULT_THRESHOLD_FRACTION);
    expect(t.positive?.max).toBe(3);
    expect(t.negative).toBeNull();
  });

  it("has no positive window for a map with only negative values", () => {
    const t = defaultThresholds({ min: -4, max: 0 }, 0.1);
    expect(t.positive).toBeNull();
    expect(t.negative?.min).toBeCloseTo(0.4);
    expect(t.negative?.max).toBe(4);
  });

  it("treats an all-zero or non-finite map as empty", () => {
    expect(defaultThresholds({ min: 0, max: 0 })).toEqual({ positive: null, negative: null });
    expect(defaultThresholds({ min: Number.NaN, max: Number.NaN })).toEqual({
      positive: null,
      negative: null,
    });
  });

  it("ignores a positive minimum and a negative maximum", () => {
    // min > 0 means there is no negative part; max < 0 means no positive part.
    expect(defaultThresholds({ min: 0.2, max: 1 }).negative).toBeNull();
    expect(defaultThresholds({ min: -1, max: -0.2 }).positive).toBeNull();
  });
});

describe("peaksFromStats", () => {
  it("returns magnitudes, zero for an absent sign", () => {
    expect(peaksFromStats({ min: -0.3, max: 1.2 })).toEqual({ positive: 1.2, negative: 0.3 });
    expect(peaksFromStats({ min: 0.1, max: 1 })).toEqual({ positive: 1, negative: 0 });
  });
});

describe("toCalibration", () => {
  it("gives positive cal_min < cal_max and mirrored negative cal_minNeg/cal_maxNeg", () => {
    const cal = toCalibration({ positive: { min: 0.2, max: 1 }, negative: { min: 0.1, max: 0.5 } });
    expect(cal).toEqual({ cal_min: 0.2, cal_max: 1, cal_minNeg: -0.1, cal_maxNeg: -0.5 });
    expect(cal.cal_min).toBeGreaterThan(0);
    expect(cal.cal_max).toBeGreaterThan(cal.cal_min);
    expect(cal.cal_minNeg).toBeLessThan(0);
    expect(cal.cal_maxNeg).toBeLessThan(cal.cal_minNeg);
  });

  it("borrows the other sign's window when one sign is absent, keeping the signs right", () => {
    const onlyPositive = toCalibration({ positive: { min: 0.3, max: 2 }, negative: null });
    expect(onlyPositive).toEqual({ cal_min: 0.3, cal_max: 2, cal_minNeg: -0.3, cal_maxNeg: -2 });
    const onlyNegative = toCalibration({ positive: null, negative: { min: 0.4, max: 4 } });
    expect(onlyNegative).toEqual({ cal_min: 0.4, cal_max: 4, cal_minNeg: -0.4, cal_maxNeg: -4 });
  });

  it("stays well formed for an empty map", () => {
    const cal = toCalibration({ positive: null, negative: null });
    expect(cal.cal_min).toBeGreaterThan(0);
    expect(cal.cal_max).toBeGreaterThan(cal.cal_min);
    expect(cal.cal_maxNeg).toBeLessThan(cal.cal_minNeg);
    expect(cal.cal_minNeg).toBeLessThan(0);
  });

  it("clamps a threshold above the saturation below it", () => {
    const cal = toCalibration({ positive: { min: 5, max: 1 }, negative: { min: -1, max: 2 } });
    expect(cal.cal_min).toBeLessThan(cal.cal_max);
    expect(cal.cal_max).toBe(1);
    expect(cal.cal_minNeg).toBeCloseTo(0); // a negative threshold is clamped to zero
    expect(cal.cal_maxNeg).toBe(-2);
  });
});

describe("clampWindow", () => {
  it("keeps 0 <= min < max", () => {
    expect(clampWindow({ min: 0.2, max: 1 })).toEqual({ min: 0.2, max: 1 });
    const w = clampWindow({ min: 3, max: 1 });
    expect(w.min).toBeLessThan(w.max);
    expect(clampWindow({ min: -1, max: 1 }).min).toBe(0);
  });
});

describe("volume options", () => {
  it("loads the MR volume in gray at full opacity", () => {
    expect(baseVolumeOptions("/a/image.nii.gz")).toEqual({
      url: "/a/image.nii.gz",
      name: "image.nii.gz",
      colormap: "gray",
      opacity: 1,
    });
  });

  it("loads the signed map as one volume: red-yellow for positive, blue-light blue for negative", () => {
    const options = relevanceVolumeOptions(
      "/api/v1/attributions/7/map.nii.gz",
      defaultThresholds({ min: -1, max: 2 }, 0.1),
      0.7,
    );
    expect(POSITIVE_COLORMAP).toBe("attrivue_red_yellow");
    expect(NEGATIVE_COLORMAP).toBe("attrivue_blue_lightblue");
    expect(options).toMatchObject({
      url: "/api/v1/attributions/7/map.nii.gz",
      colormap: "attrivue_red_yellow",
      colormapNegative: "attrivue_blue_lightblue",
      opacity: 0.7,
      cal_min: 0.2,
      cal_max: 2,
      cal_minNeg: -0.1,
      cal_maxNeg: -1,
    });
    expect(options.name.endsWith(".nii.gz")).toBe(true);
  });

  it("loads the lesion as a green overlay whose value 2 gets the full colour", () => {
    const options = lesionVolumeOptions("/api/v1/subjects/1/mask.nii.gz?drawing=true");
    expect(options).toEqual({
      url: "/api/v1/subjects/1/mask.nii.gz?drawing=true",
      name: "lesion.nii.gz", // the URL ends in a query, so the name tells NiiVue the format
      colormap: "attrivue_lesion_green",
      opacity: 1,
      cal_min: 1,
      cal_max: 2,
    });
  });
});

describe("hiding a sign and stepping a threshold", () => {
  it("moves a hidden sign's threshold past twice its peak and leaves the other alone", () => {
    const cal = { cal_min: 0.6, cal_max: 4, cal_minNeg: -0.3, cal_maxNeg: -2 };
    const peaks = { positive: 4, negative: 2 };
    expect(withHiddenSigns(cal, { positive: true, negative: true }, peaks)).toEqual(cal);
    const noRed = withHiddenSigns(cal, { positive: false, negative: true }, peaks);
    expect(noRed.cal_min).toBeGreaterThan(2 * peaks.positive - 1e-9);
    expect(noRed.cal_max).toBeGreaterThan(noRed.cal_min);
    expect([noRed.cal_minNeg, noRed.cal_maxNeg]).toEqual([-0.3, -2]);
    const noBlue = withHiddenSigns(cal, { positive: true, negative: false }, peaks);
    expect(noBlue.cal_minNeg).toBeLessThanOrEqual(-2 * peaks.negative);
    expect(noBlue.cal_maxNeg).toBeLessThan(noBlue.cal_minNeg);
    expect([noBlue.cal_min, noBlue.cal_max]).toEqual([0.6, 4]);
  });

  it("steps the threshold by a fraction of the peak within [0, max)", () => {
    expect(stepWindow({ min: 1, max: 4 }, 4, 1, 0.05).min).toBeCloseTo(1.2);
    expect(stepWindow({ min: 1, max: 4 }, 4, -1, 0.05).min).toBeCloseTo(0.8);
    expect(stepWindow({ min: 0.1, max: 4 }, 4, -1, 0.05).min).toBe(0);
    const top = stepWindow({ min: 3.9, max: 4 }, 4, 1, 0.05);
    expect(top.min).toBeLessThan(4);
    expect(top.max).toBe(4);
  });
});

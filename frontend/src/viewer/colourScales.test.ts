import { describe, expect, it } from "vitest";
import {
  COLOUR_SCALES,
  DEFAULT_COLOUR_SCALE,
  allColormaps,
  gradients,
  niivueColormap,
  storedColourScale,
} from "./colourScales";

// NiiVue's makeLut: linear interpolation between the I stops, 256 entries.
function lut(cm: ReturnType<typeof niivueColormap>): number[][] {
  const out: number[][] = [];
  for (let j = 0; j < 256; j++) {
    const i = cm.I.findIndex((stop, k) => j >= stop && j <= cm.I[k + 1]);
    const f = (j - cm.I[i]) / (cm.I[i + 1] - cm.I[i]);
    const at = (xs: number[]) => xs[i] + f * (xs[i + 1] - xs[i]);
    out.push([at(cm.R), at(cm.G), at(cm.B), at(cm.A)]);
  }
  return out;
}

const brightness = ([r, g, b]: number[]) => Math.max(r, g, b);

describe("relevance colour scales", () => {
  it("default: saturated red at the threshold to yellow at the peak, blue to light blue", () => {
    const scale = COLOUR_SCALES[DEFAULT_COLOUR_SCALE];
    expect(scale.positive.atThreshold).toEqual([255, 0, 0]);
    expect(scale.positive.atPeak).toEqual([255, 255, 0]);
    expect(scale.negative.atThreshold).toEqual([0, 0, 255]);
    const [r, g, b] = scale.negative.atPeak;
    expect(b).toBe(255);
    expect(r).toBeGreaterThan(100);
    expect(g).toBeGreaterThan(r);
  });

  for (const scale of Object.values(COLOUR_SCALES)) {
    it(`${scale.id}: below the threshold transparent, above it opaque and never dark`, () => {
      for (const ramp of [scale.positive, scale.negative]) {
        const table = lut(niivueColormap(ramp));
        expect(table[0]).toEqual([255, 255, 255, 0]); // transparent, and white at blob edges
        for (const entry of table.slice(1)) {
          expect(entry[3]).toBe(255);
          expect(brightness(entry)).toBeGreaterThanOrEqual(178);
        }
        // The hue holds along the ramp: the positive stays red/orange-dominant, the negative blue.
        for (const entry of table.slice(1, 240)) {
          const [r, g, b] = entry;
          if (ramp === scale.positive) expect(r).toBeGreaterThan(Math.max(g, b));
          else expect(b).toBeGreaterThan(Math.max(r, g));
        }
      }
    });
  }

  it("registers each ramp once under its own name", () => {
    const names = allColormaps().map(([n]) => n);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toHaveLength(2 * Object.keys(COLOUR_SCALES).length + 1);
  });

  it("draws the colour bar from the same colours", () => {
    const g = gradients(COLOUR_SCALES.statmap);
    expect(g.positive).toBe("linear-gradient(to right, rgb(255,0,0), rgb(255,255,0))");
    expect(g.negative).toContain("rgb(0,0,255))");
  });

  it("reads a stored choice and falls back to the default", () => {
    expect(storedColourScale({ getItem: () => "colourblind" })).toBe("colourblind");
    expect(storedColourScale({ getItem: () => "bogus" })).toBe(DEFAULT_COLOUR_SCALE);
    expect(storedColourScale(null)).toBe(DEFAULT_COLOUR_SCALE);
  });
});

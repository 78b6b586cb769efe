// The relevance colour scales, as NiiVue colormaps and CSS gradients from one table.
//
// The convention of the field's stat-map viewers (FSLeyes, MRIcroGL, nilearn's plot_stat_map):
// positive relevance from a saturated colour at the threshold to a bright one at the peak, no
// dark end, so a faint voxel never looks darker than the MR under it. NiiVue maps the
// threshold to LUT index 1 and the peak to 255 (for the negative part: -threshold to 1,
// -peak to 255); index 0 is what lies below the threshold and stays transparent.
import table from "./viewerColours.json";

export type Rgb = readonly [number, number, number];

/** One sign's ramp: the colour at the threshold and the colour at the peak. */
export interface Ramp {
  /** The NiiVue colormap name it is registered under. */
  name: string;
  atThreshold: Rgb;
  atPeak: Rgb;
  /** The hue in words, for labels ("red", "blue", "orange"). */
  hue: string;
}

export interface ColourScale {
  id: ColourScaleId;
  label: string;
  positive: Ramp;
  negative: Ramp;
}

export type ColourScaleId = "statmap" | "colourblind";

/** NiiVue's colormap table (R, G, B, A, I arrays; I runs from 0 to 255). */
export interface NiivueColormap {
  R: number[];
  G: number[];
  B: number[];
  A: number[];
  I: number[];
}

// The table itself is viewerColours.json, which attrivue_client.notebook mirrors for Jupyter
// (tests/client/test_notebook.py fails when the two differ).
function rgb(value: readonly number[]): Rgb {
  if (value.length !== 3) throw new Error(`viewerColours.json: not an RGB triple: ${String(value)}`);
  return [value[0], value[1], value[2]];
}

function ramp(value: (typeof table.scales)[ColourScaleId]["positive"]): Ramp {
  return { name: value.name, atThreshold: rgb(value.atThreshold), atPeak: rgb(value.atPeak), hue: value.hue };
}

function scale(id: ColourScaleId): ColourScale {
  const entry = table.scales[id];
  return { id, label: entry.label, positive: ramp(entry.positive), negative: ramp(entry.negative) };
}

// Orange against blue in "colourblind": the diverging pair that reads the same with red-green
// colour blindness (no red to confuse with green): Okabe & Ito's orange and sky blue,
// brightened so that each threshold colour has a full channel and never dims the MR under it.
export const COLOUR_SCALES: Record<ColourScaleId, ColourScale> = {
  statmap: scale("statmap"),
  colourblind: scale("colourblind"),
};

export const DEFAULT_COLOUR_SCALE: ColourScaleId = isColourScaleId(table.defaultScale) ? table.defaultScale : "statmap";

export function isColourScaleId(value: unknown): value is ColourScaleId {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(COLOUR_SCALES, value);
}

/**
 * The colour of transparent overlay voxels. NiiVue keeps it in the overlay texture and blends
 * it, unpremultiplied, into the edge of every blob when it interpolates between voxels: black
 * (its colormaps' index 0) draws a dark rim around each blob, white a faint light one.
 */
export const TRANSPARENT_RGB: Rgb = rgb(table.transparentRgb);

/**
 * A ramp as a NiiVue colormap: index 0 transparent (below the threshold), index 1 the
 * threshold colour at full alpha, index 255 the peak colour. No entry is darker than the
 * threshold colour.
 */
export function niivueColormap(ramp: Ramp): NiivueColormap {
  const [r0, g0, b0] = ramp.atThreshold;
  const [r1, g1, b1] = ramp.atPeak;
  const [rt, gt, bt] = TRANSPARENT_RGB;
  return {
    R: [rt, r0, r1],
    G: [gt, g0, g1],
    B: [bt, b0, b1],
    A: [0, 255, 255],
    I: [0, 1, 255],
  };
}

/** The lesion outline's colormap: green, transparent (white) below it; see TRANSPARENT_RGB. */
export const LESION_COLORMAP_NAME = "attrivue_lesion_green";
export const LESION_RGB: Rgb = [0, 255, 0];

/** Every colormap the scales use, to register with NiiVue (addColormap) before loading. */
export function allColormaps(): [string, NiivueColormap][] {
  const lesion = niivueColormap({ name: LESION_COLORMAP_NAME, atThreshold: LESION_RGB, atPeak: LESION_RGB, hue: "green" });
  return [
    ...Object.values(COLOUR_SCALES).flatMap((s) => [
      [s.positive.name, niivueColormap(s.positive)] as [string, NiivueColormap],
      [s.negative.name, niivueColormap(s.negative)] as [string, NiivueColormap],
    ]),
    [LESION_COLORMAP_NAME, lesion],
  ];
}

const css = ([r, g, b]: Rgb) => `rgb(${r},${g},${b})`;

/** CSS gradients for the HTML colour bar: negative runs from its peak (left) to the threshold. */
export function gradients(scale: ColourScale): { positive: string; negative: string } {
  return {
    negative: `linear-gradient(to right, ${css(scale.negative.atPeak)}, ${css(scale.negative.atThreshold)})`,
    positive: `linear-gradient(to right, ${css(scale.positive.atThreshold)}, ${css(scale.positive.atPeak)})`,
  };
}

const STORAGE_KEY = "attrivue.colourScale";

/** The scale the user chose last (in this browser), or the default. */
export function storedColourScale(storage: Pick<Storage, "getItem"> | null = safeStorage()): ColourScaleId {
  const value = storage?.getItem(STORAGE_KEY);
  return isColourScaleId(value) ? value : DEFAULT_COLOUR_SCALE;
}

export function storeColourScale(id: ColourScaleId, storage: Pick<Storage, "setItem"> | null = safeStorage()): void {
  try {
    storage?.setItem(STORAGE_KEY, id);
  } catch {
    // private mode or full storage: the choice lasts for this page only
  }
}

function safeStorage(): Storage | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null;
  }
}

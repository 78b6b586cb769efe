// Pure settings for the signed relevance overlay: thresholds, NiiVue calibration, layer options.
// No WebGL here, so Vitest can check every number.
import type { MapStats } from "../api/types";
import { COLOUR_SCALES, type ColourScaleId, DEFAULT_COLOUR_SCALE, LESION_COLORMAP_NAME } from "./colourScales";
// The numbers shared with the notebook view (attrivue_client.notebook): see colourScales.ts.
import table from "./viewerColours.json";

/** Positive relevance (pathological) is drawn with this NiiVue colormap (red to yellow). */
export const POSITIVE_COLORMAP = COLOUR_SCALES[DEFAULT_COLOUR_SCALE].positive.name;
/** Negative relevance (healthy) is drawn with this NiiVue colormap (blue to light blue). */
export const NEGATIVE_COLORMAP = COLOUR_SCALES[DEFAULT_COLOUR_SCALE].negative.name;
export const BASE_COLORMAP: string = table.baseColormap;

/** Relevance below this fraction of each sign's peak is hidden by default. */
export const DEFAULT_THRESHOLD_FRACTION: number = table.thresholdFraction;
export const DEFAULT_OVERLAY_OPACITY: number = table.overlayOpacity;
/** The lesion outline: (0, 255, 0) at cal_max, transparent white below (colourScales.ts). */
export const LESION_COLORMAP = LESION_COLORMAP_NAME;
/** Outline voxels carry this value, the mask's own lesion value on the drawing URL. */
export const LESION_VALUE = 2;

/**
 * The display window of one sign, as magnitudes: |A| below `min` is hidden, |A| at or above
 * `max` gets the full colour. Always 0 <= min < max.
 */
export interface SignWindow {
  min: number;
  max: number;
}

/** A window per sign; null where the map has no values of that sign. */
export interface RelevanceThresholds {
  positive: SignWindow | null;
  negative: SignWindow | null;
}

/** The four numbers NiiVue reads from a volume with a negative colormap. */
export interface NiivueCalibration {
  cal_min: number;
  cal_max: number;
  /** Negative, nearest zero: the threshold of the negative part. */
  cal_minNeg: number;
  /** Negative, farthest from zero: full negative colour. */
  cal_maxNeg: number;
}

/** Used for a sign with no values at all, so that the calibration stays well formed. */
const EMPTY_WINDOW: SignWindow = { min: 0.5, max: 1 };

function signWindow(peak: number, fraction: number): SignWindow | null {
  if (!Number.isFinite(peak) || peak <= 0) return null;
  return { min: fraction * peak, max: peak };
}

/** Default windows from a map's stats: hide |A| below `fraction` of each sign's peak. */
export function defaultThresholds(
  stats: Pick<MapStats, "min" | "max">,
  fraction: number = DEFAULT_THRESHOLD_FRACTION,
): RelevanceThresholds {
  const f = Math.min(Math.max(fraction, 0), 0.99);
  return {
    positive: signWindow(stats.max, f),
    negative: signWindow(-stats.min, f),
  };
}

/** The peaks the threshold sliders run up to (0 for an absent sign). */
export function peaksFromStats(stats: Pick<MapStats, "min" | "max">): {
  positive: number;
  negative: number;
} {
  return { positive: Math.max(stats.max, 0), negative: Math.max(-stats.min, 0) };
}

/** Clamps a window so that 0 <= min < max. */
export function clampWindow(window: SignWindow): SignWindow {
  const max = Math.max(window.max, Number.EPSILON);
  const min = Math.min(Math.max(window.min, 0), max * 0.999);
  return { min, max };
}

/**
 * NiiVue's numbers for one signed overlay. The negative pair mirrors the positive one
 * (cal_minNeg = -threshold, cal_maxNeg = -saturation). A sign that is absent borrows the
 * other sign's window, which draws nothing since no voxel has that sign.
 */
export function toCalibration(thresholds: RelevanceThresholds): NiivueCalibration {
  const pos = clampWindow(thresholds.positive ?? thresholds.negative ?? EMPTY_WINDOW);
  const neg = clampWindow(thresholds.negative ?? thresholds.positive ?? EMPTY_WINDOW);
  return {
    cal_min: pos.min,
    cal_max: pos.max,
    cal_minNeg: -neg.min,
    cal_maxNeg: -neg.max,
  };
}

/** Load options for the MR volume (a subset of NiiVue's ImageFromUrlOptions). */
export interface BaseVolumeOptions {
  url: string;
  name: string;
  colormap: string;
  opacity: number;
}

/** Load options for the signed relevance map (a subset of NiiVue's ImageFromUrlOptions). */
export interface RelevanceVolumeOptions extends NiivueCalibration {
  url: string;
  name: string;
  colormap: string;
  colormapNegative: string;
  opacity: number;
}

export function baseVolumeOptions(url: string): BaseVolumeOptions {
  return { url, name: "image.nii.gz", colormap: BASE_COLORMAP, opacity: 1 };
}

/**
 * One overlay volume for the whole signed map: `colormap` paints the positive part and
 * `colormapNegative` the negative part. loadVolumes() ignores cal_minNeg/cal_maxNeg, so the
 * controller sets them again on the loaded volume.
 */
export function relevanceVolumeOptions(
  url: string,
  thresholds: RelevanceThresholds,
  opacity: number = DEFAULT_OVERLAY_OPACITY,
  scale: ColourScaleId = DEFAULT_COLOUR_SCALE,
): RelevanceVolumeOptions {
  return {
    url,
    name: "relevance.nii.gz",
    ...relevanceColormaps(scale),
    opacity,
    ...toCalibration(thresholds),
  };
}

/** The NiiVue colormap names of a colour scale, as the relevance volume carries them. */
export function relevanceColormaps(scale: ColourScaleId): { colormap: string; colormapNegative: string } {
  const { positive, negative } = COLOUR_SCALES[scale];
  return { colormap: positive.name, colormapNegative: negative.name };
}

/** Load options for the lesion outline volume, drawn last so it sits on top of the relevance. */
export interface LesionVolumeOptions {
  url: string;
  name: string;
  colormap: string;
  opacity: number;
  cal_min: number;
  cal_max: number;
}

/**
 * The lesion mask as the top overlay. NiiVue composites its drawing layer *under* all
 * overlays, so a drawing rim vanishes wherever relevance is shown; an overlay volume does not.
 * `name` carries the extension because the URL ends in a query string.
 */
/**
 * Sign agreement at or below this is dimmed to black, at 1 it is left as it is (linear between):
 * 0.5 is what a coin gives, so only voxels whose samples agree more than chance keep colour.
 */
export const AGREEMENT_FLOOR = 0.5;

/**
 * The sign-agreement volume of a stochastic map, loaded invisibly: it only modulates the
 * relevance overlay (NiiVue's modulationImage), where its calibration maps
 * [AGREEMENT_FLOOR, 1] to a brightness factor [0, 1].
 */
export function agreementVolumeOptions(url: string) {
  return { url, name: "agreement.nii.gz", colormap: "gray", opacity: 0, cal_min: AGREEMENT_FLOOR, cal_max: 1 };
}

export function lesionVolumeOptions(url: string): LesionVolumeOptions {
  return {
    url,
    name: "lesion.nii.gz",
    colormap: LESION_COLORMAP,
    opacity: 1,
    cal_min: LESION_VALUE / 2,
    cal_max: LESION_VALUE,
  };
}

/**
 * The calibration with one or both signs hidden: a hidden sign's threshold moves past twice
 * its peak, so that no voxel of that sign reaches it and NiiVue leaves them all transparent.
 */
export function withHiddenSigns(
  calibration: NiivueCalibration,
  visible: { positive: boolean; negative: boolean },
  peaks: { positive: number; negative: number },
): NiivueCalibration {
  const out = { ...calibration };
  if (!visible.positive) {
    const beyond = 2 * Math.max(peaks.positive, calibration.cal_max, Number.EPSILON);
    out.cal_min = beyond;
    out.cal_max = 2 * beyond;
  }
  if (!visible.negative) {
    const beyond = 2 * Math.max(peaks.negative, -calibration.cal_maxNeg, Number.EPSILON);
    out.cal_minNeg = -beyond;
    out.cal_maxNeg = -2 * beyond;
  }
  return out;
}

/** A sign's window moved by `steps` × `fraction` of its peak; the saturation stays put. */
export function stepWindow(window: SignWindow, peak: number, steps: number, fraction: number): SignWindow {
  const step = Math.max(peak, window.max) * fraction;
  return clampWindow({ min: window.min + steps * step, max: window.max });
}

// The compare page's display settings: one set of controls for every panel, and the colour
// scale either shared by all panels (the default: a colour is the same relevance everywhere)
// or fitted to each panel's own peaks. Pure functions, for Vitest.
import type { MapStats } from "../api/types";
import { type ColourScaleId, DEFAULT_COLOUR_SCALE } from "./colourScales";
import { DEFAULT_OVERLAY_OPACITY, DEFAULT_THRESHOLD_FRACTION, type RelevanceThresholds } from "./overlay";

export type ScaleMode = "shared" | "panel";
export type CompareView = "multiplanar" | "axial" | "coronal" | "sagittal";

export const COMPARE_VIEWS: { value: CompareView; label: string }[] = [
  { value: "multiplanar", label: "Three slices in a row" },
  { value: "axial", label: "Axial" },
  { value: "coronal", label: "Coronal" },
  { value: "sagittal", label: "Sagittal" },
];

export interface CompareSettings {
  scaleMode: ScaleMode;
  showRelevance: boolean;
  showPositive: boolean;
  showNegative: boolean;
  showLesion: boolean;
  opacity: number;
  colourScale: ColourScaleId;
  view: CompareView;
  /** Each sign's threshold as a fraction of the peak it is measured against. */
  fraction: { positive: number; negative: number };
}

export const DEFAULT_COMPARE_SETTINGS: CompareSettings = {
  scaleMode: "shared",
  showRelevance: true,
  showPositive: true,
  showNegative: true,
  showLesion: true,
  opacity: DEFAULT_OVERLAY_OPACITY,
  colourScale: DEFAULT_COLOUR_SCALE,
  view: "multiplanar",
  fraction: { positive: DEFAULT_THRESHOLD_FRACTION, negative: DEFAULT_THRESHOLD_FRACTION },
};

export type Peaks = { positive: number; negative: number };

/** A map's peaks as magnitudes (0 for an absent sign). */
export function peaksOf(stats: Pick<MapStats, "min" | "max"> | null): Peaks {
  if (!stats) return { positive: 0, negative: 0 };
  return { positive: Math.max(stats.max, 0), negative: Math.max(-stats.min, 0) };
}

/** The peaks of the strongest map of each sign: the top of the shared scale. */
export function sharedPeaks(all: readonly (Pick<MapStats, "min" | "max"> | null)[]): Peaks {
  return all.map(peaksOf).reduce(
    (acc, p) => ({ positive: Math.max(acc.positive, p.positive), negative: Math.max(acc.negative, p.negative) }),
    { positive: 0, negative: 0 },
  );
}

function window(fraction: number, peak: number) {
  if (!(peak > 0)) return null;
  const f = Math.min(Math.max(fraction, 0), 0.99);
  return { min: f * peak, max: peak };
}

/**
 * The display windows of one panel. Shared: threshold and full colour at the same values in
 * every panel (fractions of the strongest map's peaks). Per panel: fractions of its own peaks.
 * A sign the map does not have gets no window.
 */
export function panelWindows(
  settings: Pick<CompareSettings, "scaleMode" | "fraction">,
  own: Peaks,
  shared: Peaks,
): RelevanceThresholds {
  const top = settings.scaleMode === "shared" ? shared : own;
  return {
    positive: own.positive > 0 ? window(settings.fraction.positive, top.positive) : null,
    negative: own.negative > 0 ? window(settings.fraction.negative, top.negative) : null,
  };
}

/** The sentence under the controls that says which scale the panels use. */
export function scaleNote(mode: ScaleMode, panels: number): string {
  return mode === "shared"
    ? `One colour scale for all ${panels} panels: the same colour is the same relevance in every panel.`
    : "Each panel is scaled to its own peak: colours are not comparable between panels.";
}

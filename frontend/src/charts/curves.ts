// Metric curves as plain SVG: pure functions from series of (epoch, value) points to path data.
import type { components } from "../api/schema";

export type MetricPoint = components["schemas"]["MetricPoint"];

export interface Point {
  x: number;
  y: number;
}

export interface Series {
  name: string;
  points: Point[];
  /** Drawing style; CurveChart picks one by position when absent. */
  colour?: string;
  dash?: string;
}

export interface Extent {
  xMin: number;
  xMax: number;
  yMin: number;
  yMax: number;
}

export interface Box {
  width: number;
  height: number;
  /** Inner margin on every side, in SVG units. */
  pad: number;
}

/** Groups metric points by name, one point per epoch (the last stored wins: a resumed epoch). */
export function seriesFromPoints(points: readonly MetricPoint[], names?: readonly string[]): Series[] {
  const byName = new Map<string, Map<number, number>>();
  for (const p of points) {
    if (names && !names.includes(p.name)) continue;
    if (!Number.isFinite(p.value)) continue;
    const x = p.epoch;
    let series = byName.get(p.name);
    if (!series) byName.set(p.name, (series = new Map()));
    series.set(x, p.value);
  }
  const order = names ?? [...byName.keys()].sort();
  return order
    .filter((name) => byName.has(name))
    .map((name) => ({
      name,
      points: [...(byName.get(name) as Map<number, number>).entries()]
        .sort((a, b) => a[0] - b[0])
        .map(([x, y]) => ({ x, y })),
    }));
}

/** Merges new points into known ones; a point is identified by name, epoch and step. */
export function mergePoints(known: readonly MetricPoint[], incoming: readonly MetricPoint[]): MetricPoint[] {
  const key = (p: MetricPoint) => `${p.name}|${p.epoch}|${p.step ?? ""}`;
  const merged = new Map(known.map((p) => [key(p), p]));
  for (const p of incoming) merged.set(key(p), p);
  return [...merged.values()];
}

/** The common extent of several series; a flat or single-point range is widened so it draws. */
export function extentOf(series: readonly Series[]): Extent | null {
  const points = series.flatMap((s) => s.points);
  if (points.length === 0) return null;
  let xMin = Math.min(...points.map((p) => p.x));
  let xMax = Math.max(...points.map((p) => p.x));
  let yMin = Math.min(...points.map((p) => p.y));
  let yMax = Math.max(...points.map((p) => p.y));
  if (xMin === xMax) {
    xMin -= 1;
    xMax += 1;
  }
  if (yMin === yMax) {
    const d = Math.abs(yMin) > 0 ? Math.abs(yMin) * 0.1 : 1;
    yMin -= d;
    yMax += d;
  }
  return { xMin, xMax, yMin, yMax };
}

/** SVG coordinates of a data point (y grows downwards in SVG). */
export function project(p: Point, extent: Extent, box: Box): Point {
  const w = box.width - 2 * box.pad;
  const h = box.height - 2 * box.pad;
  return {
    x: box.pad + ((p.x - extent.xMin) / (extent.xMax - extent.xMin)) * w,
    y: box.pad + (1 - (p.y - extent.yMin) / (extent.yMax - extent.yMin)) * h,
  };
}

const round = (v: number) => Math.round(v * 100) / 100;

/** The `d` attribute of one series: "M x y L x y ..."; "" without points. */
export function seriesPath(series: Series, extent: Extent, box: Box): string {
  return series.points
    .map((p, i) => {
      const q = project(p, extent, box);
      return `${i === 0 ? "M" : "L"}${round(q.x)} ${round(q.y)}`;
    })
    .join(" ");
}

/** Whether every value is positive, so that the series can be drawn on a log scale. */
export function canLog(series: readonly Series[]): boolean {
  const points = series.flatMap((s) => s.points);
  return points.length > 0 && points.every((p) => p.y > 0);
}

/** The series with y replaced by log10(y) (for a log axis); use only when canLog. */
export function toLog(series: readonly Series[]): Series[] {
  return series.map((s) => ({ ...s, points: s.points.map((p) => ({ x: p.x, y: Math.log10(p.y) })) }));
}

/** The x of the data point nearest to `x` (all series together); null without points. */
export function nearestX(series: readonly Series[], x: number): number | null {
  let best: number | null = null;
  for (const p of series.flatMap((s) => s.points)) {
    if (best === null || Math.abs(p.x - x) < Math.abs(best - x)) best = p.x;
  }
  return best;
}

/** Each series' value at exactly `x` (series without a point there are left out). */
export function valuesAt(series: readonly Series[], x: number): { name: string; y: number }[] {
  return series.flatMap((s) => {
    const p = s.points.find((q) => q.x === x);
    return p ? [{ name: s.name, y: p.y }] : [];
  });
}

/** The data x of an SVG x coordinate (inverse of project). */
export function unprojectX(svgX: number, extent: Extent, box: Box): number {
  const w = box.width - 2 * box.pad;
  return extent.xMin + ((svgX - box.pad) / w) * (extent.xMax - extent.xMin);
}

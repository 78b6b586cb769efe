import { describe, expect, it } from "vitest";
import {
  type MetricPoint,
  canLog,
  extentOf,
  mergePoints,
  nearestX,
  seriesFromPoints,
  seriesPath,
  toLog,
  unprojectX,
  valuesAt,
} from "./curves";

const pt = (name: string, epoch: number, value: number): MetricPoint => ({ name, epoch, step: null, value });

describe("seriesFromPoints", () => {
  it("groups by name, sorts by epoch and keeps the last value of a repeated epoch", () => {
    const series = seriesFromPoints([pt("loss_c", 1, 0.5), pt("loss_c", 0, 0.9), pt("val_auroc", 0, 0.6), pt("loss_c", 1, 0.4)]);
    expect(series).toEqual([
      { name: "loss_c", points: [{ x: 0, y: 0.9 }, { x: 1, y: 0.4 }] },
      { name: "val_auroc", points: [{ x: 0, y: 0.6 }] },
    ]);
  });

  it("keeps only the names asked for, in their order", () => {
    const series = seriesFromPoints([pt("a", 0, 1), pt("b", 0, 2), pt("c", 0, 3)], ["c", "a", "z"]);
    expect(series.map((s) => s.name)).toEqual(["c", "a"]);
  });
});

describe("mergePoints", () => {
  it("adds new points and replaces a point stored again", () => {
    const merged = mergePoints([pt("a", 0, 1), pt("a", 1, 2)], [pt("a", 1, 5), pt("a", 2, 3)]);
    expect(merged.map((p) => [p.epoch, p.value])).toEqual([[0, 1], [1, 5], [2, 3]]);
  });
});

describe("seriesPath", () => {
  const box = { width: 120, height: 70, pad: 10 };

  it("maps the extent's corners to the box's inner corners", () => {
    const series = { name: "a", points: [{ x: 0, y: 0 }, { x: 2, y: 1 }, { x: 4, y: 0.5 }] };
    const extent = extentOf([series]);
    expect(extent).toEqual({ xMin: 0, xMax: 4, yMin: 0, yMax: 1 });
    expect(seriesPath(series, extent!, box)).toBe("M10 60 L60 10 L110 35");
  });

  it("draws a flat single point in the middle instead of dividing by zero", () => {
    const series = { name: "a", points: [{ x: 3, y: 2 }] };
    expect(seriesPath(series, extentOf([series])!, box)).toBe("M60 35");
  });

  it("has no extent and no path without points", () => {
    expect(extentOf([{ name: "a", points: [] }])).toBeNull();
  });
});

describe("log scale and hover readout", () => {
  const series = [
    { name: "loss_a", points: [{ x: 1, y: 100 }, { x: 2, y: 10 }, { x: 3, y: 1 }] },
    { name: "loss_c", points: [{ x: 2, y: 0.5 }] },
  ];
  it("logs only positive series", () => {
    expect(canLog(series)).toBe(true);
    expect(canLog([{ name: "cos", points: [{ x: 1, y: -0.2 }] }])).toBe(false);
    expect(toLog(series)[0].points.map((p) => p.y)).toEqual([2, 1, 0]);
  });
  it("finds the nearest epoch and the values there", () => {
    expect(nearestX(series, 2.4)).toBe(2);
    expect(valuesAt(series, 2)).toEqual([{ name: "loss_a", y: 10 }, { name: "loss_c", y: 0.5 }]);
    const extent = { xMin: 1, xMax: 3, yMin: 0, yMax: 1 };
    expect(unprojectX(10 + 40, extent, { width: 100, height: 50, pad: 10 })).toBe(2);
  });
});

import { describe, expect, it } from "vitest";
import type { Run } from "../api/types";
import { overlaySeries, runCurves } from "./overlay";

const pt = (name: string, epoch: number, value: number) => ({ name, epoch, step: null, value });

describe("overlaySeries", () => {
  it("draws each run in its colour and each metric in its dash", () => {
    const series = overlaySeries(
      [
        { id: 3, name: "a", points: [pt("loss_c", 1, 0.5), pt("val_loss", 1, 0.6)] },
        { id: 4, name: "b", points: [pt("loss_c", 1, 0.4), pt("loss_c", 2, 0.3)] },
      ],
      ["loss_c", "val_loss"],
    );
    expect(series.map((s) => s.name)).toEqual(["a (#3) · loss_c", "a (#3) · val_loss", "b (#4) · loss_c"]);
    expect(series[0].colour).toBe(series[1].colour);
    expect(series[2].colour).not.toBe(series[0].colour);
    expect(series[0].dash).toBeUndefined();
    expect(series[1].dash).toBeDefined();
    expect(series[2].points).toHaveLength(2);
  });
});

describe("runCurves", () => {
  it("regroups the comparison's series by run", () => {
    const curves = runCurves({
      runs: [{ id: 4, name: "b" } as Run, { id: 3, name: "a" } as Run],
      series: [
        { run_id: 3, name: "loss_c", epochs: [1, 2], values: [0.5, 0.4] },
        { run_id: 4, name: "loss_c", epochs: [1], values: [0.9] },
      ],
    });
    expect(curves.map((c) => [c.id, c.points.length])).toEqual([
      [4, 1],
      [3, 2],
    ]);
    expect(curves[1].points[1]).toEqual({ name: "loss_c", epoch: 2, step: null, value: 0.4 });
  });
});

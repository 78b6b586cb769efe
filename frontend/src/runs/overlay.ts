// The curves of several runs on one chart (run compare): one colour per run, one dash pattern
// per metric of the chart.
import type { components } from "../api/schema";
import { type MetricPoint, type Series, seriesFromPoints } from "../charts/curves";

type RunComparison = components["schemas"]["RunComparison"];

export const RUN_COLOURS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#0b7285", "#e8590c"];
const DASHES = [undefined, "6 4", "2 3", "8 3 2 3"];

export interface RunCurves {
  id: number;
  name: string;
  points: readonly MetricPoint[];
}

/** For each run and each of `names` it has: a series "<run> · <metric>". */
export function overlaySeries(runs: readonly RunCurves[], names: readonly string[]): Series[] {
  return runs.flatMap((run, r) =>
    seriesFromPoints(run.points, names).map((s) => ({
      ...s,
      name: `${run.name} (#${run.id}) · ${s.name}`,
      colour: RUN_COLOURS[r % RUN_COLOURS.length],
      dash: DASHES[names.indexOf(s.name) % DASHES.length],
    })),
  );
}

/** The comparison's per-epoch series, regrouped by run (in the order of its runs). */
export function runCurves(comparison: Pick<RunComparison, "runs" | "series">): RunCurves[] {
  return comparison.runs.map((run) => ({
    id: run.id,
    name: run.name,
    points: comparison.series
      .filter((s) => s.run_id === run.id)
      .flatMap((s) => s.epochs.map((epoch, i) => ({ name: s.name, epoch, step: null, value: s.values[i] }))),
  }));
}

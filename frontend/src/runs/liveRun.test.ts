import { describe, expect, it } from "vitest";
import type { Job, Run } from "../api/types";
import { INITIAL_LIVE, actionFromEvent, isLive, liveReducer } from "./liveRun";

const run = (status: string) => ({ id: 1, status }) as Run;

describe("liveReducer", () => {
  it("applies run, job and metric events, merging points by name and epoch", () => {
    let state = INITIAL_LIVE;
    for (const [event, data] of [
      ["run", JSON.stringify(run("running"))],
      ["job", JSON.stringify({ id: 7, status: "running", progress: 0.5 })],
      ["metrics", JSON.stringify({ run_id: 1, data: [{ name: "val_auroc", epoch: 1, step: null, value: 0.6 }] })],
      ["metrics", JSON.stringify({ run_id: 1, data: [{ name: "val_auroc", epoch: 1, step: null, value: 0.7 }] })],
      ["end", "{}"],
      ["metrics", "not json"],
    ] as const) {
      const action = actionFromEvent(event, data);
      if (action) state = liveReducer(state, action);
    }
    expect(state.run?.status).toBe("running");
    expect((state.job as Job).progress).toBe(0.5);
    expect(state.points).toEqual([{ name: "val_auroc", epoch: 1, step: null, value: 0.7 }]);
  });

  it("is live until the run and its job have ended", () => {
    expect(isLive(INITIAL_LIVE)).toBe(true);
    expect(isLive({ ...INITIAL_LIVE, run: run("running") })).toBe(true);
    expect(isLive({ ...INITIAL_LIVE, run: run("succeeded"), job: { status: "succeeded" } as Job })).toBe(false);
  });
});

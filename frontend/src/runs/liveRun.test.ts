import { describe, expect, it } from "vitest";
import type { Job, Run } from "../api/types";
import { INITIAL_LIVE, actionFromEvent, isLive, liveReducer, unavailableMessage } from "./liveRun";

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

  it("forgets the previous run on reset and says why a run is unavailable", () => {
    let state = liveReducer(INITIAL_LIVE, { type: "run", run: run("succeeded") });
    state = liveReducer(state, { type: "metrics", points: [{ name: "loss_c", epoch: 1, step: null, value: 2 }] });
    expect(liveReducer(state, { type: "reset" })).toEqual(INITIAL_LIVE);
    const gone = liveReducer(state, { type: "unavailable", error: "Run 9 does not exist (or was deleted)." });
    expect(gone.run).toBeNull();
    expect(gone.points).toEqual([]);
    expect(gone.source).toBe("unavailable");
  });

  it("stops only for errors that asking again cannot fix", () => {
    expect(unavailableMessage(9, 404)).toMatch(/does not exist/);
    expect(unavailableMessage(9, 403, "not a member")).toBe("You do not have access to run 9: not a member");
    expect(unavailableMessage(9, 401)).toMatch(/log in/);
    expect(unavailableMessage(9, 500)).toBeNull();
    expect(unavailableMessage(9, undefined)).toBeNull();
  });
});

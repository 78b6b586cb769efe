// The live state of one run, from its Server-Sent Events or from polling: a pure reducer.
import type { components } from "../api/schema";
import type { Job, Run } from "../api/types";
import { isActive } from "../api/types";
import { type MetricPoint, mergePoints } from "../charts/curves";

export type RunMetrics = components["schemas"]["RunMetricsPublic"];

/** Where the updates come from: the event stream, polling after the stream failed, or nothing more. */
export type LiveSource = "connecting" | "stream" | "polling" | "ended";

export interface LiveRun {
  run: Run | null;
  job: Job | null;
  points: MetricPoint[];
  source: LiveSource;
}

export const INITIAL_LIVE: LiveRun = { run: null, job: null, points: [], source: "connecting" };

export type LiveAction =
  | { type: "run"; run: Run }
  | { type: "job"; job: Job }
  | { type: "metrics"; points: MetricPoint[]; replace?: boolean }
  | { type: "source"; source: LiveSource };

export function liveReducer(state: LiveRun, action: LiveAction): LiveRun {
  switch (action.type) {
    case "run":
      return { ...state, run: action.run };
    case "job":
      return { ...state, job: action.job };
    case "metrics":
      return { ...state, points: action.replace ? [...action.points] : mergePoints(state.points, action.points) };
    case "source":
      return { ...state, source: action.source };
  }
}

/** One SSE message as an action; null for `end`, keep-alives and anything unreadable. */
export function actionFromEvent(event: string, data: string): LiveAction | null {
  let payload: unknown;
  try {
    payload = JSON.parse(data);
  } catch {
    return null;
  }
  if (!payload || typeof payload !== "object") return null;
  if (event === "run") return { type: "run", run: payload as Run };
  if (event === "job") return { type: "job", job: payload as Job };
  if (event === "metrics") return { type: "metrics", points: (payload as RunMetrics).data ?? [] };
  return null;
}

/** True while the run or its job may still change (so polling goes on). */
export function isLive(state: LiveRun): boolean {
  if (!state.run) return true;
  return isActive(state.run.status) || (state.job != null && isActive(state.job.status));
}

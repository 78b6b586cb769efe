// The live state of one run, from its Server-Sent Events or from polling: a pure reducer.
import type { components } from "../api/schema";
import type { Job, Run } from "../api/types";
import { isActive } from "../api/types";
import { type MetricPoint, mergePoints } from "../charts/curves";

export type RunMetrics = components["schemas"]["RunMetricsPublic"];

/**
 * Where the updates come from: the event stream, polling after the stream failed, or nothing
 * more ("ended": the run settled; "unavailable": the run is missing or not the user's to see).
 */
export type LiveSource = "connecting" | "stream" | "polling" | "ended" | "unavailable";

export interface LiveRun {
  run: Run | null;
  job: Job | null;
  points: MetricPoint[];
  source: LiveSource;
  /** Why the run cannot be shown (404, 403, 401), once polling has stopped for it. */
  error: string | null;
}

export const INITIAL_LIVE: LiveRun = { run: null, job: null, points: [], source: "connecting", error: null };

export type LiveAction =
  | { type: "run"; run: Run }
  | { type: "job"; job: Job }
  | { type: "metrics"; points: MetricPoint[]; replace?: boolean }
  | { type: "source"; source: LiveSource }
  /** Another run (or a retry): forget everything known about the previous one. */
  | { type: "reset" }
  | { type: "unavailable"; error: string };

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
    case "reset":
      return INITIAL_LIVE;
    case "unavailable":
      return { ...INITIAL_LIVE, source: "unavailable", error: action.error };
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

/** HTTP statuses after which asking again cannot help: the run is gone or not the user's. */
export const FINAL_STATUSES = [401, 403, 404] as const;

/** The message for a run that cannot be read, or null when the error may pass (keep polling). */
export function unavailableMessage(runId: number, status: number | undefined, detail?: string): string | null {
  if (status === 404) return `Run ${runId} does not exist (or was deleted).`;
  if (status === 403) return `You do not have access to run ${runId}${detail ? `: ${detail}` : "."}`;
  if (status === 401) return "Your session has ended: log in again to see this run.";
  return null;
}

/** True while the run or its job may still change (so polling goes on). */
export function isLive(state: LiveRun): boolean {
  if (!state.run) return true;
  return isActive(state.run.status) || (state.job != null && isActive(state.job.status));
}

// Follows one run: its SSE stream (EventSource; the session cookie authenticates it), or GET
// polling of the run, its job and its metrics when the stream is unavailable.
import { useEffect, useReducer } from "react";
import { api } from "../api/client";
import { ApiError } from "../api/http";
import { runEventsUrl } from "../api/urls";
import { INITIAL_LIVE, type LiveRun, actionFromEvent, isLive, liveReducer, unavailableMessage } from "./liveRun";

export const RUN_POLL_MS = 2000;
const EVENTS = ["run", "job", "metrics"] as const;

export function useLiveRun(runId: number, generation = 0): LiveRun {
  const [state, dispatch] = useReducer(liveReducer, INITIAL_LIVE);

  useEffect(() => {
    // Nothing of the previous run (or of the attempt before a retry) may show for this one.
    dispatch({ type: "reset" });
    let closed = false;
    let source: EventSource | null = null;
    let timer: number | undefined;
    let live = true;

    const pollOnce = async () => {
      const run = await api.runs.get(runId);
      const [metrics, job] = await Promise.all([
        api.runs.metrics(runId),
        run.job_id != null ? api.jobs.get(run.job_id) : Promise.resolve(null),
      ]);
      if (closed) return;
      dispatch({ type: "run", run });
      if (job) dispatch({ type: "job", job });
      dispatch({ type: "metrics", points: metrics.data, replace: true });
      live = isLive({ ...INITIAL_LIVE, run, job });
    };
    const poll = () => {
      if (closed) return;
      dispatch({ type: "source", source: "polling" });
      const loop = async () => {
        try {
          await pollOnce();
        } catch (error) {
          // A missing or forbidden run: say so and stop. Anything else may pass: keep polling.
          const status = error instanceof ApiError ? error.status : undefined;
          const message = unavailableMessage(runId, status, error instanceof Error ? error.message : undefined);
          if (message) {
            if (!closed) dispatch({ type: "unavailable", error: message });
            return;
          }
        }
        if (closed) return;
        if (live) timer = window.setTimeout(() => void loop(), RUN_POLL_MS);
        else dispatch({ type: "source", source: "ended" });
      };
      void loop();
    };

    if (typeof EventSource === "undefined") poll();
    else {
      dispatch({ type: "source", source: "connecting" });
      source = new EventSource(runEventsUrl(runId), { withCredentials: true });
      source.onopen = () => dispatch({ type: "source", source: "stream" });
      for (const name of EVENTS) {
        source.addEventListener(name, (event) => {
          const action = actionFromEvent(name, (event as MessageEvent<string>).data);
          if (action && !closed) dispatch(action);
        });
      }
      source.addEventListener("end", () => {
        source?.close();
        if (!closed) dispatch({ type: "source", source: "ended" });
      });
      // Any failure (refused, dropped, a proxy that buffers): fall back to polling.
      source.onerror = () => {
        source?.close();
        source = null;
        poll();
      };
    }
    return () => {
      closed = true;
      source?.close();
      window.clearTimeout(timer);
    };
  }, [runId, generation]);

  return state;
}

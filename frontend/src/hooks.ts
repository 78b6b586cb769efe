// Data hooks shared by the pages.
import { useCallback, useEffect, useRef, useState } from "react";
import { api } from "./api/client";
import type { Job } from "./api/types";
import { isActive } from "./api/types";

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `deps` change; keeps the last data while reloading. */
export function useAsync<T>(load: () => Promise<T>, deps: readonly unknown[]): AsyncState<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [generation, setGeneration] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  useEffect(() => {
    let current = true;
    setLoading(true);
    loadRef.current().then(
      (value) => {
        if (!current) return;
        setData(value);
        setError(null);
        setLoading(false);
      },
      (reason: unknown) => {
        if (!current) return;
        setError(reason);
        setLoading(false);
      },
    );
    return () => {
      current = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- the caller's deps (useAsync(load, deps) mirrors useEffect), not statically listable here
  }, [...deps, generation]);

  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  return { data, error, loading, reload };
}

/** Calls `callback` every `ms` milliseconds while `ms` is not null. */
export function useInterval(callback: () => void, ms: number | null): void {
  const saved = useRef(callback);
  saved.current = callback;
  useEffect(() => {
    if (ms === null) return;
    const id = window.setInterval(() => saved.current(), ms);
    return () => window.clearInterval(id);
  }, [ms]);
}

export const JOB_POLL_MS = 1500;

/**
 * Polls GET /jobs/{id} for each id until the job settles, and calls `onSettled` once per job
 * that leaves queued/running. Progress reaches the browser by polling until SSE arrives.
 */
export function useJobPolling(
  jobIds: readonly number[],
  onSettled?: (job: Job) => void,
): Record<number, Job> {
  const [jobs, setJobs] = useState<Record<number, Job>>({});
  const jobsRef = useRef(jobs);
  const settledRef = useRef(onSettled);
  settledRef.current = onSettled;
  const key = [...new Set(jobIds)].sort((a, b) => a - b).join(",");
  const pending = key
    .split(",")
    .filter(Boolean)
    .map(Number)
    .filter((id) => !jobs[id] || isActive(jobs[id].status));

  const poll = useCallback(async (ids: number[]) => {
    const results = await Promise.allSettled(ids.map((id) => api.jobs.get(id)));
    const next = { ...jobsRef.current };
    const settled: Job[] = [];
    for (const result of results) {
      if (result.status !== "fulfilled") continue;
      const job = result.value;
      const before = next[job.id];
      if (!isActive(job.status) && (!before || isActive(before.status))) settled.push(job);
      next[job.id] = job;
    }
    jobsRef.current = next;
    setJobs(next);
    for (const job of settled) settledRef.current?.(job);
  }, []);

  useEffect(() => {
    if (key) void poll(key.split(",").map(Number));
  }, [key, poll]);
  useInterval(() => void poll(pending), pending.length > 0 ? JOB_POLL_MS : null);
  return jobs;
}

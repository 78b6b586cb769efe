// Pure helpers of the run page's "Next steps" panel (NextSteps.tsx).
import type { Attribution, Job } from "../api/types";
import { isActive } from "../api/types";

/** The newest map of each subject (several batches may have asked for the same subject). */
export function newestPerSubject(maps: readonly Attribution[]): Attribution[] {
  const newest = new Map<number, Attribution>();
  for (const a of maps) {
    const seen = newest.get(a.subject_id);
    if (!seen || a.id > seen.id) newest.set(a.subject_id, a);
  }
  return [...newest.values()].sort((a, b) => a.subject_id - b.subject_id);
}

/** Up to three other succeeded maps of the same subject, newest first, for the compare page. */
export function othersOfSubject(all: readonly Attribution[], map: Attribution, limit = 3): number[] {
  return all
    .filter((a) => a.subject_id === map.subject_id && a.id !== map.id && a.status === "succeeded")
    .sort((a, b) => b.id - a.id)
    .slice(0, limit)
    .map((a) => a.id);
}

export interface BatchProgress {
  total: number;
  done: number;
  failed: number;
  active: number;
  /** Finished maps plus the progress of running jobs, over the total. */
  fraction: number;
}

/** How far the maps are, from their rows and the jobs polled since. */
export function batchProgress(maps: readonly Attribution[], jobs: Record<number, Job>): BatchProgress {
  let done = 0;
  let failed = 0;
  let active = 0;
  let partial = 0;
  for (const a of maps) {
    const job = a.job_id != null ? jobs[a.job_id] : undefined;
    const status = job && isActive(a.status) ? job.status : a.status;
    if (status === "succeeded") done += 1;
    else if (status === "failed" || status === "cancelled") failed += 1;
    else {
      active += 1;
      partial += job?.progress ?? 0;
    }
  }
  const total = maps.length;
  return { total, done, failed, active, fraction: total ? (done + failed + partial) / total : 0 };
}

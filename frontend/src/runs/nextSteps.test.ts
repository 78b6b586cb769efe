import { describe, expect, it } from "vitest";
import type { Attribution, Job } from "../api/types";
import { batchProgress, newestPerSubject, othersOfSubject } from "./nextSteps";

const map = (id: number, subject_id: number, status: string, job_id: number | null = null, run_id = 1) =>
  ({ id, subject_id, status, job_id, run_id }) as Attribution;

describe("next steps", () => {
  it("keeps the newest map per subject", () => {
    const out = newestPerSubject([map(1, 5, "failed"), map(3, 5, "succeeded"), map(2, 4, "queued")]);
    expect(out.map((a) => a.id)).toEqual([2, 3]);
  });

  it("offers the subject's other succeeded maps for compare, newest first", () => {
    const all = [map(1, 5, "succeeded"), map(2, 5, "failed"), map(3, 5, "succeeded"), map(4, 6, "succeeded"), map(9, 5, "succeeded")];
    expect(othersOfSubject(all, all[2])).toEqual([9, 1]);
  });

  it("counts finished maps and the progress of running jobs", () => {
    const maps = [map(1, 1, "succeeded"), map(2, 2, "running", 20), map(3, 3, "queued", 30), map(4, 4, "failed")];
    const jobs = { 20: { id: 20, status: "running", progress: 0.5 } as Job, 30: { id: 30, status: "succeeded", progress: 1 } as Job };
    expect(batchProgress(maps, jobs)).toEqual({ total: 4, done: 2, failed: 1, active: 1, fraction: 3.5 / 4 });
    expect(batchProgress([], {}).fraction).toBe(0);
  });
});

import { describe, expect, it } from "vitest";
import type { Attribution } from "../api/types";
import { newestSucceeded } from "./select";

function attribution(id: number, status: Attribution["status"], created_at: string): Attribution {
  return {
    id,
    run_id: 1,
    subject_id: 1,
    method: "integrated_gradients",
    params: { steps: 16, baseline: "zero" },
    status,
    convergence_delta: 0.01,
    logit: null,
    stats: {},
    job_id: id,
    created_at,
  };
}

describe("newestSucceeded", () => {
  it("picks the newest succeeded attribution and skips the others", () => {
    const list = [
      attribution(1, "succeeded", "2025-01-01T10:00:00"),
      attribution(2, "succeeded", "2025-01-02T10:00:00"),
      attribution(3, "running", "2025-01-03T10:00:00"),
      attribution(4, "failed", "2025-01-04T10:00:00"),
    ];
    expect(newestSucceeded(list)?.id).toBe(2);
  });

  it("breaks ties by id and returns null when none succeeded", () => {
    const t = "2025-01-01T10:00:00";
    expect(newestSucceeded([attribution(5, "succeeded", t), attribution(6, "succeeded", t)])?.id).toBe(6);
    expect(newestSucceeded([attribution(1, "queued", t)])).toBeNull();
  });
});

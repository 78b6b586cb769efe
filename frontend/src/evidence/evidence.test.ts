import { describe, expect, it } from "vitest";
import {
  type EvidenceCheck,
  evidenceRows,
  faithfulnessSeries,
  irofSeries,
  isPending,
  layerSeries,
  verdictText,
} from "./evidence";

function check(overrides: Partial<EvidenceCheck> = {}): EvidenceCheck {
  return {
    id: 1,
    attribution_id: 2,
    run_id: 3,
    checks: ["model_randomisation", "faithfulness"],
    status: "succeeded",
    results: {
      model_randomisation: {
        layers: ["head", "conv2", "conv1"],
        steps: [
          { layer: "head", spearman_signed: 0.9, spearman_abs: 0.95, ssim_signed: 0.8, ssim_abs: 0.85 },
          { layer: "conv2", spearman_signed: 0.4, spearman_abs: 0.5, ssim_signed: 0.3, ssim_abs: 0.35 },
          { layer: "conv1", spearman_signed: null, spearman_abs: 0.12, ssim_signed: 0.1, ssim_abs: 0.2 },
        ],
        passes: true,
        reason: "the map changed after randomising every layer (Spearman |A| 0.12 < 0.5)",
      },
      faithfulness: {
        fractions: [0, 0.5, 1],
        deletion: [2, 0.5, -1],
        insertion: [-1, 1.5, 2],
        deletion_auc: 0.5,
        insertion_auc: 1.25,
        auc_gap: 0.75,
        infidelity: 0.0123,
        irof: {
          segments: 2,
          fractions: [0, 0.5, 1],
          probabilities: [0.8, 0.4, 0.2],
          random_probabilities: [0.8, 0.6, null],
          auc: 0.625,
          random_auc: 0.25,
        },
        passes: true,
        reason: "the voxels ranked most pathological move the logit most",
      },
    },
    verdict: "passes",
    reasons: [],
    error: null,
    job_id: 9,
    created_at: "2026-12-05T11:00:00Z",
    progress: 1,
    message: "checks stored",
    ...overrides,
  };
}

describe("verdictText", () => {
  it("says a passing map passes", () => {
    expect(verdictText(check())).toBe("Passes every check");
  });

  it("names the checks a failing map fails, and only those", () => {
    const base = check();
    const failing = check({
      verdict: "fails",
      results: {
        ...base.results,
        model_randomisation: { ...base.results.model_randomisation!, passes: false },
      },
    });
    expect(verdictText(failing)).toBe("Fails: Model randomisation");
  });

  it("shows progress while running and the error of a failed job", () => {
    const running = check({ status: "running", verdict: null, progress: 0.456, message: "randomised 1 of 3 layers" });
    expect(isPending(running)).toBe(true);
    expect(verdictText(running)).toBe("Running (46%): randomised 1 of 3 layers");
    expect(isPending(check())).toBe(false);
    expect(verdictText(check({ status: "failed", verdict: null, error: "RuntimeError: boom" }))).toBe(
      "The checks failed to run: RuntimeError: boom",
    );
  });
});

describe("evidenceRows", () => {
  it("gives the faithfulness numbers and the similarity after the last layer", () => {
    const rows = Object.fromEntries(evidenceRows(check()).map((r) => [r.label, r.value]));
    expect(rows["Deletion AUC"]).toBe("0.5");
    expect(rows["Insertion − deletion"]).toBe("0.75");
    expect(rows["Infidelity"]).toBe("0.0123");
    expect(rows["IROF AUC"]).toBe("0.625");
    expect(rows["IROF AUC, random order"]).toBe("0.25");
    expect(rows["Spearman |A|, all layers random"]).toBe("0.12");
    expect(rows["Spearman signed, all layers random"]).toBe("–");
    expect(rows["Spearman |A|, permuted labels"]).toBeUndefined();
  });
});

describe("chart series", () => {
  it("plots deletion and insertion against the fraction of voxels changed", () => {
    const [deletion, insertion] = faithfulnessSeries(check());
    expect(deletion.points).toEqual([
      { x: 0, y: 2 },
      { x: 0.5, y: 0.5 },
      { x: 1, y: -1 },
    ]);
    expect(insertion.points[2]).toEqual({ x: 1, y: 2 });
  });

  it("plots similarity per number of randomised layers, dropping undefined values", () => {
    const series = layerSeries(check());
    const abs = series.find((s) => s.name === "spearman abs")!;
    expect(abs.points.map((p) => p.x)).toEqual([1, 2, 3]);
    expect(abs.points.map((p) => p.y)).toEqual([0.95, 0.5, 0.12]);
    const signed = series.find((s) => s.name === "spearman signed")!;
    expect(signed.points.map((p) => p.x)).toEqual([1, 2]);
    expect(faithfulnessSeries(check({ results: {} }))).toEqual([]);
  });

  it("plots IROF in the map's order and in random order, dropping undefined values", () => {
    const [ranked, random] = irofSeries(check());
    expect(ranked.name).toBe("map order");
    expect(ranked.points).toEqual([
      { x: 0, y: 0.8 },
      { x: 0.5, y: 0.4 },
      { x: 1, y: 0.2 },
    ]);
    expect(random.name).toBe("random order");
    expect(random.points.map((p) => p.x)).toEqual([0, 0.5]);
    expect(irofSeries(check({ results: {} }))).toEqual([]);
  });

  it("leaves IROF out of checks stored before it existed", () => {
    const base = check();
    const older = check({ results: { ...base.results, faithfulness: { ...base.results.faithfulness!, irof: null } } });
    const labels = evidenceRows(older).map((r) => r.label);
    expect(labels).toContain("Infidelity");
    expect(labels).not.toContain("IROF AUC");
    expect(irofSeries(older)).toEqual([]);
  });
});

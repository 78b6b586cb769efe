import { describe, expect, it } from "vitest";
import { defaultConstraints } from "./regressionConfig";
import { LAUNCH_DEFAULTS, type LaunchFormValues, serverFieldErrors, validateLaunchForm } from "./runConfig";

const base: LaunchFormValues = { ...LAUNCH_DEFAULTS, datasetId: "3", name: "r" };

function config(values: LaunchFormValues): Record<string, unknown> {
  const result = validateLaunchForm(values);
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.value.config as Record<string, unknown>;
}

describe("regression in the launch form", () => {
  it("leaves a classification run's config without task fields", () => {
    const sent = config(base);
    expect(sent).not.toHaveProperty("task");
    expect(sent).not.toHaveProperty("regression");
  });

  it("sends the task, loss, constraints and penalty, and no classification attribution loss", () => {
    const sent = config({
      ...base,
      task: "regression",
      lossSetting: "lc_la_supervised",
      regressionLoss: "mse",
      regressionConstraints: ["zero_target", "outside_lesions"],
      regressionPenalty: "relu_squared",
    });
    expect(sent.task).toBe("regression");
    expect(sent.regression).toEqual({
      loss: "mse",
      constraints: ["outside_lesions", "zero_target"],
      penalty: "relu_squared",
    });
    expect(sent).not.toHaveProperty("attribution_loss");
  });

  it("sends only the loss for an unconstrained regression run", () => {
    expect(config({ ...base, task: "regression" }).regression).toEqual({ loss: "l1" });
  });

  it("refuses what the server would refuse, on the field concerned", () => {
    const laOnly = validateLaunchForm({ ...base, task: "regression", lossSetting: "la_only" });
    expect(laOnly.ok).toBe(false);
    if (!laOnly.ok) expect(laOnly.errors.lossSetting).toMatch(/not defined for regression/);

    const weak = validateLaunchForm({
      ...base,
      task: "regression",
      lossSetting: "lc_la_unsupervised",
      regressionConstraints: ["outside_lesions"],
    });
    expect(weak.ok).toBe(false);
    if (!weak.ok) expect(weak.errors.regressionConstraints).toMatch(/needs lesion masks/);

    const none = validateLaunchForm({
      ...base,
      task: "regression",
      lossSetting: "lc_la_supervised",
      regressionConstraints: [],
    });
    expect(none.ok).toBe(false);
    if (!none.ok) expect(none.errors.regressionConstraints).toMatch(/at least one/);
  });

  it("puts the server's regression messages on their fields", () => {
    const split = serverFieldErrors(
      "invalid run config: config.regression.constraints: Value error, bad; config.task: wrong",
    );
    expect(split.fields.regressionConstraints).toMatch(/bad/);
    expect(split.fields.task).toBe("wrong");
  });

  it("defaults the constraints per loss setting as the worker does", () => {
    expect(defaultConstraints("lc_la_supervised")).toEqual(["outside_lesions", "zero_target"]);
    expect(defaultConstraints("lc_la_unsupervised")).toEqual(["zero_target"]);
    expect(defaultConstraints("lc_only")).toEqual([]);
  });
});

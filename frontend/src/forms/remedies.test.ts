import { describe, expect, it } from "vitest";
import { LAUNCH_DEFAULTS, type LaunchFormValues, serverFieldErrors, validateLaunchForm } from "./runConfig";

const base: LaunchFormValues = { ...LAUNCH_DEFAULTS, datasetId: "3", name: "run" };
const constrained: LaunchFormValues = { ...base, lossSetting: "lc_la_supervised", lambdaValue: "5" };

function config(values: LaunchFormValues): Record<string, unknown> {
  const result = validateLaunchForm(values);
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.value.config as Record<string, unknown>;
}

describe("training remedies in the launch form", () => {
  it("sends nothing when every remedy is left at its default", () => {
    const sent = config(constrained);
    for (const key of ["grad_clip_norm", "grad_balance", "la_every_n_steps", "amp", "device", "grad_probe_batches"]) {
      expect(sent).not.toHaveProperty(key);
    }
  });

  it("sends clipping, fixed-ratio balancing, L_A every n steps, the device and amp off", () => {
    expect(
      config({
        ...constrained,
        gradClipNorm: "2.5",
        gradBalance: "fixed_ratio",
        gradBalanceRatio: "0.5",
        laEveryNSteps: "3",
        device: "cpu",
        amp: false,
      }),
    ).toMatchObject({
      grad_clip_norm: 2.5,
      grad_balance: "fixed_ratio",
      grad_balance_ratio: 0.5,
      la_every_n_steps: 3,
      device: "cpu",
      amp: false,
    });
  });

  it("sends GradNorm's alpha only with GradNorm, and the probe only for L_C only", () => {
    const gradnorm = config({ ...constrained, gradBalance: "gradnorm", gradnormAlpha: "0.5", gradProbeBatches: "7" });
    expect(gradnorm).toMatchObject({ grad_balance: "gradnorm", gradnorm_alpha: 0.5 });
    expect(gradnorm).not.toHaveProperty("grad_balance_ratio");
    expect(gradnorm).not.toHaveProperty("grad_probe_batches");
    expect(config({ ...base, gradProbeBatches: "0", gradBalance: "gradnorm", laEveryNSteps: "4" })).toMatchObject({
      grad_probe_batches: 0,
    });
    // Balancing and skipping L_A do not apply to L_C only and are not sent there.
    const lcOnly = config({ ...base, gradBalance: "gradnorm", laEveryNSteps: "4" });
    expect(lcOnly).not.toHaveProperty("grad_balance");
    expect(lcOnly).not.toHaveProperty("la_every_n_steps");
  });

  it.each([
    [{ gradClipNorm: "0" }, "gradClipNorm", "Clip norm must be greater than 0."],
    [{ gradClipNorm: "x" }, "gradClipNorm", "Clip norm must be a number."],
    [{ gradBalance: "fixed_ratio", gradBalanceRatio: "0" }, "gradBalanceRatio", "Gradient ratio must be greater than 0 and at most 1000."],
    [{ gradBalance: "gradnorm", gradnormAlpha: "11" }, "gradnormAlpha", "GradNorm alpha must be at least 0 and at most 10."],
    [{ gradBalance: "equal" }, "gradBalance", "Choose a gradient balancing."],
    [{ laEveryNSteps: "0" }, "laEveryNSteps", "L_A every n steps must be between 1 and 1000."],
    [{ laEveryNSteps: "1.5" }, "laEveryNSteps", "L_A every n steps must be a whole number."],
    [{ gradBalance: "fixed_ratio", lambdaValue: "0" }, "gradBalance", "Fixed-ratio balancing needs lambda greater than 0."],
    [{ device: "tpu" }, "device", "Choose a device."],
  ] as const)("rejects %j", (change, field, message) => {
    expect(validateLaunchForm({ ...constrained, ...change })).toEqual({ ok: false, errors: { [field]: message } });
  });

  it("does not refuse device cpu for the default mixed precision: it sends amp off", () => {
    expect(validateLaunchForm({ ...constrained, device: "cpu", amp: true }).ok).toBe(true);
    expect(config({ ...constrained, device: "cpu", amp: true })).toMatchObject({ device: "cpu", amp: false });
  });

  it("accepts mixed precision with device auto or cuda", () => {
    expect(config({ ...constrained, device: "cuda", amp: true })).toMatchObject({ device: "cuda" });
    expect(validateLaunchForm({ ...constrained, device: "auto", amp: true }).ok).toBe(true);
  });

  it("maps the server's messages on remedy fields back to them", () => {
    expect(
      serverFieldErrors([
        { loc: ["body", "config", "grad_clip_norm"], msg: "must be > 0" },
        { loc: ["body", "config", "la_every_n_steps"], msg: "too big" },
      ]).fields,
    ).toEqual({ gradClipNorm: "must be > 0", laEveryNSteps: "too big" });
  });
});

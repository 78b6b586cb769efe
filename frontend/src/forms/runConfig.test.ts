import { describe, expect, it } from "vitest";
import { LAUNCH_DEFAULTS, type LaunchFormValues, serverFieldErrors, validateLaunchForm } from "./runConfig";

const base: LaunchFormValues = { ...LAUNCH_DEFAULTS, datasetId: "3", name: " run " };

describe("validateLaunchForm", () => {
  it("builds an lc_only body without attribution fields", () => {
    const result = validateLaunchForm(base);
    expect(result).toEqual({
      ok: true,
      value: {
        dataset_id: 3,
        name: "run",
        config: {
          network: "small_cnn",
          loss_setting: "lc_only",
          epochs: 3,
          learning_rate: 0.001,
          batch_size: 4,
          seed: 0,
          augment: false,
          normative_input: false,
          early_stopping_metric: "val_auroc",
        },
      },
    });
  });

  it("builds a segmentation body: no network or loss setting, the mixed-supervision options, lambda", () => {
    const result = validateLaunchForm({
      ...base,
      task: "segmentation",
      earlyStoppingMetric: "val_dice",
      segAnnotatedFraction: "0.25",
      segConstraint: true,
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    const config = result.value.config as Record<string, unknown>;
    expect(config.task).toBe("segmentation");
    expect(config.seg_annotated_fraction).toBe(0.25);
    expect(config.seg_constraint).toBe(true);
    expect(config.network).toBeUndefined();
    expect(config.loss_setting).toBeUndefined();
    expect(config.normative_input).toBeUndefined();
    expect(config.train_attribution).toEqual(["gradient"]);
    expect(config.lambda_a).toEqual({ kind: "constant", value: 1, warmup_epochs: 0 });
    expect(config.early_stopping_metric).toBe("val_dice");
    const bad = validateLaunchForm({ ...base, task: "segmentation", earlyStoppingMetric: "val_auroc", segAnnotatedFraction: "1.5" });
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.errors.segAnnotatedFraction).toMatch(/at most 1/);
    expect(bad.errors.earlyStoppingMetric).toBeDefined();
  });

  it("sends the normative input for classification and not for regression", () => {
    const on = validateLaunchForm({ ...base, normativeInput: true });
    expect(on.ok && (on.value.config as Record<string, unknown>).normative_input).toBe(true);
    const regression = validateLaunchForm({ ...base, task: "regression", normativeInput: true });
    expect(regression.ok).toBe(true);
    if (!regression.ok) return;
    expect((regression.value.config as Record<string, unknown>).normative_input).toBeUndefined();
  });

  it("sends the attribution methods, IG steps, EG k and a warm-up schedule where they are used", () => {
    const result = validateLaunchForm({
      ...base,
      lossSetting: "lc_la_supervised",
      trainAttribution: ["expected_gradients", "integrated_gradients"],
      igSteps: "16",
      egK: "2",
      lambdaKind: "linear_warmup",
      lambdaValue: "0.5",
      warmupEpochs: "2",
    });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.config).toMatchObject({
      train_attribution: ["integrated_gradients", "expected_gradients"],
      ig_steps: 16,
      eg_k: 2,
      attribution_scale: 1,
      attribution_loss: "bce",
      lambda_a: { kind: "linear_warmup", value: 0.5, warmup_epochs: 2 },
    });
  });

  it("leaves lambda out of la_only and IG steps out without IG", () => {
    const result = validateLaunchForm({ ...base, lossSetting: "la_only", igSteps: "bad" });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.config).not.toHaveProperty("lambda_a");
    expect(result.value.config).not.toHaveProperty("ig_steps");
  });

  it.each([
    ["epochs", "0", "Epochs must be between 1 and 1000."],
    ["batchSize", "1.5", "Batch size must be a whole number."],
    ["learningRate", "0", "Learning rate must be greater than 0."],
    ["learningRate", "x", "Learning rate must be a number."],
    ["seed", "-1", "Seed must be between 0 and 2147483647."],
    ["network", "vgg", "Choose a network."],
    ["datasetId", "", "Choose a dataset."],
    ["name", "", "Name is required."],
  ] as const)("rejects %s = %j", (field, value, message) => {
    expect(validateLaunchForm({ ...base, [field]: value })).toEqual({ ok: false, errors: { [field]: message } });
  });

  it("checks the constrained settings' own fields", () => {
    const result = validateLaunchForm({
      ...base,
      lossSetting: "lc_la_unsupervised",
      trainAttribution: [],
      attributionScale: "0",
      lambdaValue: "-1",
      lambdaKind: "linear_warmup",
      warmupEpochs: "9",
    });
    expect(result).toEqual({
      ok: false,
      errors: {
        trainAttribution: "Choose at least one attribution method.",
        attributionScale: "Attribution scale must be greater than 0.",
        lambdaValue: "Lambda must be at least 0.",
        warmupEpochs: "Warm-up must not be longer than the run.",
      },
    });
  });

  it("checks IG steps only when IG is chosen", () => {
    const result = validateLaunchForm({
      ...base,
      lossSetting: "la_only",
      trainAttribution: ["integrated_gradients"],
      igSteps: "999",
    });
    expect(result).toEqual({ ok: false, errors: { igSteps: "IG steps must be between 1 and 256." } });
  });
});

describe("serverFieldErrors", () => {
  it("puts FastAPI's body issues at their fields", () => {
    expect(
      serverFieldErrors([
        { loc: ["body", "name"], msg: "too short" },
        { loc: ["body", "config", "lambda_a", "warmup_epochs"], msg: "must be >= 0" },
        { loc: ["body", "config", "train_attribution", 1], msg: "bad method" },
        { loc: ["body", "other"], msg: "odd" },
      ]),
    ).toEqual({
      fields: { name: "too short", warmupEpochs: "must be >= 0", trainAttribution: "bad method" },
      form: ["other: odd"],
    });
  });

  it("parses the service's one-line run config message", () => {
    expect(
      serverFieldErrors("invalid run config: config.epochs: too many; config.lambda_a.value: negative"),
    ).toEqual({ fields: { epochs: "too many", lambdaValue: "negative" }, form: [] });
  });

  it("keeps any other message for the form", () => {
    expect(serverFieldErrors("dataset 3 has no subjects")).toEqual({ fields: {}, form: ["dataset 3 has no subjects"] });
  });
});

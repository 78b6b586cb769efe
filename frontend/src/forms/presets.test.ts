import { describe, expect, it } from "vitest";
import type { Preset } from "../api/types";
import { presetFormValues, presetLines, withPreset } from "./presets";
import { LAUNCH_DEFAULTS, validateLaunchForm } from "./runConfig";

const constrained: Preset = {
  name: "constrained_supervised",
  title: "Constrained, supervised",
  description: "Classifier plus the attribution constraint with lesion masks as targets.",
  config: {
    loss_setting: "lc_la_supervised",
    network: "small_cnn",
    epochs: 30,
    learning_rate: 0.003,
    batch_size: 4,
    early_stopping_metric: "val_auroc",
    train_attribution: ["integrated_gradients"],
    ig_steps: 4,
    lambda_a: { kind: "constant", value: 5.0 },
    grid: [48, 56, 48],
  },
};

describe("presets in the launch form", () => {
  it("maps a preset's config onto the form's fields", () => {
    expect(presetFormValues(constrained.config)).toEqual({
      lossSetting: "lc_la_supervised",
      network: "small_cnn",
      epochs: "30",
      learningRate: "0.003",
      batchSize: "4",
      earlyStoppingMetric: "val_auroc",
      trainAttribution: ["integrated_gradients"],
      igSteps: "4",
      lambdaKind: "constant",
      lambdaValue: "5",
    });
  });

  it("shows a preset's normative input in its checkbox and sends it", () => {
    const preset: Preset = { ...constrained, config: { ...constrained.config, normative_input: true } };
    const values = withPreset({ ...LAUNCH_DEFAULTS, datasetId: "3", name: "p" }, preset);
    expect(values.normativeInput).toBe(true);
    const result = validateLaunchForm(values);
    expect(result.ok && (result.value.config as Record<string, unknown>).normative_input).toBe(true);
  });

  it("keeps the dataset and name, resets the rest to the defaults under the preset", () => {
    const before = { ...LAUNCH_DEFAULTS, datasetId: "7", name: "mine", seed: "42", epochs: "2" };
    const after = withPreset(before, constrained);
    expect(after.datasetId).toBe("7");
    expect(after.name).toBe("mine");
    expect(after.preset).toBe("constrained_supervised");
    expect(after.seed).toBe(LAUNCH_DEFAULTS.seed);
    expect(after.epochs).toBe("30");
    expect(withPreset(after, null)).toEqual({ ...after, preset: "" });
  });

  it("sends the preset's name with the config the form holds", () => {
    const values = { ...withPreset({ ...LAUNCH_DEFAULTS, datasetId: "3", name: "p" }, constrained), epochs: "2" };
    const result = validateLaunchForm(values);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.preset).toBe("constrained_supervised");
    const config = result.value.config as Record<string, unknown>;
    expect(config.epochs).toBe(2);
    expect(config.loss_setting).toBe("lc_la_supervised");
    expect(config.train_attribution).toEqual(["integrated_gradients"]);
    expect(config.ig_steps).toBe(4);
    expect(config.lambda_a).toEqual({ kind: "constant", value: 5, warmup_epochs: 0 });
    const plain = validateLaunchForm({ ...LAUNCH_DEFAULTS, datasetId: "3", name: "p" });
    expect(plain.ok && "preset" in plain.value).toBe(false);
  });

  it("lists every value, flagging those the form has no field for", () => {
    const lines = presetLines(constrained.config);
    expect(lines.map((l) => l.key)).toEqual(Object.keys(constrained.config));
    expect(lines.find((l) => l.key === "lambda_a")).toEqual({
      key: "lambda_a",
      value: "kind constant, value 5",
      onForm: true,
    });
    expect(lines.find((l) => l.key === "grid")).toEqual({ key: "grid", value: "48, 56, 48", onForm: false });
  });
});

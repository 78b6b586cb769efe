import { describe, expect, it } from "vitest";
import {
  RUN_FORM_DEFAULTS,
  type RunFormValues,
  isNiftiName,
  validateDatasetForm,
  validateRunForm,
  validateSteps,
  igParams,
  validateUploadForm,
} from "./validation";

const valid: RunFormValues = {
  datasetId: "2",
  name: " baseline ",
  epochs: "20",
  batchSize: "8",
  learningRate: "1e-4",
  seed: "42",
};

describe("validateRunForm", () => {
  it("builds the request body from valid values", () => {
    expect(validateRunForm(valid)).toEqual({
      ok: true,
      value: {
        dataset_id: 2,
        name: "baseline",
        config: { epochs: 20, batch_size: 8, learning_rate: 0.0001, seed: 42 },
      },
    });
  });

  it("reports every missing field of an empty form", () => {
    const result = validateRunForm({ ...RUN_FORM_DEFAULTS, epochs: "", batchSize: "", learningRate: "", seed: "" });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(Object.keys(result.errors).sort()).toEqual(
      ["batchSize", "datasetId", "epochs", "learningRate", "name", "seed"].sort(),
    );
    expect(result.errors.datasetId).toBe("Choose a dataset.");
    expect(result.errors.name).toBe("Name is required.");
  });

  it.each([
    ["epochs", "0", "Epochs must be between 1 and 1000."],
    ["epochs", "2.5", "Epochs must be a whole number."],
    ["epochs", "ten", "Epochs must be a whole number."],
    ["batchSize", "-1", "Batch size must be between 1 and 512."],
    ["seed", "-3", "Seed must be between 0 and 2147483647."],
    ["learningRate", "0", "Learning rate must be greater than 0 and at most 1."],
    ["learningRate", "2", "Learning rate must be greater than 0 and at most 1."],
    ["learningRate", "fast", "Learning rate must be a number."],
    ["name", "x".repeat(101), "Name must be at most 100 characters."],
    ["datasetId", "abc", "Choose a dataset."],
  ] as const)("rejects %s = %j", (field, value, message) => {
    const result = validateRunForm({ ...valid, [field]: value });
    expect(result).toEqual({ ok: false, errors: { [field]: message } });
  });

  it("ships defaults that only lack a dataset and a name", () => {
    const result = validateRunForm(RUN_FORM_DEFAULTS);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(Object.keys(result.errors).sort()).toEqual(["datasetId", "name"]);
  });
});

describe("validateDatasetForm", () => {
  it("requires a name and trims", () => {
    expect(validateDatasetForm({ name: "  ", description: "" })).toEqual({
      ok: false,
      errors: { name: "Name is required." },
    });
    expect(validateDatasetForm({ name: " BraTS ", description: " d " })).toEqual({
      ok: true,
      value: { name: "BraTS", description: "d" },
    });
  });

  it("sends the chosen project and requires one when offered a choice", () => {
    expect(validateDatasetForm({ name: "BraTS", description: "", projectId: "3" })).toEqual({
      ok: true,
      value: { name: "BraTS", description: "", project_id: 3 },
    });
    expect(validateDatasetForm({ name: "BraTS", description: "", projectId: "" })).toEqual({
      ok: false,
      errors: { projectId: "Choose a project." },
    });
  });
});

describe("validateUploadForm", () => {
  const image = new File(["x"], "sub-01_T1w.nii.gz");

  it("accepts a NIfTI image and an optional mask", () => {
    const result = validateUploadForm({ subjectKey: "sub-01", label: "1", split: "val", image, mask: null, target: "" });
    expect(result).toEqual({
      ok: true,
      value: { subject_key: "sub-01", label: 1, split: "val", image, mask: null, target: null },
    });
  });

  it("reads the continuous target, with a decimal comma, and refuses text", () => {
    const base = { subjectKey: "s1", label: "1", split: "train", image, mask: null };
    const ok = validateUploadForm({ ...base, target: " 3,5 " });
    expect(ok.ok && ok.value.target).toBe(3.5);
    expect(validateUploadForm({ ...base, target: "high" })).toEqual({
      ok: false,
      errors: { target: "The target must be a number (or empty for none)." },
    });
  });

  it("names each problem", () => {
    const result = validateUploadForm({
      subjectKey: "bad key!",
      label: "2",
      split: "holdout",
      image: new File(["x"], "scan.png"),
      mask: new File(["x"], "mask.txt"),
      target: "",
    });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(Object.keys(result.errors).sort()).toEqual(["image", "label", "mask", "split", "subjectKey"]);
  });

  it("sends a brain mask when one is chosen, and checks its name", () => {
    const brainMask = new File(["x"], "sub-01_desc-brain_mask.nii.gz");
    const result = validateUploadForm({ subjectKey: "s1", label: "0", split: "train", image, mask: null, target: "", brainMask });
    expect(result).toEqual({
      ok: true,
      value: { subject_key: "s1", label: 0, split: "train", image, mask: null, target: null, brain_mask: brainMask },
    });
    const bad = validateUploadForm({
      subjectKey: "s1",
      label: "0",
      split: "train",
      image,
      mask: null,
      target: "",
      brainMask: new File(["x"], "brain.png"),
    });
    expect(bad).toEqual({ ok: false, errors: { brainMask: "The brain mask must be a .nii or .nii.gz file." } });
  });

  it("requires an image", () => {
    const result = validateUploadForm({ subjectKey: "s1", label: "0", split: "train", image: null, mask: null, target: "" });
    expect(result).toEqual({ ok: false, errors: { image: "Choose an image file (.nii or .nii.gz)." } });
  });

  it("recognises NIfTI names", () => {
    expect(isNiftiName("a.nii")).toBe(true);
    expect(isNiftiName("a.NII.GZ")).toBe(true);
    expect(isNiftiName("a.nii.zip")).toBe(false);
  });
});

describe("validateSteps", () => {
  it("parses an integer in range", () => {
    expect(validateSteps("32")).toBe(32);
    expect(validateSteps("0")).toBe("Steps must be between 1 and 512.");
    expect(validateSteps("")).toBe("Steps is required.");
  });
});

describe("igParams", () => {
  it("asks for a target delta in percent, or fixed steps without one", () => {
    expect(igParams("32", "1")).toEqual({ target_delta: 0.01, baseline: "zero" });
    expect(igParams("oops", " 0.5 % ")).toEqual({ target_delta: 0.005, baseline: "zero" });
    expect(igParams("16", "")).toEqual({ steps: 16, baseline: "zero" });
    expect(igParams("16", "0")).toBe("Target delta must be a percentage above 0 and below 100.");
    expect(igParams("16", "100")).toBe("Target delta must be a percentage above 0 and below 100.");
    expect(igParams("16", "abc")).toBe("Target delta must be a percentage above 0 and below 100.");
    expect(igParams("0", "")).toBe("Steps must be between 1 and 512.");
  });
});

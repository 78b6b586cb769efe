import { describe, expect, it } from "vitest";
import type { Run } from "../api/types";
import {
  IMPORT_DEFAULTS,
  type ImportFormValues,
  bundleLink,
  checkpointLink,
  importFormData,
  importSummary,
  validateImportForm,
} from "./modelImport";

const model = new File([new Uint8Array([1, 2, 3])], "model.ts");

function values(overrides: Partial<ImportFormValues> = {}): ImportFormValues {
  return { ...IMPORT_DEFAULTS, datasetId: "3", name: " my model ", file: model, ...overrides };
}

describe("validateImportForm", () => {
  it("builds the request's fields", () => {
    const result = validateImportForm(values({ gridX: "16", gridY: "20", gridZ: "16", logitIndex: "2" }));
    expect(result).toEqual({
      ok: true,
      value: {
        dataset_id: 3,
        name: "my model",
        model,
        grid: [16, 20, 16],
        channels: 1,
        intensity: "zscore",
        brain: "mask",
        logit_index: 2,
        task: "classification",
      },
    });
  });

  it("carries a regression model's task and refuses an unknown one", () => {
    const result = validateImportForm(values({ task: "regression", logitIndex: "1" }));
    if (!result.ok) throw new Error("expected a valid form");
    expect(result.value.task).toBe("regression");
    expect(importFormData(result.value).get("task")).toBe("regression");
    const wrong = validateImportForm(values({ task: "segmentation" as never }));
    expect(wrong.ok).toBe(false);
    if (wrong.ok) return;
    expect(wrong.errors.task).toBe("Choose classification or regression.");
  });

  it("names each wrong field", () => {
    const result = validateImportForm(
      values({
        datasetId: "",
        name: "  ",
        file: null,
        gridX: "7",
        gridY: "513",
        gridZ: "1.5",
        channels: "0",
        logitIndex: "-1",
      }),
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toEqual({
      datasetId: "Choose a dataset.",
      name: "Give the run a name.",
      file: "Choose a TorchScript file or a zipped MONAI bundle.",
      gridX: "Grid x must be between 8 and 512.",
      gridY: "Grid y must be between 8 and 512.",
      gridZ: "Grid z must be a whole number.",
      channels: "Channels must be between 1 and 16.",
      logitIndex: "Logit index must be a whole number.",
    });
  });

  it("refuses an empty file and a name over the limit", () => {
    const result = validateImportForm(values({ file: new File([], "empty.ts"), name: "x".repeat(201) }));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors.file).toBe("The file is empty.");
    expect(result.errors.name).toBe("At most 200 characters.");
  });
});

describe("importFormData", () => {
  it("repeats the grid field and sends the file under its name", () => {
    const result = validateImportForm(values({ gridX: "16", gridY: "20", gridZ: "24", intensity: "percentile" }));
    if (!result.ok) throw new Error("expected a valid form");
    const form = importFormData(result.value);
    expect(form.getAll("grid")).toEqual(["16", "20", "24"]);
    expect(form.get("dataset_id")).toBe("3");
    expect(form.get("intensity")).toBe("percentile");
    expect(form.get("logit_index")).toBe("0");
    expect(form.get("task")).toBe("classification");
    const sent = form.get("model");
    expect(sent).toBeInstanceOf(File);
    expect((sent as File).name).toBe("model.ts");
  });
});

type ExportFields = Pick<Run, "source" | "model_format" | "status">;

describe("export links", () => {
  const trained: ExportFields = { source: "trained", model_format: null, status: "succeeded" };
  const torchscript: ExportFields = { source: "imported", model_format: "torchscript", status: "succeeded" };
  const bundle: ExportFields = { source: "imported", model_format: "monai_bundle", status: "succeeded" };

  it("offers both downloads of a trained run that succeeded", () => {
    expect(checkpointLink(trained)).toEqual({ available: true });
    expect(bundleLink(trained)).toEqual({ available: true });
  });

  it("gives the reason where the API answers 409", () => {
    expect(checkpointLink(torchscript)).toEqual({ available: true });
    expect(checkpointLink({ ...torchscript, model_format: "torch_export" })).toEqual({ available: true });
    expect(bundleLink(torchscript)).toMatchObject({ available: false, reason: expect.stringMatching(/imported/) });
    expect(checkpointLink(bundle)).toMatchObject({ available: false, reason: expect.stringMatching(/MONAI bundle/) });
    expect(bundleLink(bundle).available).toBe(false);
    const running: ExportFields = { ...trained, status: "running" };
    expect(checkpointLink(running)).toEqual({ available: false, reason: "the run is running: no best checkpoint yet" });
    expect(bundleLink(running).available).toBe(false);
  });
});

describe("importSummary", () => {
  it("reads the input spec", () => {
    expect(
      importSummary({
        model_format: "torchscript",
        input_spec: { grid: [16, 20, 16], channels: 1, intensity: "zscore", brain: "mask", logit_index: 2 },
      }),
    ).toBe("TorchScript · grid 16×20×16 · 1 channel · zscore · brain mask · logit 2");
    expect(importSummary({ model_format: "monai_bundle", input_spec: null })).toBe("MONAI bundle");
    expect(
      importSummary({ model_format: "torch_export", input_spec: { logit_index: 1, task: "regression" } }),
    ).toBe("torch.export program · regression output 1");
  });
});

// The "Import a model" form (POST /runs/import) and the export links of a run
// (GET /runs/{id}/checkpoint, GET /runs/{id}/bundle): validation, and which downloads the API
// would serve (the same rules as backend/services/models.py, so a link that would answer 409
// is shown disabled with the reason instead).
import type { FieldErrors, Validation } from "../forms/validation";
import type { FormFieldsOf, Operation } from "../api/openapi";
import type { Run } from "../api/types";

type ImportOperation = Operation<"/runs/import", "post">;

/** The import form's fields as the schema declares them, with a real file for the model. */
export type ModelImport = Omit<FormFieldsOf<ImportOperation>, "model"> & { model: File };

export const INTENSITIES = ["zscore", "percentile"] as const satisfies readonly NonNullable<ModelImport["intensity"]>[];
export const BRAIN_CHOICES = ["mask", "nonzero"] as const satisfies readonly NonNullable<ModelImport["brain"]>[];
/** What output ``logit_index`` is: a classifier's pathological logit, or a regression model's
 * predicted target (its maps explain that prediction, as a trained regression run's). */
export const IMPORT_TASKS = ["classification", "regression"] as const satisfies readonly NonNullable<
  ModelImport["task"]
>[];

export interface ImportFormValues {
  datasetId: string;
  name: string;
  file: File | null;
  gridX: string;
  gridY: string;
  gridZ: string;
  channels: string;
  intensity: (typeof INTENSITIES)[number];
  brain: (typeof BRAIN_CHOICES)[number];
  logitIndex: string;
  task: (typeof IMPORT_TASKS)[number];
}

export type ImportField = keyof ImportFormValues;

/** The bounds of attrivue_core.imported.ModelInputSpec (grid sizes: GridSize). */
export const IMPORT_LIMITS = {
  grid: { min: 8, max: 512 },
  channels: { min: 1, max: 16 },
  logitIndex: { min: 0, max: 1023 },
  nameLength: 200,
} as const;

export const IMPORT_DEFAULTS: ImportFormValues = {
  datasetId: "",
  name: "",
  file: null,
  gridX: "96",
  gridY: "112",
  gridZ: "96",
  channels: "1",
  intensity: "zscore",
  brain: "mask",
  logitIndex: "0",
  task: "classification",
};

function integer(raw: string, label: string, min: number, max: number): string | number {
  const text = raw.trim();
  if (text === "") return `${label} is required.`;
  if (!/^\d+$/.test(text)) return `${label} must be a whole number.`;
  const value = Number(text);
  if (value < min || value > max) return `${label} must be between ${min} and ${max}.`;
  return value;
}

/** The request's fields, or a message per field that is wrong. */
export function validateImportForm(values: ImportFormValues): Validation<ImportField, ModelImport> {
  const errors: FieldErrors<ImportField> = {};
  const datasetId = Number(values.datasetId);
  if (!/^\d+$/.test(values.datasetId.trim()) || datasetId <= 0) errors.datasetId = "Choose a dataset.";
  const name = values.name.trim();
  if (name === "") errors.name = "Give the run a name.";
  else if (name.length > IMPORT_LIMITS.nameLength)
    errors.name = `At most ${IMPORT_LIMITS.nameLength} characters.`;
  if (values.file == null) errors.file = "Choose a TorchScript file or a zipped MONAI bundle.";
  else if (values.file.size === 0) errors.file = "The file is empty.";
  const numbers: Partial<Record<ImportField, number>> = {};
  const check = (field: ImportField, label: string, limits: { min: number; max: number }) => {
    const parsed = integer(String(values[field] ?? ""), label, limits.min, limits.max);
    if (typeof parsed === "string") errors[field] = parsed;
    else numbers[field] = parsed;
  };
  check("gridX", "Grid x", IMPORT_LIMITS.grid);
  check("gridY", "Grid y", IMPORT_LIMITS.grid);
  check("gridZ", "Grid z", IMPORT_LIMITS.grid);
  check("channels", "Channels", IMPORT_LIMITS.channels);
  check("logitIndex", "Logit index", IMPORT_LIMITS.logitIndex);
  if (!INTENSITIES.includes(values.intensity)) errors.intensity = "Choose zscore or percentile.";
  if (!BRAIN_CHOICES.includes(values.brain)) errors.brain = "Choose mask or nonzero.";
  if (!IMPORT_TASKS.includes(values.task)) errors.task = "Choose classification or regression.";
  if (Object.keys(errors).length > 0 || values.file == null) return { ok: false, errors };
  return {
    ok: true,
    value: {
      dataset_id: datasetId,
      name,
      model: values.file,
      grid: [numbers.gridX!, numbers.gridY!, numbers.gridZ!],
      channels: numbers.channels!,
      intensity: values.intensity,
      brain: values.brain,
      logit_index: numbers.logitIndex!,
      task: values.task,
    },
  };
}

/** The multipart body: one ``grid`` field per size, as the API reads a list of form values. */
export function importFormData(upload: ModelImport): FormData {
  const form = new FormData();
  form.set("dataset_id", String(upload.dataset_id));
  form.set("name", upload.name);
  for (const size of upload.grid) form.append("grid", String(size));
  if (upload.channels != null) form.set("channels", String(upload.channels));
  if (upload.intensity != null) form.set("intensity", upload.intensity);
  if (upload.brain != null) form.set("brain", upload.brain);
  if (upload.logit_index != null) form.set("logit_index", String(upload.logit_index));
  if (upload.task != null) form.set("task", upload.task);
  form.set("model", upload.model, upload.model.name);
  return form;
}

/** A download the run offers: available, or not with the reason the API would give. */
export type ExportLink = { available: true } | { available: false; reason: string };

export function isImported(run: Pick<Run, "source">): boolean {
  return run.source === "imported";
}

/** ``GET /runs/{id}/checkpoint``: a trained run's best.pt once it has succeeded, or the file
 * an imported TorchScript or torch.export run was imported from; an imported bundle has no
 * single file. */
export function checkpointLink(run: Pick<Run, "source" | "model_format" | "status">): ExportLink {
  if (isImported(run)) {
    if (run.model_format === "torchscript" || run.model_format === "torch_export") return { available: true };
    return {
      available: false,
      reason: "imported as a MONAI bundle: it has no single checkpoint; export the bundle you imported",
    };
  }
  if (run.status !== "succeeded") return { available: false, reason: `the run is ${run.status}: no best checkpoint yet` };
  return { available: true };
}

/** ``GET /runs/{id}/bundle``: a MONAI bundle of a trained run that succeeded; an imported run
 * is not exported again. */
export function bundleLink(run: Pick<Run, "source" | "status">): ExportLink {
  if (isImported(run)) return { available: false, reason: "imported: export the model it was imported from" };
  if (run.status !== "succeeded") return { available: false, reason: `the run is ${run.status}: no best checkpoint yet` };
  return { available: true };
}

/** One line for an imported run in place of a training summary: format, grid, channels,
 * preprocessing and the logit it reads. */
export function importSummary(run: Pick<Run, "model_format" | "input_spec">): string {
  const formats: Record<string, string> = {
    monai_bundle: "MONAI bundle",
    torchscript: "TorchScript",
    torch_export: "torch.export program",
  };
  const format = formats[run.model_format ?? ""] ?? "imported model";
  const spec = run.input_spec ?? {};
  const parts = [format];
  if (Array.isArray(spec.grid)) parts.push(`grid ${spec.grid.join("×")}`);
  if (typeof spec.channels === "number") parts.push(`${spec.channels} channel${spec.channels === 1 ? "" : "s"}`);
  if (typeof spec.intensity === "string") parts.push(spec.intensity);
  if (typeof spec.brain === "string") parts.push(`brain ${spec.brain}`);
  if (typeof spec.logit_index === "number")
    parts.push(spec.task === "regression" ? `regression output ${spec.logit_index}` : `logit ${spec.logit_index}`);
  return parts.join(" · ");
}

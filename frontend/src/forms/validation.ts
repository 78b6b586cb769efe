// Form validation: pure functions that return either field errors or the request body.
import { parseTarget } from "../components/subjectFields";
import type { DatasetCreate, Label, RunCreate, Split } from "../api/types";
import { SPLITS } from "../api/types";

export type FieldErrors<K extends string> = Partial<Record<K, string>>;

export type Validation<K extends string, T> =
  | { ok: true; value: T }
  | { ok: false; errors: FieldErrors<K> };

function finish<K extends string, T>(errors: FieldErrors<K>, build: () => T): Validation<K, T> {
  return Object.keys(errors).length > 0 ? { ok: false, errors } : { ok: true, value: build() };
}

/** Parses an integer field; returns an error message or the number. */
function parseInteger(raw: string, label: string, min: number, max: number): string | number {
  const text = raw.trim();
  if (text === "") return `${label} is required.`;
  if (!/^[+-]?\d+$/.test(text)) return `${label} must be a whole number.`;
  const value = Number(text);
  if (value < min || value > max) return `${label} must be between ${min} and ${max}.`;
  return value;
}

// --- launch a training run -----------------------------------------------------------------

export interface RunFormValues {
  datasetId: string;
  name: string;
  epochs: string;
  batchSize: string;
  learningRate: string;
  seed: string;
}

export type RunField = keyof RunFormValues;

export const RUN_LIMITS = {
  epochs: { min: 1, max: 1000 },
  batchSize: { min: 1, max: 512 },
  learningRate: { min: 1e-7, max: 1 },
  seed: { min: 0, max: 2 ** 31 - 1 },
  nameLength: 100,
} as const;

export const RUN_FORM_DEFAULTS: RunFormValues = {
  datasetId: "",
  name: "",
  epochs: "10",
  batchSize: "4",
  learningRate: "0.001",
  seed: "0",
};

export function validateRunForm(values: RunFormValues): Validation<RunField, RunCreate> {
  const errors: FieldErrors<RunField> = {};
  const datasetId = Number(values.datasetId);
  if (values.datasetId.trim() === "" || !Number.isInteger(datasetId) || datasetId <= 0) {
    errors.datasetId = "Choose a dataset.";
  }
  const name = values.name.trim();
  if (name === "") errors.name = "Name is required.";
  else if (name.length > RUN_LIMITS.nameLength) {
    errors.name = `Name must be at most ${RUN_LIMITS.nameLength} characters.`;
  }
  const epochs = parseInteger(values.epochs, "Epochs", RUN_LIMITS.epochs.min, RUN_LIMITS.epochs.max);
  if (typeof epochs === "string") errors.epochs = epochs;
  const batchSize = parseInteger(
    values.batchSize,
    "Batch size",
    RUN_LIMITS.batchSize.min,
    RUN_LIMITS.batchSize.max,
  );
  if (typeof batchSize === "string") errors.batchSize = batchSize;
  const seed = parseInteger(values.seed, "Seed", RUN_LIMITS.seed.min, RUN_LIMITS.seed.max);
  if (typeof seed === "string") errors.seed = seed;
  const lrText = values.learningRate.trim();
  const learningRate = Number(lrText);
  if (lrText === "") errors.learningRate = "Learning rate is required.";
  else if (!Number.isFinite(learningRate)) errors.learningRate = "Learning rate must be a number.";
  else if (learningRate <= 0 || learningRate > RUN_LIMITS.learningRate.max) {
    errors.learningRate = "Learning rate must be greater than 0 and at most 1.";
  }
  return finish(errors, () => ({
    dataset_id: datasetId,
    name,
    config: {
      epochs: epochs as number,
      batch_size: batchSize as number,
      learning_rate: learningRate,
      seed: seed as number,
    },
  }));
}

// --- create a dataset ----------------------------------------------------------------------

export interface DatasetFormValues {
  name: string;
  description: string;
  /** The chosen project's id; leave it out to let the backend pick the only one possible. */
  projectId?: string;
}

export function validateDatasetForm(
  values: DatasetFormValues,
): Validation<keyof DatasetFormValues, DatasetCreate> {
  const errors: FieldErrors<keyof DatasetFormValues> = {};
  const name = values.name.trim();
  if (name === "") errors.name = "Name is required.";
  else if (name.length > 100) errors.name = "Name must be at most 100 characters.";
  const projectId = values.projectId === undefined ? undefined : Number(values.projectId);
  if (
    values.projectId !== undefined &&
    (values.projectId.trim() === "" || !Number.isInteger(projectId) || (projectId as number) <= 0)
  ) {
    errors.projectId = "Choose a project.";
  }
  return finish(errors, () => ({
    name,
    description: values.description.trim(),
    ...(projectId === undefined ? {} : { project_id: projectId }),
  }));
}

// --- upload a subject ----------------------------------------------------------------------

export interface UploadFormValues {
  subjectKey: string;
  label: string;
  split: string;
  image: File | null;
  mask: File | null;
  /** The continuous target of regression runs; empty for none. */
  target: string;
  /** The user's brain mask; without it the server computes one from the image. */
  brainMask?: File | null;
}

export interface UploadRequest {
  subject_key: string;
  label: Label;
  split: Split;
  image: File;
  mask: File | null;
  target: number | null;
  brain_mask?: File;
}

export function isNiftiName(name: string): boolean {
  return /\.nii(\.gz)?$/i.test(name);
}

export function validateUploadForm(
  values: UploadFormValues,
): Validation<keyof UploadFormValues, UploadRequest> {
  const errors: FieldErrors<keyof UploadFormValues> = {};
  const subjectKey = values.subjectKey.trim();
  if (subjectKey === "") errors.subjectKey = "Subject key is required.";
  else if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(subjectKey)) {
    errors.subjectKey = "Use letters, digits, '_', '-' or '.' (at most 64).";
  }
  if (values.label !== "0" && values.label !== "1") errors.label = "Choose healthy or pathological.";
  if (!SPLITS.includes(values.split as Split)) errors.split = "Choose train, val or test.";
  if (!values.image) errors.image = "Choose an image file (.nii or .nii.gz).";
  else if (!isNiftiName(values.image.name)) errors.image = "The image must be a .nii or .nii.gz file.";
  if (values.mask && !isNiftiName(values.mask.name)) {
    errors.mask = "The mask must be a .nii or .nii.gz file.";
  }
  const target = parseTarget(values.target ?? "");
  if (!target.ok) errors.target = target.error;
  if (values.brainMask && !isNiftiName(values.brainMask.name)) {
    errors.brainMask = "The brain mask must be a .nii or .nii.gz file.";
  }
  return finish(errors, () => ({
    subject_key: subjectKey,
    label: Number(values.label) as Label,
    split: values.split as Split,
    image: values.image as File,
    mask: values.mask,
    target: target.ok ? target.value : null,
    ...(values.brainMask ? { brain_mask: values.brainMask } : {}),
  }));
}

// --- integrated gradients ------------------------------------------------------------------

export const IG_STEPS = { min: 1, max: 512, default: 32 } as const;

export function validateSteps(raw: string): string | number {
  return parseInteger(raw, "Steps", IG_STEPS.min, IG_STEPS.max);
}

/**
 * The parameters of an IG map from the form: a target completeness delta (percent of
 * |F(x) − F(x′)|; the worker chooses the points, params.target_delta) when one is given, else the
 * fixed number of steps. A string is the error to show.
 */
export function igParams(steps: string, targetPercent: string): string | { steps: number; baseline: "zero" } | { target_delta: number; baseline: "zero" } {
  const text = targetPercent.trim().replace(/%$/, "").trim();
  if (text !== "") {
    const value = Number(text);
    if (!Number.isFinite(value) || value <= 0 || value >= 100) {
      return "Target delta must be a percentage above 0 and below 100.";
    }
    return { target_delta: value / 100, baseline: "zero" };
  }
  const parsed = validateSteps(steps);
  return typeof parsed === "string" ? parsed : { steps: parsed, baseline: "zero" };
}

// Resource shapes of the Attrivue REST API (v1). Mirrors the backend's *Public schemas.

export type Role = "admin" | "user" | string;

export interface User {
  id: number;
  username: string;
  role: Role;
}

export interface LoginResponse {
  access_token: string;
  token_type: "bearer";
  user: User;
}

export interface ListResponse<T> {
  data: T[];
  count: number;
}

export interface Dataset {
  id: number;
  name: string;
  description: string | null;
  created_at: string;
  subject_count: number;
}

export interface DatasetCreate {
  name: string;
  description: string;
}

/** 0 = healthy, 1 = pathological. */
export type Label = 0 | 1;
export type Split = "train" | "val" | "test";
export const SPLITS: readonly Split[] = ["train", "val", "test"];

export interface Subject {
  id: number;
  dataset_id: number;
  subject_key: string;
  label: Label;
  split: Split;
  has_mask: boolean;
  shape: [number, number, number];
}

export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface Job {
  id: number;
  kind: string;
  status: JobStatus;
  progress: number;
  message: string | null;
  error: string | null;
}

export interface RunConfig {
  epochs: number;
  batch_size: number;
  learning_rate: number;
  seed: number;
}

export type Metrics = Record<string, number | string | null>;

export interface Run {
  id: number;
  name: string;
  dataset_id: number;
  status: JobStatus;
  config: RunConfig;
  metrics: Metrics | null;
  job_id: number | null;
  created_at: string;
}

export interface RunCreate {
  dataset_id: number;
  name: string;
  config: RunConfig;
}

export type AttributionMethod = "integrated_gradients";

export interface AttributionParams {
  steps: number;
  baseline: "zero";
}

export interface AttributionStats {
  min: number;
  max: number;
  positive_mass: number;
  negative_mass: number;
  mean_abs: number;
}

export interface Attribution {
  id: number;
  run_id: number;
  subject_id: number;
  method: AttributionMethod;
  params: AttributionParams;
  status: JobStatus;
  convergence_delta: number | null;
  stats: AttributionStats | null;
  job_id: number | null;
  created_at: string;
}

export interface AttributionCreate {
  run_id: number;
  subject_id: number;
  method: AttributionMethod;
  params: AttributionParams;
}

export const ACTIVE_STATUSES: readonly JobStatus[] = ["queued", "running"];

export function isActive(status: JobStatus): boolean {
  return ACTIVE_STATUSES.includes(status);
}

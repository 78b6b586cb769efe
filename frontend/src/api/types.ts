// Resource shapes of the Attrivue REST API (v1): aliases of the types generated from the
// backend's OpenAPI document (schema.d.ts; regenerate with `make openapi`). Nothing here
// restates a schema by hand; the helpers below only read the fields the backend declares
// as open objects or plain strings (run config, attribution stats and params, job status).
import type { components } from "./schema";

type Schemas = components["schemas"];

export type User = Schemas["UserPublic"];
export type Role = User["role"];
export type LoginResponse = Schemas["LoginResponse"];

export type Project = Schemas["ProjectPublic"];
export type ProjectRole = NonNullable<Project["role"]>;

export type Dataset = Schemas["DatasetPublic"];
export type DatasetCreate = Schemas["DatasetCreate"];
export type Subject = Schemas["SubjectPublic"];
export type Split = Subject["split"];

export type Job = Schemas["JobPublic"];

export type Run = Schemas["RunPublic"];
export type RunCreate = Schemas["RunCreate"];
export type Preset = Schemas["Preset"];
export type SubjectPrediction = Schemas["SubjectPrediction"];
export type SiteMetrics = Schemas["SiteMetrics"];
export type RunConfig = Run["config"];
export type Metrics = Run["metrics"];

export type RunCorrections = Schemas["RunCorrections"];
export type CorrectedTarget = Schemas["CorrectedTargetPublic"];
export type EpochMap = Schemas["EpochMapPublic"];

export type Attribution = Schemas["AttributionPublic"];
export type AttributionCreate = Schemas["AttributionCreate"];
export type AttributionMethod = NonNullable<AttributionCreate["method"]>;

/** 0 = healthy, 1 = pathological (the schema's label is an integer between 0 and 1). */
export type Label = 0 | 1;

/** Every split the schema allows, in display order (a new one is a type error here). */
export const SPLITS = ["train", "val", "test"] as const satisfies readonly Split[];
type MissingSplit = Exclude<Split, (typeof SPLITS)[number]>;
const everySplitListed: [MissingSplit] extends [never] ? true : MissingSplit = true;
void everySplitListed;

// --- project roles (backend.services.projects) ----------------------------------------------

/** Roles that may upload data and launch runs and attributions in a project. */
export const WRITE_ROLES: readonly ProjectRole[] = ["admin", "researcher"];

export function canWrite(role: ProjectRole | null | undefined): boolean {
  return role != null && WRITE_ROLES.includes(role);
}

// --- job status: a plain string in the schema; these are the values the backend uses -------

export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export const ACTIVE_STATUSES: readonly string[] = ["queued", "running"] satisfies JobStatus[];

export function isActive(status: string): boolean {
  return ACTIVE_STATUSES.includes(status);
}

// --- attribution stats: an open object in the schema ----------------------------------------

/**
 * The summary statistics stored with each map (AttributionPublic.stats, worker/ml/attribution/
 * captum_eval.py): what the viewer needs for its default thresholds. Not the richer answer of
 * GET /attributions/{id}/stats, which is components["schemas"]["AttributionStats"].
 */
export interface MapStats {
  min: number;
  max: number;
  positive_mass: number | null;
  negative_mass: number | null;
  mean_abs: number | null;
}

function finite(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** The map's statistics, or null when min and max are not both numbers. */
export function readStats(stats: Attribution["stats"] | null | undefined): MapStats | null {
  const min = finite(stats?.min);
  const max = finite(stats?.max);
  if (min === null || max === null) return null;
  return {
    min,
    max,
    positive_mass: finite(stats?.positive_mass),
    negative_mass: finite(stats?.negative_mass),
    mean_abs: finite(stats?.mean_abs),
  };
}

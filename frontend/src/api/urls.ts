// URLs of the volume files the viewer loads, built from the OpenAPI paths (a renamed route is a
// type error). They end in .nii.gz so NiiVue can tell the format.
import { apiUrl } from "./openapi";

type Id = number | string;

/** A numeric id from a route parameter; throws a readable error for anything else. */
export function parseId(raw: string | undefined, what = "id"): number {
  const text = (raw ?? "").trim();
  if (!/^\d+$/.test(text)) throw new Error(`Not a valid ${what}: ${JSON.stringify(raw ?? "")}`);
  return Number(text);
}

export function subjectImageUrl(subjectId: number): string {
  return apiUrl("/subjects/{subject_id}/image.nii.gz", { path: { subject_id: subjectId } });
}

/** Multi-modal subjects: the image of channel `index` (the subject's `channels`; 0 is the image). */
export function subjectChannelUrl(subjectId: number, index: number): string {
  return apiUrl("/subjects/{subject_id}/channels/{index}.nii.gz", { path: { subject_id: subjectId, index } });
}

/** The lesion mask with values 0 and 2: 2 is green in NiiVue's default drawing colormap. */
export function subjectMaskDrawingUrl(subjectId: number): string {
  return apiUrl("/subjects/{subject_id}/mask.nii.gz", {
    path: { subject_id: subjectId },
    query: { drawing: true },
  });
}

/** The run's per-subject predictions as CSV (subject, split, site, label, logit, probability). */
export function runPredictionsCsvUrl(runId: number): string {
  return apiUrl("/runs/{run_id}/predictions.csv", { path: { run_id: runId } });
}

export function attributionMapUrl(attributionId: number): string {
  return apiUrl("/attributions/{attribution_id}/map.nii.gz", { path: { attribution_id: attributionId } });
}

/** The sign agreement over samples of a smoothgrad or gradient_shap map (float32 in [0, 1]). */
export function attributionAgreementUrl(attributionId: number): string {
  return apiUrl("/attributions/{attribution_id}/agreement.nii.gz", { path: { attribution_id: attributionId } });
}

/**
 * The map the viewers load: int8 with scl_slope = max|A| / 127 (one step is 0.79 % of the peak;
 * the largest error is half a step, max|A| / 254). NiiVue applies the slope.
 */
export function attributionDisplayUrl(attributionId: number): string {
  return apiUrl("/attributions/{attribution_id}/display.nii.gz", { path: { attribution_id: attributionId } });
}

/** Multi-modal subjects: the map of input channel `index` (float32; the channels' maps sum to the map). */
export function attributionChannelMapUrl(attributionId: number, index: number): string {
  return apiUrl("/attributions/{attribution_id}/channels/{index}.nii.gz", {
    path: { attribution_id: attributionId, index },
  });
}

/** A review queue item's display map, named by the item's opaque token (works blinded). */
export function reviewItemDisplayUrl(item: string): string {
  return apiUrl("/reviews/items/{item}/display.nii.gz", { path: { item } });
}

/** In-app route of the viewer, optionally pinned to one attribution. */
export function viewerPath(subjectId: Id, attributionId?: Id | null): string {
  const base = `/viewer/${encodeURIComponent(String(subjectId))}`;
  return attributionId == null ? base : `${base}?attribution=${encodeURIComponent(String(attributionId))}`;
}

/** The run's Server-Sent Events (run, job, metrics, end); EventSource sends the session cookie. */
export function runEventsUrl(runId: number): string {
  return apiUrl("/runs/{run_id}/events", { path: { run_id: runId } });
}

export function runPath(runId: Id): string {
  return `/runs/${encodeURIComponent(String(runId))}`;
}

export function runComparePath(runIds: readonly Id[]): string {
  return `/runs/compare?ids=${runIds.map((id) => encodeURIComponent(String(id))).join(",")}`;
}

/** The compare viewer: up to four maps of one subject side by side. */
export function compareViewerPath(subjectId: Id, attributionIds: readonly Id[] = []): string {
  const base = `/compare?subject=${encodeURIComponent(String(subjectId))}`;
  return attributionIds.length === 0 ? base : `${base}&attributions=${attributionIds.join(",")}`;
}

/** Ids from a comma-separated query value ("3,5, 8"); anything that is not an id is dropped. */
export function parseIdList(raw: string | null): number[] {
  return [...new Set((raw ?? "").split(",").map((s) => s.trim()).filter((s) => /^\d+$/.test(s)).map(Number))];
}

/** The review page of a project. */
export function reviewPath(projectId: Id): string {
  return `/review?project=${encodeURIComponent(String(projectId))}`;
}

/** The CSV of the reviews the user may see (optionally one run's). */
export function reviewsCsvUrl(): string {
  return apiUrl("/reviews/export.csv");
}

export function reviewCorrectionUrl(reviewId: number): string {
  return apiUrl("/reviews/{review_id}/correction.nii.gz", { path: { review_id: reviewId } });
}

/** A watch subject's attribution map after one epoch (int16 on the working grid). */
export function epochMapUrl(runId: number, subjectId: number, epoch: number): string {
  return apiUrl("/runs/{run_id}/epoch-maps/{subject_id}/{epoch}.nii.gz", {
    path: { run_id: runId, subject_id: subjectId, epoch },
  });
}

/** The viewer stepping through a run's epoch maps of one subject. */
export function epochViewerPath(subjectId: Id, runId: Id): string {
  return `/viewer/${encodeURIComponent(String(subjectId))}?run=${encodeURIComponent(String(runId))}`;
}

/** A run's checkpoint: a trained run's best.pt, or the TorchScript file an imported run came as. */
export function runCheckpointUrl(runId: number): string {
  return apiUrl("/runs/{run_id}/checkpoint", { path: { run_id: runId } });
}

/** A trained run as a zipped MONAI bundle (weights, preprocessing, metadata). */
export function runBundleUrl(runId: number): string {
  return apiUrl("/runs/{run_id}/bundle", { path: { run_id: runId } });
}

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

/** The lesion mask with values 0 and 2: 2 is green in NiiVue's default drawing colormap. */
export function subjectMaskDrawingUrl(subjectId: number): string {
  return apiUrl("/subjects/{subject_id}/mask.nii.gz", {
    path: { subject_id: subjectId },
    query: { drawing: true },
  });
}

export function attributionMapUrl(attributionId: number): string {
  return apiUrl("/attributions/{attribution_id}/map.nii.gz", { path: { attribution_id: attributionId } });
}

/** In-app route of the viewer, optionally pinned to one attribution. */
export function viewerPath(subjectId: Id, attributionId?: Id | null): string {
  const base = `/viewer/${encodeURIComponent(String(subjectId))}`;
  return attributionId == null ? base : `${base}?attribution=${encodeURIComponent(String(attributionId))}`;
}

// URLs of the volume files the viewer loads. They end in .nii.gz so NiiVue can tell the format.
import { API_PREFIX } from "./http";

type Id = number | string;

export function subjectImageUrl(subjectId: Id): string {
  return `${API_PREFIX}/subjects/${encodeURIComponent(String(subjectId))}/image.nii.gz`;
}

/** The lesion mask with values 0 and 2: 2 is green in NiiVue's default drawing colormap. */
export function subjectMaskDrawingUrl(subjectId: Id): string {
  return `${API_PREFIX}/subjects/${encodeURIComponent(String(subjectId))}/mask.nii.gz?drawing=true`;
}

export function attributionMapUrl(attributionId: Id): string {
  return `${API_PREFIX}/attributions/${encodeURIComponent(String(attributionId))}/map.nii.gz`;
}

/** In-app route of the viewer, optionally pinned to one attribution. */
export function viewerPath(subjectId: Id, attributionId?: Id | null): string {
  const base = `/viewer/${encodeURIComponent(String(subjectId))}`;
  return attributionId == null ? base : `${base}?attribution=${encodeURIComponent(String(attributionId))}`;
}

// A readable line for the voxel under the crosshair, from NiiVue's location event.
import { formatNumber } from "../format";

interface LocationValue {
  name?: string;
  value?: number;
}

/** Volumes are named "<layer>.nii.gz" by the overlay options; the lesion ring has no meaning. */
const LAYER_LABELS: Record<string, string> = { image: "MR", relevance: "relevance" };

export function formatLocation(location: unknown): string {
  if (!location || typeof location !== "object") return "";
  const { mm, values } = location as { mm?: ArrayLike<number>; values?: LocationValue[] };
  const parts: string[] = [];
  if (mm && mm.length >= 3) {
    parts.push(`${[0, 1, 2].map((i) => Number(mm[i]).toFixed(1)).join(", ")} mm`);
  }
  for (const entry of values ?? []) {
    const layer = String(entry.name ?? "").replace(/\.nii(\.gz)?$/, "");
    const label = LAYER_LABELS[layer];
    if (label && typeof entry.value === "number") parts.push(`${label} ${formatNumber(entry.value)}`);
  }
  return parts.join(" · ");
}

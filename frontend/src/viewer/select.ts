import type { Attribution } from "../api/types";

/** The most recent succeeded attribution (by creation time, then id), or null. */
export function newestSucceeded(attributions: readonly Attribution[]): Attribution | null {
  let best: Attribution | null = null;
  for (const a of attributions) {
    if (a.status !== "succeeded") continue;
    if (
      !best ||
      a.created_at > best.created_at ||
      (a.created_at === best.created_at && a.id > best.id)
    ) {
      best = a;
    }
  }
  return best;
}

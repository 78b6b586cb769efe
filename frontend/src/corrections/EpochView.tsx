// The viewer's epoch mode (/viewer/:subject?run=:id): a slider over the run's stored epoch maps
// of this subject; the chosen epoch's map becomes the relevance overlay.
import { type ReactNode, useEffect, useState } from "react";
import { api } from "../api/client";
import { epochMapUrl } from "../api/urls";
import { ErrorMessage } from "../components/common";
import { formatNumber } from "../format";
import { useAsync } from "../hooks";
import type { ViewerSource } from "../viewer/ViewerController";
import { epochsOf, mapRange } from "./epochs";

export interface EpochView {
  /** The overlay to show instead of the subject's attribution; null outside epoch mode. */
  relevance: ViewerSource["relevance"] | null;
  /** The slider panel (null outside epoch mode). */
  panel: ReactNode;
}

export function useEpochView(subjectId: number | null, runParam: string | null): EpochView {
  const runId = runParam && /^\d+$/.test(runParam) ? Number(runParam) : null;
  const maps = useAsync(
    async () => (runId != null && subjectId != null ? (await api.runs.epochMaps(runId, subjectId)).data : []),
    [runId, subjectId],
  );
  const epochs = subjectId != null ? epochsOf(maps.data ?? [], subjectId) : [];
  const [index, setIndex] = useState<number | null>(null);
  // Start on the last epoch once the list is known.
  useEffect(() => {
    if (epochs.length > 0 && index === null) setIndex(epochs.length - 1);
  }, [epochs.length, index]);
  if (runId == null || subjectId == null) return { relevance: null, panel: null };
  const chosen = index != null ? epochs[Math.min(index, epochs.length - 1)] : undefined;
  const range = chosen ? mapRange(chosen) : null;
  const relevance =
    chosen && range ? { url: epochMapUrl(runId, subjectId, chosen.epoch), stats: range } : null;
  const panel = (
    <div className="panel epoch-slider" data-epoch={chosen?.epoch ?? ""} data-run-id={runId}>
      <h3>Epochs of run {runId}</h3>
      <ErrorMessage error={maps.error} />
      {epochs.length === 0 ? (
        <p className="muted small">{maps.loading ? "Loading…" : "No epoch maps stored for this subject."}</p>
      ) : (
        <>
          <label>
            Epoch <strong>{chosen?.epoch}</strong> of {epochs[epochs.length - 1].epoch}
            <input
              type="range"
              aria-label="Epoch"
              min={0}
              max={epochs.length - 1}
              step={1}
              value={index ?? epochs.length - 1}
              onChange={(e) => setIndex(Number(e.target.value))}
            />
          </label>
          {chosen ? (
            <p className="muted small">
              lesion relevance mass {formatNumber(chosen.stats?.lesion_mass as number | null | undefined)} · Dice
              (top 5%) {formatNumber(chosen.stats?.dice_top5 as number | null | undefined)} · {chosen.method}, int16
              on a {chosen.shape.join("×")} grid
            </p>
          ) : null}
        </>
      )}
    </div>
  );
  return { relevance, panel };
}

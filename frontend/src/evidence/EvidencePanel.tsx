// Beside a map: run its sanity checks and faithfulness, follow the job, show the verdict,
// its numbers, the deletion and insertion curves, the IROF curves and the similarity per
// randomised layer.
import { useState } from "react";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import type { Attribution } from "../api/types";
import { CurveChart } from "../charts/CurveChart";
import { JOB_POLL_MS, useAsync, useInterval } from "../hooks";
import {
  CHECK_NAMES,
  type EvidenceCheck,
  evidenceRows,
  faithfulnessSeries,
  irofSeries,
  isPending,
  layerSeries,
  verdictText,
} from "./evidence";

export function EvidencePanel({ attribution }: { attribution: Attribution }) {
  const { data, error, reload } = useAsync(() => api.evidence.forMap(attribution.id), [attribution.id]);
  const [starting, setStarting] = useState(false);
  const [startError, setStartError] = useState<string | null>(null);
  const latest: EvidenceCheck | undefined = data?.data[0];
  const pending = latest ? isPending(latest) : false;
  useInterval(reload, pending ? JOB_POLL_MS : null);

  const start = async () => {
    setStarting(true);
    setStartError(null);
    try {
      await api.evidence.create(attribution.id, { checks: ["model_randomisation", "faithfulness"] });
      reload();
    } catch (e) {
      setStartError(errorMessage(e));
    } finally {
      setStarting(false);
    }
  };

  const rows = latest ? evidenceRows(latest) : [];
  const curves = latest ? faithfulnessSeries(latest) : [];
  const removal = latest ? irofSeries(latest) : [];
  const layers = latest ? layerSeries(latest) : [];
  return (
    <section className="evidence" aria-label="Evidence">
      <h2>Evidence</h2>
      <button type="button" onClick={start} disabled={starting || pending || attribution.status !== "succeeded"}>
        Run sanity checks
      </button>
      {startError ? (
        <p className="error" role="alert">
          {startError}
        </p>
      ) : null}
      {error ? <p className="error">{errorMessage(error)}</p> : null}
      {latest ? (
        <>
          <p data-testid="evidence-verdict" data-check-id={latest.id} data-verdict={latest.verdict ?? latest.status}>
            <strong>{verdictText(latest)}</strong>
          </p>
          {latest.reasons.length > 0 ? (
            <ul className="small" data-testid="evidence-reasons">
              {latest.reasons.map((reason) => (
                <li key={reason}>{reason}</li>
              ))}
            </ul>
          ) : null}
          {rows.length > 0 ? (
            <dl data-testid="evidence-numbers">
              {rows.map((row) => (
                <div key={`${row.check}-${row.label}`} data-check={row.check}>
                  <dt title={CHECK_NAMES[row.check]}>{row.label}</dt>
                  <dd>{row.value}</dd>
                </div>
              ))}
            </dl>
          ) : null}
          {curves.length > 0 ? (
            <CurveChart title="Deletion and insertion (logit)" series={curves} xLabel="fraction" />
          ) : null}
          {removal.length > 0 ? (
            <CurveChart title="IROF (probability)" series={removal} xLabel="fraction of supervoxels" />
          ) : null}
          {layers.length > 0 ? (
            <CurveChart title="Similarity per randomised layer" series={layers} xLabel="layers" />
          ) : null}
        </>
      ) : data ? (
        <p className="muted small">No checks yet for this map.</p>
      ) : null}
    </section>
  );
}

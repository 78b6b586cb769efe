// "Why is this segmented?" for a segmentation run: asks for the region attribution of the whole
// predicted mask, of the predicted lesion under the crosshair (click it in the viewer first), or
// of a box around the crosshair; follows the job and opens the new map when it is stored.
import { useEffect, useRef, useState } from "react";
import { useNavigate } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import type { Attribution, AttributionCreate, Run } from "../api/types";
import { viewerPath } from "../api/urls";
import { type RegionSpec, type Triple, boxRegion, cornerBox, describeRegion, pointRegion } from "./region";

const POLL_MS = 1000;
const STEPS = 32;

export function RegionPanel({
  run,
  subjectId,
  crosshairMM,
  attribution,
}: {
  run: Run;
  subjectId: number;
  crosshairMM: Triple | null;
  attribution: Attribution | null;
}) {
  const navigate = useNavigate();
  const [status, setStatus] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [half, setHalf] = useState("8");
  const [corner, setCorner] = useState<Triple | null>(null);
  const alive = useRef(true);
  useEffect(() => {
    alive.current = true;
    return () => {
      alive.current = false;
    };
  }, []);

  const explain = async (region: RegionSpec) => {
    setBusy(true);
    setError(null);
    setStatus("queued");
    try {
      const body = { run_id: run.id, subject_id: subjectId, params: { steps: STEPS }, region } as AttributionCreate;
      const made = await api.attributions.create(body);
      while (alive.current && made.job_id != null) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        const job = await api.jobs.get(made.job_id);
        if (!alive.current) return;
        setStatus(job.message ? `${job.status}: ${job.message}` : job.status);
        if (job.status === "succeeded") {
          navigate(viewerPath(subjectId, made.id));
          return;
        }
        if (job.status === "failed" || job.status === "cancelled") {
          setError(job.error ?? `The map's job ${job.status}.`);
          return;
        }
      }
    } catch (reason) {
      if (alive.current) setError(errorMessage(reason));
    } finally {
      if (alive.current) setBusy(false);
    }
  };

  const boxAtCrosshair = () => {
    if (!crosshairMM) return;
    try {
      void explain(boxRegion(crosshairMM, Number(half)));
    } catch (reason) {
      setError(errorMessage(reason));
    }
  };

  const shown = attribution?.region ? describeRegion(attribution.region, attribution.stats) : "";
  return (
    <section className="region-panel" aria-label="Why is this segmented?">
      <h2>Why is this segmented?</h2>
      {shown ? (
        <p className="small">
          This map explains the <span data-testid="region-description">{shown}</span>: red voxels raise its
          foreground logits.
        </p>
      ) : null}
      <p className="muted small">Click a predicted lesion to put the crosshair on it, then ask.</p>
      <div className="form-row">
        <button type="button" disabled={busy || !crosshairMM} onClick={() => crosshairMM && void explain(pointRegion(crosshairMM))}>
          Explain the lesion at the crosshair
        </button>
        <button type="button" disabled={busy} onClick={() => void explain({ kind: "whole" })}>
          Explain the whole predicted mask
        </button>
      </div>
      <div className="form-row">
        <label>
          Box half-size (mm){" "}
          <input name="box_half_mm" inputMode="decimal" size={4} value={half} onChange={(e) => setHalf(e.target.value)} />
        </label>
        <button type="button" disabled={busy || !crosshairMM} onClick={boxAtCrosshair}>
          Explain a box around the crosshair
        </button>
      </div>
      <div className="form-row">
        <button type="button" disabled={busy || !crosshairMM} onClick={() => setCorner(crosshairMM)}>
          Box: first corner at the crosshair
        </button>
        <button
          type="button"
          disabled={busy || !crosshairMM || !corner}
          onClick={() => corner && crosshairMM && void explain(cornerBox(corner, crosshairMM))}
        >
          Box: second corner here, explain
        </button>
      </div>
      {corner ? (
        <p className="muted small" data-testid="box-corner">
          First corner ({corner.map((v) => v.toFixed(1)).join(", ")}) mm: click the opposite corner.
        </p>
      ) : null}
      {status ? (
        <p className="muted small" data-testid="region-status">
          {status}
        </p>
      ) : null}
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
    </section>
  );
}

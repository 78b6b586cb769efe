// "Compare baselines": queues the subject's missing maps across the baselines (zero, blurred,
// healthy mean) with the shown map's method and parameters, and opens the compare page on them.
import { useState } from "react";
import { useNavigate } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import type { Attribution, AttributionCreate } from "../api/types";
import { compareViewerPath } from "../api/urls";
import { planBaselineComparison } from "./baselineCompare";
import { BASELINES } from "./methodParams";

export function CompareBaselinesButton({ attribution }: { attribution: Attribution }) {
  const navigate = useNavigate();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const compare = async () => {
    setBusy(true);
    setError(null);
    try {
      const { data } = await api.attributions.list({ subject_id: attribution.subject_id, run_id: attribution.run_id });
      const plan = planBaselineComparison(attribution, data);
      const ids = { ...plan.existing };
      for (const baseline of plan.missing) {
        const body = {
          run_id: attribution.run_id,
          subject_id: attribution.subject_id,
          method: plan.method,
          params: { ...plan.params, baseline },
        } as AttributionCreate;
        ids[baseline] = (await api.attributions.create(body)).id;
      }
      const ordered = BASELINES.map((b) => ids[b]).filter((id): id is number => id !== undefined);
      navigate(compareViewerPath(attribution.subject_id, ordered));
    } catch (reason) {
      setError(errorMessage(reason));
      setBusy(false);
    }
  };

  return (
    <section className="compare-baselines" aria-label="Baselines">
      <button
        type="button"
        name="compare-baselines"
        disabled={busy}
        onClick={() => void compare()}
        title="Maps of this subject from the zero image, a blurred copy and the healthy training mean, side by side (missing ones are queued)"
      >
        Compare baselines
      </button>
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
    </section>
  );
}

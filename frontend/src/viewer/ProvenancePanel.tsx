// Where the displayed map came from: run, method, parameters and summary statistics.
import type { Attribution, Run } from "../api/types";
import { formatDate, formatNumber } from "../format";

export function ProvenancePanel({ attribution, run }: { attribution: Attribution; run?: Run | null }) {
  const stats = attribution.stats;
  return (
    <section className="provenance" aria-label="Provenance">
      <h2>Provenance</h2>
      <dl>
        <dt>Run</dt>
        <dd>{run ? `${run.name} (#${run.id})` : `#${attribution.run_id}`}</dd>
        <dt>Method</dt>
        <dd>{attribution.method === "integrated_gradients" ? "Integrated gradients" : attribution.method}</dd>
        <dt>Steps</dt>
        <dd>{attribution.params?.steps ?? "–"}</dd>
        <dt>Baseline</dt>
        <dd>{attribution.params?.baseline ?? "–"}</dd>
        <dt>Convergence delta</dt>
        <dd data-testid="convergence-delta">{formatNumber(attribution.convergence_delta)}</dd>
        <dt>Status</dt>
        <dd>{attribution.status}</dd>
        <dt>Computed</dt>
        <dd>{formatDate(attribution.created_at)}</dd>
      </dl>
      {stats ? (
        <>
          <h3>Map statistics</h3>
          <dl>
            <dt>Min / max</dt>
            <dd>
              {formatNumber(stats.min)} / {formatNumber(stats.max)}
            </dd>
            <dt>Positive mass</dt>
            <dd>{formatNumber(stats.positive_mass)}</dd>
            <dt>Negative mass</dt>
            <dd>{formatNumber(stats.negative_mass)}</dd>
            <dt>Mean |A|</dt>
            <dd>{formatNumber(stats.mean_abs)}</dd>
          </dl>
        </>
      ) : null}
    </section>
  );
}

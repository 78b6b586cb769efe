// Where the displayed map came from: run, method, parameters and summary statistics.
import { Fragment } from "react";
import type { Attribution, Run } from "../api/types";
import { readStats } from "../api/types";
import { fieldLabel, formatDate, formatNumber, formatValue } from "../format";

const METHOD_NAMES: Record<string, string> = {
  integrated_gradients: "Integrated gradients",
  gradient_shap: "Gradient SHAP",
  saliency: "Saliency",
  input_x_gradient: "Input × gradient",
  deeplift: "DeepLIFT",
  guided_backprop: "Guided backpropagation",
  occlusion: "Occlusion",
  smoothgrad: "SmoothGrad",
  grad_cam: "Grad-CAM",
};

export function ProvenancePanel({ attribution, run }: { attribution: Attribution; run?: Run | null }) {
  const stats = readStats(attribution.stats);
  const params = Object.entries(attribution.params ?? {});
  return (
    <section className="provenance" aria-label="Provenance">
      <h2>Provenance</h2>
      <dl>
        <dt>Run</dt>
        <dd>{run ? `${run.name} (#${run.id})` : `#${attribution.run_id}`}</dd>
        <dt>Method</dt>
        <dd>{METHOD_NAMES[attribution.method] ?? attribution.method}</dd>
        {params.length === 0 ? (
          <>
            <dt>Parameters</dt>
            <dd>defaults</dd>
          </>
        ) : (
          params.map(([key, value]) => (
            <Fragment key={key}>
              <dt>{fieldLabel(key)}</dt>
              <dd>{formatValue(value)}</dd>
            </Fragment>
          ))
        )}
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

// Where the displayed map came from: run, method, parameters and summary statistics.
import { Fragment } from "react";
import type { Attribution, Run } from "../api/types";
import { readStats } from "../api/types";
import { ATTRIBUTION_METHOD_CHOICES } from "../forms/choices";
import { fieldLabel, formatDate, formatNumber, formatValue } from "../format";
import {
  baselineOutputOf,
  baselineText,
  formatPercent,
  methodParams,
  pointsUsedOf,
  sampleSpreadOf,
  uncertaintyOf,
} from "./methodParams";

const METHOD_NAMES: Record<string, string> = Object.fromEntries(
  ATTRIBUTION_METHOD_CHOICES.map((m) => [m.value, m.label]),
);

export function ProvenancePanel({ attribution, run }: { attribution: Attribution; run?: Run | null }) {
  const stats = readStats(attribution.stats);
  const given = attribution.params ?? {};
  // The parameters the method read (defaults filled in); as given for a method not in the table.
  const rows =
    methodParams(attribution.method, given) ??
    Object.entries(given).map(([key, value]) => ({ key, label: fieldLabel(key), value: formatValue(value), isDefault: false }));
  const baseline = baselineText(attribution.method, given);
  const uncertainty = uncertaintyOf(attribution);
  const spread = sampleSpreadOf(attribution.stats);
  const pointsUsed = pointsUsedOf(attribution.stats);
  const baselineOutput = baselineOutputOf(attribution);
  return (
    <section className="provenance" aria-label="Provenance">
      <h2>Provenance</h2>
      <dl>
        <dt>Run</dt>
        <dd>{run ? `${run.name} (#${run.id})` : `#${attribution.run_id}`}</dd>
        <dt>Method</dt>
        <dd data-testid="method">{METHOD_NAMES[attribution.method] ?? attribution.method}</dd>
        {baseline ? (
          <>
            <dt>Baseline x′</dt>
            <dd data-testid="baseline">{baseline}</dd>
          </>
        ) : null}
        {rows.map((row) => (
          <Fragment key={row.key}>
            <dt>{row.label}</dt>
            <dd data-param={row.key}>
              {row.value}
              {row.isDefault ? <span className="muted"> (default)</span> : null}
            </dd>
          </Fragment>
        ))}
        <dt>Status</dt>
        <dd>{attribution.status}</dd>
        <dt>Computed</dt>
        <dd>{formatDate(attribution.created_at)}</dd>
      </dl>
      {uncertainty || attribution.logit != null ? (
        <>
          <h3>Uncertainty</h3>
          <dl data-testid="uncertainty">
            {uncertainty ? (
              <>
                <dt title="Completeness: |sum of the map - (F(x) - F(x'))|">Convergence delta</dt>
                <dd data-testid="convergence-delta">{formatNumber(uncertainty.delta)}</dd>
                {uncertainty.relative !== null ? (
                  <>
                    <dt>Relative to F(x) − F(x′)</dt>
                    <dd data-testid="relative-delta">{formatPercent(uncertainty.relative)}</dd>
                  </>
                ) : null}
                {pointsUsed ? (
                  <>
                    <dt title="Interpolation points along the path from x′ to x">Points used</dt>
                    <dd data-testid="points-used">
                      {pointsUsed.points}
                      {pointsUsed.reached === true ? <span className="muted"> (target reached)</span> : null}
                      {pointsUsed.reached === false ? (
                        <span className="muted"> (target not reached: the cap on points came first)</span>
                      ) : null}
                    </dd>
                  </>
                ) : null}
              </>
            ) : null}
            {attribution.logit != null ? (
              <>
                <dt>Model output F(x)</dt>
                <dd data-testid="logit">{formatNumber(attribution.logit)}</dd>
              </>
            ) : null}
            {baselineOutput ? (
              <>
                <dt title="The model's output at the baseline; the map sums to F(x) - F(x')">Baseline output F(x′)</dt>
                <dd data-testid="baseline-logit">
                  {formatNumber(baselineOutput.baselineLogit)}
                  <span className="muted"> (p = {baselineOutput.probability.toFixed(2)})</span>
                </dd>
              </>
            ) : null}
          </dl>
          {baselineOutput?.warning ? (
            <p className="warning small" role="note" data-testid="baseline-warning">
              {baselineOutput.warning}
            </p>
          ) : null}
          {!uncertainty ? (
            <p className="muted small">{METHOD_NAMES[attribution.method] ?? attribution.method} has no completeness check.</p>
          ) : null}
        </>
      ) : null}
      {spread ? (
        <>
          <h3>Spread over samples</h3>
          <dl data-testid="sample-spread">
            <dt title="Standard deviation of the per-sample maps, averaged over the brain">Mean SD</dt>
            <dd data-testid="mean-sd">{formatNumber(spread.meanSd)}</dd>
            <dt title="Brain voxels where fewer than 80 % of the samples share the sign of the map">
              Sign agreement &lt; 0.8
            </dt>
            <dd data-testid="low-agreement">{formatPercent(spread.lowAgreementShare)} of the brain</dd>
          </dl>
        </>
      ) : null}
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

// The relevance colour scale in HTML, labelled with the current thresholds.
import { formatNumber } from "../format";
import { type RelevanceLegend, relevanceLegend } from "./legend";
import type { RelevanceThresholds } from "./overlay";

// NiiVue's "blue" and "red" colormaps run from black to the full colour.
const NEGATIVE_GRADIENT = "linear-gradient(to right, rgb(0,0,255), rgb(0,0,10))";
const POSITIVE_GRADIENT = "linear-gradient(to right, rgb(10,0,0), rgb(255,0,0))";

export function Colorbar({
  thresholds,
  legend = relevanceLegend(null),
}: {
  thresholds: RelevanceThresholds;
  legend?: RelevanceLegend;
}) {
  const { positive, negative } = thresholds;
  if (!positive && !negative) return null;
  return (
    <figure className="colorbar" aria-label="Relevance colour scale">
      <div className="colorbar-bars">
        {negative ? (
          <div className="colorbar-part">
            <div className="colorbar-bar" style={{ background: NEGATIVE_GRADIENT }} />
            <div className="colorbar-ticks">
              <span>{formatNumber(-negative.max)}</span>
              <span>{formatNumber(-negative.min)}</span>
            </div>
          </div>
        ) : null}
        <div className="colorbar-gap" title="Hidden: below both thresholds">
          <span>0</span>
        </div>
        {positive ? (
          <div className="colorbar-part">
            <div className="colorbar-bar" style={{ background: POSITIVE_GRADIENT }} />
            <div className="colorbar-ticks">
              <span>{formatNumber(positive.min)}</span>
              <span>{formatNumber(positive.max)}</span>
            </div>
          </div>
        ) : null}
      </div>
      <figcaption className="colorbar-caption" title={legend.description} data-testid="relevance-legend">
        <span className="healthy">{legend.negative}</span>
        <span className="pathological">{legend.positive}</span>
      </figcaption>
    </figure>
  );
}

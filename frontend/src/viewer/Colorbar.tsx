// The relevance colour scale in HTML, labelled with the current thresholds, in the colours of
// the chosen scale (colourScales.ts).
import { formatNumber } from "../format";
import { COLOUR_SCALES, type ColourScaleId, DEFAULT_COLOUR_SCALE, gradients } from "./colourScales";
import { type RelevanceLegend, relevanceLegend } from "./legend";
import type { RelevanceThresholds } from "./overlay";

/** A small sample of one sign's ramp, for labels beside layer toggles. */
export function SignSwatch({ sign, scale }: { sign: "positive" | "negative"; scale: ColourScaleId }) {
  const g = gradients(COLOUR_SCALES[scale]);
  const ramp = COLOUR_SCALES[scale][sign];
  return (
    <span
      className="swatch"
      style={{ background: sign === "positive" ? g.positive : g.negative }}
      title={`${ramp.hue}: ${sign === "positive" ? "A > 0" : "A < 0"}`}
      aria-hidden="true"
    />
  );
}

export function Colorbar({
  thresholds,
  legend = relevanceLegend(null),
  scale = DEFAULT_COLOUR_SCALE,
  caption,
}: {
  thresholds: RelevanceThresholds;
  legend?: RelevanceLegend;
  scale?: ColourScaleId;
  /** A line under the bar, e.g. which panels share the scale. */
  caption?: string;
}) {
  const { positive, negative } = thresholds;
  if (!positive && !negative) return null;
  const colours = COLOUR_SCALES[scale];
  const g = gradients(colours);
  return (
    <figure className="colorbar" aria-label="Relevance colour scale" data-colour-scale={scale}>
      <div className="colorbar-bars">
        {negative ? (
          <div className="colorbar-part">
            <div className="colorbar-bar" style={{ background: g.negative }} />
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
            <div className="colorbar-bar" style={{ background: g.positive }} />
            <div className="colorbar-ticks">
              <span>{formatNumber(positive.min)}</span>
              <span>{formatNumber(positive.max)}</span>
            </div>
          </div>
        ) : null}
      </div>
      <figcaption className="colorbar-caption" title={legend.description} data-testid="relevance-legend">
        <span className="healthy">
          <SignSwatch sign="negative" scale={scale} /> {colours.negative.hue}: {legend.negative}
        </span>
        <span className="pathological">
          <SignSwatch sign="positive" scale={scale} /> {colours.positive.hue}: {legend.positive}
        </span>
      </figcaption>
      {caption ? <p className="muted small colorbar-note">{caption}</p> : null}
    </figure>
  );
}

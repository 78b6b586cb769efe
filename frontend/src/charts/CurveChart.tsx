import { type MouseEvent, useState } from "react";
import type { Series } from "./curves";
import { canLog, extentOf, nearestX, project, seriesPath, toLog, unprojectX, valuesAt } from "./curves";
import { formatNumber } from "../format";

const BOX = { width: 360, height: 180, pad: 28 };
const COLOURS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#e8590c", "#0b7285"];

const colourOf = (s: Series, i: number) => s.colour ?? COLOURS[i % COLOURS.length];

/**
 * Several series on one pair of axes, drawn as plain SVG paths, one path per series. Hovering
 * shows the values at the nearest epoch (a guide line and a readout); every point also carries
 * a native tooltip. "Log scale" draws y on a log axis when all values are positive.
 */
export function CurveChart({
  title,
  series,
  xLabel = "epoch",
}: {
  title: string;
  series: Series[];
  /** What x is, in the axis label, the tooltips and the readout. */
  xLabel?: string;
}) {
  const [log, setLog] = useState(false);
  const [hoverX, setHoverX] = useState<number | null>(null);
  const loggable = canLog(series);
  const useLog = log && loggable;
  const drawn = useLog ? toLog(series) : series;
  const extent = extentOf(drawn);
  const yLabel = (v: number) => formatNumber(useLog ? 10 ** v : v);

  const onMove = (event: MouseEvent<SVGSVGElement>) => {
    if (!extent) return;
    const rect = event.currentTarget.getBoundingClientRect();
    const svgX = ((event.clientX - rect.left) / rect.width) * BOX.width;
    setHoverX(nearestX(series, unprojectX(svgX, extent, BOX)));
  };
  const readout = hoverX === null ? [] : valuesAt(series, hoverX);
  const guide = extent && hoverX !== null ? project({ x: hoverX, y: extent.yMin }, extent, BOX).x : null;

  return (
    <figure className="chart" data-chart={title} data-scale={useLog ? "log" : "linear"}>
      <figcaption>
        {title}
        <label className="chart-log small">
          <input
            type="checkbox"
            checked={useLog}
            disabled={!loggable}
            onChange={(e) => setLog(e.target.checked)}
            title={loggable ? "Draw y on a log scale" : "A log scale needs positive values"}
          />{" "}
          Log scale
        </label>
      </figcaption>
      {extent ? (
        <svg
          viewBox={`0 0 ${BOX.width} ${BOX.height}`}
          role="img"
          aria-label={title}
          onMouseMove={onMove}
          onMouseLeave={() => setHoverX(null)}
        >
          <rect x={BOX.pad} y={BOX.pad} width={BOX.width - 2 * BOX.pad} height={BOX.height - 2 * BOX.pad} className="chart-frame" />
          <text x={2} y={BOX.pad} className="chart-tick">{yLabel(extent.yMax)}</text>
          <text x={2} y={BOX.height - BOX.pad} className="chart-tick">{yLabel(extent.yMin)}</text>
          {useLog ? (
            <text x={2} y={BOX.height / 2} className="chart-tick">log</text>
          ) : null}
          <text x={BOX.pad} y={BOX.height - 6} className="chart-tick">{xLabel} {formatNumber(extent.xMin)}</text>
          <text x={BOX.width - BOX.pad} y={BOX.height - 6} className="chart-tick" textAnchor="end">
            {formatNumber(extent.xMax)}
          </text>
          {guide !== null ? (
            <line x1={guide} x2={guide} y1={BOX.pad} y2={BOX.height - BOX.pad} className="chart-guide" />
          ) : null}
          {drawn.map((s, i) => (
            <g key={s.name} data-series={s.name}>
              <path
                d={seriesPath(s, extent, BOX)}
                stroke={colourOf(s, i)}
                strokeDasharray={s.dash}
                fill="none"
                strokeWidth={2}
              />
              {s.points.map((p, j) => {
                const q = project(p, extent, BOX);
                const original = series[i].points[j];
                return (
                  <circle
                    key={j}
                    cx={q.x}
                    cy={q.y}
                    r={hoverX === p.x || s.points.length === 1 ? 3.5 : 2}
                    fill={colourOf(s, i)}
                  >
                    <title>{`${s.name} · ${xLabel} ${formatNumber(original.x)}: ${formatNumber(original.y)}`}</title>
                  </circle>
                );
              })}
            </g>
          ))}
        </svg>
      ) : (
        <p className="muted small">No points yet.</p>
      )}
      <p className="chart-readout small" data-testid="chart-readout" aria-live="polite">
        {hoverX === null
          ? "\u00a0"
          : `${xLabel} ${formatNumber(hoverX)}: ${readout.map((r) => `${r.name} ${formatNumber(r.y)}`).join(" · ")}`}
      </p>
      <ul className="legend">
        {series.map((s, i) => (
          <li key={s.name}>
            <span className="swatch" style={{ background: colourOf(s, i) }} /> {s.name}{" "}
            <span className="muted">{formatNumber(s.points[s.points.length - 1]?.y)}</span>
          </li>
        ))}
      </ul>
    </figure>
  );
}

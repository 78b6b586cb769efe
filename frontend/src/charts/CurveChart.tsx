import type { Series } from "./curves";
import { extentOf, project, seriesPath } from "./curves";
import { formatNumber } from "../format";

const BOX = { width: 360, height: 180, pad: 24 };
const COLOURS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#862e9c", "#e8590c", "#0b7285"];

/** Several series on one pair of axes, drawn as plain SVG paths, one path per series. */
export function CurveChart({ title, series }: { title: string; series: Series[] }) {
  const extent = extentOf(series);
  return (
    <figure className="chart" data-chart={title}>
      <figcaption>{title}</figcaption>
      {extent ? (
        <svg viewBox={`0 0 ${BOX.width} ${BOX.height}`} role="img" aria-label={title}>
          <rect x={BOX.pad} y={BOX.pad} width={BOX.width - 2 * BOX.pad} height={BOX.height - 2 * BOX.pad} className="chart-frame" />
          <text x={2} y={BOX.pad} className="chart-tick">{formatNumber(extent.yMax)}</text>
          <text x={2} y={BOX.height - BOX.pad} className="chart-tick">{formatNumber(extent.yMin)}</text>
          <text x={BOX.pad} y={BOX.height - 6} className="chart-tick">epoch {formatNumber(extent.xMin)}</text>
          <text x={BOX.width - BOX.pad} y={BOX.height - 6} className="chart-tick" textAnchor="end">
            {formatNumber(extent.xMax)}
          </text>
          {series.map((s, i) => (
            <g key={s.name} data-series={s.name}>
              <path d={seriesPath(s, extent, BOX)} stroke={COLOURS[i % COLOURS.length]} fill="none" strokeWidth={2} />
              {s.points.length === 1 ? (
                <circle {...circleAt(s, extent)} r={3} fill={COLOURS[i % COLOURS.length]} />
              ) : null}
            </g>
          ))}
        </svg>
      ) : (
        <p className="muted small">No points yet.</p>
      )}
      <ul className="legend">
        {series.map((s, i) => (
          <li key={s.name}>
            <span className="swatch" style={{ background: COLOURS[i % COLOURS.length] }} /> {s.name}{" "}
            <span className="muted">{formatNumber(s.points[s.points.length - 1]?.y)}</span>
          </li>
        ))}
      </ul>
    </figure>
  );
}

function circleAt(s: Series, extent: NonNullable<ReturnType<typeof extentOf>>) {
  const p = project(s.points[0], extent, BOX);
  return { cx: p.x, cy: p.y };
}

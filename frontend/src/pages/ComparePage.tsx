import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import type { Attribution, Run, Subject } from "../api/types";
import { readStats } from "../api/types";
import {
  attributionDisplayUrl,
  parseId,
  parseIdList,
  runPath,
  subjectImageUrl,
  subjectMaskDrawingUrl,
} from "../api/urls";
import { ErrorMessage } from "../components/common";
import { formatNumber, labelName } from "../format";
import { useAsync } from "../hooks";
import type { ViewerController } from "../viewer/ViewerController";
import { MULTIPLANAR_TYPE } from "@niivue/niivue";
import { Colorbar, SignSwatch } from "../viewer/Colorbar";
import { COLOUR_SCALES, type ColourScaleId, storeColourScale, storedColourScale } from "../viewer/colourScales";
import {
  COMPARE_VIEWS,
  type CompareSettings,
  type CompareView,
  DEFAULT_COMPARE_SETTINGS,
  type Peaks,
  type ScaleMode,
  panelWindows,
  peaksOf,
  scaleNote,
  sharedPeaks,
} from "../viewer/compareScale";
import { type RelevanceLegend, relevanceLegend } from "../viewer/legend";
import { baselineOutputOf, baselineText, uncertaintyOf, uncertaintyText } from "../viewer/methodParams";
import { useViewerController } from "../viewer/useViewerController";

/** At most four Niivue instances (WebGL contexts) on the page. */
export const MAX_PANELS = 4;
export type CompareLayout = "2x2" | "1x4";

interface CompareData {
  subject: Subject;
  /** The subject's succeeded maps, newest first (for the picker). */
  available: Attribution[];
  /** The maps shown, in the order asked for. */
  shown: Attribution[];
  runs: Map<number, Run>;
  datasetName: string | null;
}

async function loadCompare(subjectId: number, ids: number[]): Promise<CompareData> {
  const [subject, list] = await Promise.all([
    api.subjects.get(subjectId),
    api.attributions.list({ subject_id: subjectId }),
  ]);
  const available = list.data.filter((a) => a.status === "succeeded").sort((a, b) => b.id - a.id);
  const shown = await Promise.all(
    ids.slice(0, MAX_PANELS).map(async (id) => available.find((a) => a.id === id) ?? api.attributions.get(id)),
  );
  for (const a of shown) {
    if (a.subject_id !== subject.id) throw new Error(`Attribution #${a.id} belongs to another subject.`);
  }
  const runIds = [...new Set([...available, ...shown].map((a) => a.run_id))];
  const runs = await Promise.all(runIds.map((id) => api.runs.get(id).catch(() => null)));
  const datasetName = await api.datasets
    .get(subject.dataset_id)
    .then((d) => d.name)
    .catch(() => null);
  return {
    subject,
    available,
    shown,
    runs: new Map(runs.filter((r): r is Run => r !== null).map((r) => [r.id, r])),
    datasetName,
  };
}

export function panelLabel(attribution: Attribution, run: Run | undefined): string {
  return `${run?.name ?? `run #${attribution.run_id}`} · ${attribution.method} #${attribution.id}`;
}

/**
 * /compare?subject=ID&attributions=a,b,c,d&layout=2x2|1x4&scale=shared|panel: maps side by side,
 * crosshair and zoom linked, one set of display controls, one colour scale unless asked otherwise.
 */
export default function ComparePage() {
  const [search, setSearch] = useSearchParams();
  const subjectRaw = search.get("subject") ?? "";
  const ids = parseIdList(search.get("attributions")).slice(0, MAX_PANELS);
  const layout: CompareLayout = search.get("layout") === "1x4" ? "1x4" : "2x2";
  // ?scale=panel fits each panel to its own peak; the default shares one scale.
  const scaleMode: ScaleMode = search.get("scale") === "panel" ? "panel" : "shared";
  const data = useAsync(
    async () => loadCompare(parseId(subjectRaw, "subject id"), ids),
    [subjectRaw, ids.join(",")],
  );
  const loaded = data.data;
  const setParam = (key: string, value: string) => {
    const next = new URLSearchParams(search);
    next.set(key, value);
    setSearch(next);
  };

  return (
    <div className="compare-page">
      <header className="viewer-header">
        <p className="crumbs">
          <Link to="/">Datasets</Link> /{" "}
          {loaded ? (
            <Link to={`/datasets/${loaded.subject.dataset_id}`} data-testid="dataset-crumb">
              {loaded.datasetName ?? `Dataset ${loaded.subject.dataset_id}`}
            </Link>
          ) : null}
        </p>
        <h1>
          Compare maps: {loaded ? loaded.subject.subject_key : `subject ${subjectRaw}`}
          {loaded ? <span className={`label label-${loaded.subject.label}`}>{labelName(loaded.subject.label)}</span> : null}
        </h1>
      </header>
      <ErrorMessage error={data.error ? errorMessage(data.error) : null} />
      {loaded ? (
        <MapPicker
          data={loaded}
          selected={ids}
          onChange={(next) => setParam("attributions", next.join(","))}
          layout={layout}
          onLayout={(l) => setParam("layout", l)}
        />
      ) : null}
      {loaded && loaded.shown.length > 0 ? (
        <ComparePanels
          key={ids.join(",")}
          data={loaded}
          layout={layout}
          scaleMode={scaleMode}
          onScaleMode={(mode) => setParam("scale", mode)}
        />
      ) : null}
    </div>
  );
}

function MapPicker({
  data,
  selected,
  onChange,
  layout,
  onLayout,
}: {
  data: CompareData;
  selected: number[];
  onChange: (ids: number[]) => void;
  layout: CompareLayout;
  onLayout: (layout: CompareLayout) => void;
}) {
  const [choice, setChoice] = useState<number[]>(selected);
  const toggle = (id: number, on: boolean) =>
    setChoice((c) => (on ? [...c, id].slice(0, MAX_PANELS) : c.filter((x) => x !== id)));
  if (data.available.length === 0) return <p className="muted">This subject has no computed maps yet.</p>;
  return (
    <details className="panel map-picker" open={selected.length === 0}>
      <summary>Maps of this subject ({choice.length} of at most {MAX_PANELS} chosen)</summary>
      <div className="form-row">
        {data.available.map((a) => (
          <label key={a.id} className="check">
            <input
              type="checkbox"
              checked={choice.includes(a.id)}
              disabled={!choice.includes(a.id) && choice.length >= MAX_PANELS}
              onChange={(e) => toggle(a.id, e.target.checked)}
            />
            {panelLabel(a, data.runs.get(a.run_id))}
          </label>
        ))}
      </div>
      <div className="form-row">
        <button type="button" disabled={choice.length === 0} onClick={() => onChange(choice)}>
          Compare
        </button>
        <label className="check">
          Layout
          <select value={layout} onChange={(e) => onLayout(e.target.value as CompareLayout)}>
            <option value="2x2">2 × 2</option>
            <option value="1x4">1 × 4</option>
          </select>
        </label>
      </div>
    </details>
  );
}

function ComparePanels({
  data,
  layout,
  scaleMode,
  onScaleMode,
}: {
  data: CompareData;
  layout: CompareLayout;
  scaleMode: ScaleMode;
  onScaleMode: (mode: ScaleMode) => void;
}) {
  const controllers = useRef<(ViewerController | null)[]>([]);
  const [ready, setReady] = useState<boolean[]>(() => data.shown.map(() => false));
  const [failed, setFailed] = useState(false);
  const [settings, setSettings] = useState<CompareSettings>(() => ({
    ...DEFAULT_COMPARE_SETTINGS,
    colourScale: storedColourScale(),
  }));
  const report = useCallback((index: number, controller: ViewerController | null, phase: string) => {
    controllers.current[index] = controller;
    setReady((r) => (r[index] === (phase === "ready") ? r : r.map((v, i) => (i === index ? phase === "ready" : v))));
    if (phase === "error") setFailed(true);
  }, []);
  const allReady = ready.every(Boolean);
  const stats = useMemo(
    () => data.shown.map((a) => (a.status === "succeeded" ? readStats(a.stats) : null)),
    [data],
  );
  const shared = useMemo(() => sharedPeaks(stats), [stats]);
  const effective: CompareSettings = useMemo(() => ({ ...settings, scaleMode }), [settings, scaleMode]);
  const update = (patch: Partial<CompareSettings>) => setSettings((s) => ({ ...s, ...patch }));
  const firstRun = data.runs.get(data.shown[0]?.run_id ?? -1);
  const legend = relevanceLegend(firstRun?.config);

  // Once every panel has loaded, each broadcasts its crosshair and 2D pan/zoom to the others.
  useEffect(() => {
    if (!allReady) return;
    const all = controllers.current.filter((c): c is ViewerController => c !== null);
    for (const c of all) c.broadcastTo(all);
  }, [allReady]);

  // One set of controls drives every panel; the windows follow the scale mode.
  useEffect(() => {
    if (!allReady) return;
    controllers.current.forEach((c, i) => {
      if (!c) return;
      const { scaleMode: _mode, fraction: _fraction, ...flags } = effective;
      c.configure({ ...flags, thresholds: panelWindows(effective, peaksOf(stats[i]), shared) });
    });
  }, [allReady, effective, stats, shared]);

  const state = failed ? "error" : allReady ? "ready" : "loading";
  const sharedWindows = panelWindows(effective, shared, shared);
  return (
    <>
      <CompareControls
        settings={effective}
        shared={shared}
        panels={data.shown.length}
        disabled={!allReady}
        onChange={update}
        onScaleMode={onScaleMode}
      />
      {scaleMode === "shared" ? (
        <div className="compare-shared-scale" data-testid="shared-colorbar">
          <Colorbar thresholds={sharedWindows} legend={legend} scale={settings.colourScale} />
        </div>
      ) : null}
      <section
        className={`compare-grid compare-${layout}`}
        data-compare-state={state}
        data-panels={data.shown.length}
        data-scale-mode={scaleMode}
      >
        {data.shown.map((a, i) => (
          <ComparePanel
            key={a.id}
            index={i}
            subject={data.subject}
            attribution={a}
            label={panelLabel(a, data.runs.get(a.run_id))}
            runId={a.run_id}
            onState={report}
            ownScale={scaleMode === "panel"}
            legend={legend}
          />
        ))}
      </section>
    </>
  );
}

function CompareControls({
  settings,
  shared,
  panels,
  disabled,
  onChange,
  onScaleMode,
}: {
  settings: CompareSettings;
  shared: Peaks;
  panels: number;
  disabled: boolean;
  onChange: (patch: Partial<CompareSettings>) => void;
  onScaleMode: (mode: ScaleMode) => void;
}) {
  const scale = COLOUR_SCALES[settings.colourScale];
  const thresholdLabel = (sign: "positive" | "negative") => {
    const fraction = settings.fraction[sign];
    if (settings.scaleMode === "panel") return `${Math.round(fraction * 100)} % of each panel's peak`;
    const value = fraction * shared[sign];
    return sign === "positive" ? formatNumber(value) : `−${formatNumber(value)}`;
  };
  return (
    <section className="panel compare-controls" aria-label="Display of all panels">
      <fieldset className="compare-scale-mode">
        <legend>Colour scale</legend>
        <label className="check">
          <input
            type="radio"
            name="scale-mode"
            value="shared"
            checked={settings.scaleMode === "shared"}
            onChange={() => onScaleMode("shared")}
          />
          Shared by all panels
        </label>
        <label className="check">
          <input
            type="radio"
            name="scale-mode"
            value="panel"
            checked={settings.scaleMode === "panel"}
            onChange={() => onScaleMode("panel")}
          />
          Each panel to its own peak
        </label>
        <p className="muted small scale-note" data-testid="scale-note" role="status">
          {scaleNote(settings.scaleMode, panels)}
        </p>
      </fieldset>
      <div className="compare-control-group">
        <label className="check">
          <input
            type="checkbox"
            name="relevance"
            checked={settings.showRelevance}
            disabled={disabled}
            onChange={(e) => onChange({ showRelevance: e.target.checked })}
          />
          Relevance
        </label>
        <label className="check">
          <input
            type="checkbox"
            name="positive"
            checked={settings.showPositive}
            disabled={disabled || !settings.showRelevance}
            onChange={(e) => onChange({ showPositive: e.target.checked })}
          />
          Pathological <SignSwatch sign="positive" scale={settings.colourScale} />
        </label>
        <label className="check">
          <input
            type="checkbox"
            name="negative"
            checked={settings.showNegative}
            disabled={disabled || !settings.showRelevance}
            onChange={(e) => onChange({ showNegative: e.target.checked })}
          />
          Healthy <SignSwatch sign="negative" scale={settings.colourScale} />
        </label>
        <label className="check">
          <input
            type="checkbox"
            name="lesion"
            checked={settings.showLesion}
            disabled={disabled}
            onChange={(e) => onChange({ showLesion: e.target.checked })}
          />
          Lesion outline
        </label>
      </div>
      <div className="compare-control-group">
        <label className="slider">
          <span>View</span>
          <select
            name="view"
            value={settings.view}
            disabled={disabled}
            onChange={(e) => onChange({ view: e.target.value as CompareView })}
          >
            {COMPARE_VIEWS.map((v) => (
              <option key={v.value} value={v.value}>
                {v.label}
              </option>
            ))}
          </select>
        </label>
        <label className="slider">
          <span>Colours</span>
          <select
            name="colour-scale"
            value={settings.colourScale}
            disabled={disabled}
            onChange={(e) => {
              const id = e.target.value as ColourScaleId;
              storeColourScale(id);
              onChange({ colourScale: id });
            }}
          >
            {Object.values(COLOUR_SCALES).map((c) => (
              <option key={c.id} value={c.id}>
                {c.label}
              </option>
            ))}
          </select>
        </label>
        <label className="slider">
          <span>Overlay opacity {Math.round(settings.opacity * 100)}%</span>
          <input
            type="range"
            name="opacity"
            min={0}
            max={1}
            step={0.05}
            value={settings.opacity}
            disabled={disabled}
            onChange={(e) => onChange({ opacity: Number(e.target.value) })}
          />
        </label>
      </div>
      <div className="compare-control-group">
        {(["positive", "negative"] as const).map((sign) => (
          <label className="slider" key={sign}>
            <span>
              {sign === "positive" ? "Pathological" : "Healthy"} ({scale[sign].hue}) threshold{" "}
              <strong data-testid={`threshold-${sign}`}>{thresholdLabel(sign)}</strong>
            </span>
            <input
              type="range"
              name={`threshold-${sign}`}
              min={0}
              max={0.95}
              step={0.01}
              value={settings.fraction[sign]}
              disabled={disabled || shared[sign] <= 0}
              onChange={(e) => onChange({ fraction: { ...settings.fraction, [sign]: Number(e.target.value) } })}
            />
          </label>
        ))}
      </div>
    </section>
  );
}

/** The three slices side by side: no empty fourth tile in a panel. */
const COMPARE_NIIVUE_OPTIONS = { multiplanarLayout: MULTIPLANAR_TYPE.ROW };

function ComparePanel({
  index,
  subject,
  attribution,
  label,
  runId,
  onState,
  ownScale,
  legend,
}: {
  index: number;
  subject: Subject;
  attribution: Attribution;
  label: string;
  runId: number;
  onState: (index: number, controller: ViewerController | null, phase: string) => void;
  /** Per-panel scale: this panel shows its own colour bar. */
  ownScale: boolean;
  legend: RelevanceLegend;
}) {
  const { hostRef, controller, snapshot } = useViewerController(COMPARE_NIIVUE_OPTIONS);
  const stats = useMemo(() => readStats(attribution.stats), [attribution.stats]);
  const baseline = baselineText(attribution.method, attribution.params);
  const uncertainty = uncertaintyOf(attribution);
  const baselineOutput = baselineOutputOf(attribution);

  useEffect(() => {
    if (!controller) return;
    void controller.load({
      imageUrl: subjectImageUrl(subject.id),
      relevance: stats && attribution.status === "succeeded" ? { url: attributionDisplayUrl(attribution.id), stats } : null,
      lesionUrl: subject.has_mask ? subjectMaskDrawingUrl(subject.id) : null,
    });
  }, [controller, attribution, subject, stats]);

  useEffect(() => {
    onState(index, controller, snapshot.phase);
  }, [index, controller, snapshot.phase, onState]);
  useEffect(() => () => onState(index, null, "idle"), [index, onState]);

  const crosshair = snapshot.crosshairMM?.map((v) => v.toFixed(2)).join(",") ?? "";
  return (
    <figure
      className="compare-panel"
      data-viewer-state={snapshot.phase === "idle" ? "loading" : snapshot.phase}
      data-attribution-id={attribution.id}
      data-crosshair={crosshair}
    >
      <figcaption>
        <Link to={runPath(runId)}>{label}</Link>
        <span className="muted small">
          {stats ? `peak ${formatNumber(stats.max)} / ${formatNumber(stats.min)}` : null}{" "}
          <Link to={`/viewer/${subject.id}?attribution=${attribution.id}`}>open</Link>
        </span>
      </figcaption>
      <p className="muted small compare-meta" data-testid="map-meta">
        {[
          baseline ? `baseline ${baseline}` : null,
          uncertainty ? uncertaintyText(uncertainty) : "no completeness check",
          // The full sentence is in the viewer's provenance panel.
          baselineOutput?.warning ? `F(x′) ${formatNumber(baselineOutput.baselineLogit)}: baseline not neutral` : null,
        ]
          .filter(Boolean)
          .join(" · ")}
      </p>
      <div className="viewer-canvas-host compare-canvas-host" ref={hostRef} />
      {snapshot.error ? (
        <p className="error" role="alert">
          {snapshot.error}
        </p>
      ) : null}
      {!stats ? <p className="note">This map has no statistics: showing the MR volume only.</p> : null}
      <p className="location muted small">{snapshot.location || "\u00a0"}</p>
      {ownScale ? (
        <Colorbar
          thresholds={snapshot.thresholds}
          legend={legend}
          scale={snapshot.colourScale}
          caption="This panel's own scale."
        />
      ) : null}
    </figure>
  );
}

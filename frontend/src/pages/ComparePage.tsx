import { useCallback, useEffect, useRef, useState } from "react";
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
import { labelName } from "../format";
import { useAsync } from "../hooks";
import type { ViewerController } from "../viewer/ViewerController";
import { Colorbar } from "../viewer/Colorbar";
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
  return { subject, available, shown, runs: new Map(runs.filter((r): r is Run => r !== null).map((r) => [r.id, r])) };
}

export function panelLabel(attribution: Attribution, run: Run | undefined): string {
  return `${run?.name ?? `run #${attribution.run_id}`} · ${attribution.method} #${attribution.id}`;
}

/** /compare?subject=ID&attributions=a,b,c,d&layout=2x2|1x4: maps side by side, crosshair and zoom linked. */
export default function ComparePage() {
  const [search, setSearch] = useSearchParams();
  const subjectRaw = search.get("subject") ?? "";
  const ids = parseIdList(search.get("attributions")).slice(0, MAX_PANELS);
  const layout: CompareLayout = search.get("layout") === "1x4" ? "1x4" : "2x2";
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
          {loaded ? <Link to={`/datasets/${loaded.subject.dataset_id}`}>Dataset {loaded.subject.dataset_id}</Link> : null}
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
        <ComparePanels key={ids.join(",")} data={loaded} layout={layout} />
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

function ComparePanels({ data, layout }: { data: CompareData; layout: CompareLayout }) {
  const controllers = useRef<(ViewerController | null)[]>([]);
  const [ready, setReady] = useState<boolean[]>(() => data.shown.map(() => false));
  const [failed, setFailed] = useState(false);
  const report = useCallback((index: number, controller: ViewerController | null, phase: string) => {
    controllers.current[index] = controller;
    setReady((r) => (r[index] === (phase === "ready") ? r : r.map((v, i) => (i === index ? phase === "ready" : v))));
    if (phase === "error") setFailed(true);
  }, []);
  const allReady = ready.every(Boolean);

  // Once every panel has loaded, each broadcasts its crosshair and 2D pan/zoom to the others.
  useEffect(() => {
    if (!allReady) return;
    const all = controllers.current.filter((c): c is ViewerController => c !== null);
    for (const c of all) c.broadcastTo(all);
  }, [allReady]);

  const state = failed ? "error" : allReady ? "ready" : "loading";
  return (
    <section className={`compare-grid compare-${layout}`} data-compare-state={state} data-panels={data.shown.length}>
      {data.shown.map((a, i) => (
        <ComparePanel
          key={a.id}
          index={i}
          subject={data.subject}
          attribution={a}
          label={panelLabel(a, data.runs.get(a.run_id))}
          runId={a.run_id}
          onState={report}
        />
      ))}
    </section>
  );
}

function ComparePanel({
  index,
  subject,
  attribution,
  label,
  runId,
  onState,
}: {
  index: number;
  subject: Subject;
  attribution: Attribution;
  label: string;
  runId: number;
  onState: (index: number, controller: ViewerController | null, phase: string) => void;
}) {
  const { hostRef, controller, snapshot } = useViewerController();
  const stats = readStats(attribution.stats);

  useEffect(() => {
    if (!controller) return;
    void controller.load({
      imageUrl: subjectImageUrl(subject.id),
      relevance: stats && attribution.status === "succeeded" ? { url: attributionDisplayUrl(attribution.id), stats } : null,
      lesionUrl: subject.has_mask ? subjectMaskDrawingUrl(subject.id) : null,
    });
    // stats is derived from attribution; reloading on the attribution is enough.
  }, [controller, attribution, subject]);

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
        <Link className="small" to={`/viewer/${subject.id}?attribution=${attribution.id}`}>
          open
        </Link>
      </figcaption>
      <div className="viewer-canvas-host compare-canvas-host" ref={hostRef} />
      {snapshot.error ? (
        <p className="error" role="alert">
          {snapshot.error}
        </p>
      ) : null}
      {!stats ? <p className="note">This map has no statistics: showing the MR volume only.</p> : null}
      <p className="location muted small">{snapshot.location || "\u00a0"}</p>
      <Colorbar thresholds={snapshot.thresholds} />
    </figure>
  );
}


import { useEffect, useRef } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import type { Attribution, Run, Subject } from "../api/types";
import { readStats } from "../api/types";
import { attributionAgreementUrl, parseId, subjectMaskDrawingUrl } from "../api/urls";
import { useEpochView } from "../corrections/EpochView";
import { labelName } from "../format";
import { useAsync } from "../hooks";
import { EvidencePanel } from "../evidence/EvidencePanel";
import { ChannelSelector } from "../viewer/ChannelSelector";
import {
  channelChoices,
  channelImageUrl,
  channelMapSource,
  readChannelSelection,
  writeChannelSelection,
} from "../viewer/channels";
import { Colorbar } from "../viewer/Colorbar";
import { type RelevanceLegend, relevanceLegend } from "../viewer/legend";
import { CompareBaselinesButton } from "../viewer/CompareBaselinesButton";
import { STOCHASTIC_METHODS } from "../viewer/methodParams";
import { ProvenancePanel } from "../viewer/ProvenancePanel";
import { RegionPanel } from "../viewer/RegionPanel";
import { isSegmentationRun } from "../viewer/region";
import { ShortcutHelp, useViewerShortcuts } from "../viewer/ShortcutHelp";
import { ViewerControls } from "../viewer/ViewerControls";
import { newestSucceeded } from "../viewer/select";
import { useViewerController } from "../viewer/useViewerController";

interface ViewerData {
  subject: Subject;
  /** The dataset's name for the breadcrumb (null if it could not be read). */
  datasetName: string | null;
  attribution: Attribution | null;
  run: Run | null;
  /** What red and blue mean for the run's maps (classification or regression). */
  legend: RelevanceLegend;
  /** Why no relevance is shown, when it is not. */
  note: string | null;
}

async function loadViewerData(
  subjectId: string,
  attributionId: string | null,
  runId: string | null = null,
): Promise<ViewerData> {
  const subject = await api.subjects.get(parseId(subjectId, "subject id"));
  const datasetName = api.datasets
    .get(subject.dataset_id)
    .then((d) => d.name)
    .catch(() => null);
  let attribution: Attribution | null;
  if (attributionId) {
    attribution = await api.attributions.get(parseId(attributionId, "attribution id"));
    if (attribution.subject_id !== subject.id) {
      throw new Error(
        `Attribution #${attribution.id} belongs to subject #${attribution.subject_id}, not #${subject.id}.`,
      );
    }
  } else {
    attribution = newestSucceeded((await api.attributions.list({ subject_id: subject.id })).data);
  }
  // ?run=<id> names the run without a map yet (a segmentation run's "why is this segmented?").
  const runOf = attribution ? attribution.run_id : runId ? parseId(runId, "run id") : null;
  const run = runOf != null ? await api.runs.get(runOf).catch(() => null) : null;
  // A regression run's legend names its target, which its dataset records.
  const targetName =
    run?.config?.task === "regression"
      ? await api.datasets
          .get(run.dataset_id)
          .then((d) => d.target_name)
          .catch(() => null)
      : null;
  const legend = relevanceLegend(run?.config, targetName);
  let note: string | null = null;
  if (!attribution) note = "No attribution has been computed for this subject yet: showing the MR volume only.";
  else if (attribution.status !== "succeeded") {
    note = `Attribution #${attribution.id} is ${attribution.status}: showing the MR volume only.`;
  } else if (!readStats(attribution.stats)) {
    note = "This attribution has no statistics: showing the MR volume only.";
  }
  return { subject, datasetName: await datasetName, attribution, run, legend, note };
}

export default function ViewerPage() {
  const { subjectId = "" } = useParams();
  const [search, setSearch] = useSearchParams();
  const attributionId = search.get("attribution");
  const runId = search.get("run");
  const data = useAsync(() => loadViewerData(subjectId, attributionId, runId), [subjectId, attributionId, runId]);
  const { hostRef, controller, snapshot } = useViewerController();
  const loaded = data.data;
  useViewerShortcuts(controller);
  // ?run=<id>: an epoch slider over that run's stored maps of this subject drives the overlay.
  const epochView = useEpochView(loaded?.subject.id ?? null, search.get("run"));
  // The chosen epoch's map, rebuilt on every render: the effect below follows its url (which
  // names run, subject and epoch) and reads the map itself from here.
  const epochRelevance = useRef(epochView.relevance);
  epochRelevance.current = epochView.relevance;
  const epochUrl = epochView.relevance?.url;
  // ?image=<index>&map=<index>: the base image's channel and the overlay's of a multi-modal subject.
  const channels = channelChoices(loaded?.subject.channels);
  const selection = readChannelSelection(search, channels?.length ?? 0);
  // A classifier's map has per-channel maps; a region (segmentation) map or an epoch's has not.
  const mapChannels = Boolean(
    channels && loaded?.attribution && !loaded.attribution.region && !epochView.relevance,
  );
  const mapSelection = mapChannels ? selection.map : "sum";

  const imageChannel = selection.image;
  useEffect(() => {
    if (!controller || !loaded) return;
    const { subject, attribution } = loaded;
    const stats = attribution?.status === "succeeded" ? readStats(attribution.stats) : null;
    // A stochastic map stored with its uncertainty volumes (the worker's stats name them).
    const uncertain =
      attribution && stats && STOCHASTIC_METHODS.includes(attribution.method) &&
      typeof (attribution.stats as Record<string, unknown>).uncertainty_mean_sd === "number";
    const map = attribution ? channelMapSource(attribution.id, { image: imageChannel, map: mapSelection }) : null;
    void controller.load({
      imageUrl: channelImageUrl(subject.id, { image: imageChannel, map: mapSelection }),
      relevance:
        epochRelevance.current ??
        (map && stats ? { url: map.url, stats: map.ownStats ? stats : null } : null),
      lesionUrl: subject.has_mask ? subjectMaskDrawingUrl(subject.id) : null,
      // The sign agreement is the sum's: it goes with the sum only.
      agreementUrl:
        uncertain && !epochRelevance.current && map?.ownStats ? attributionAgreementUrl(attribution.id) : null,
    });
  }, [controller, loaded, epochUrl, imageChannel, mapSelection]);

  const pageError = data.error ? errorMessage(data.error) : null;
  const state = pageError ? "error" : loaded ? snapshot.phase : "loading";
  const error = pageError ?? snapshot.error;
  const subject = loaded?.subject;

  return (
    <div className="viewer-page">
      <header className="viewer-header">
        <p className="crumbs">
          <Link to="/">Datasets</Link> /{" "}
          {subject ? (
            <Link to={`/datasets/${subject.dataset_id}`} data-testid="dataset-crumb">
              {loaded?.datasetName ?? `Dataset ${subject.dataset_id}`}
            </Link>
          ) : null}
        </p>
        <h1>
          {subject ? subject.subject_key : `Subject ${subjectId}`}
          {subject ? (
            <span className={`label label-${subject.label}`}>{labelName(subject.label)}</span>
          ) : null}
          {subject ? <span className="muted small"> {subject.split} split</span> : null}
        </h1>
      </header>
      <section
        className="viewer"
        data-viewer-state={state}
        data-viewer-relevance={snapshot.relevanceDrawn ? "drawn" : undefined}
        data-viewer-view={snapshot.view}
        aria-busy={state === "loading"}
      >
        <div className="viewer-main">
          <div className="viewer-canvas-host" ref={hostRef} />
          {snapshot.helpOpen ? <ShortcutHelp onClose={() => controller?.setHelpOpen(false)} /> : null}
          {error ? (
            <p className="error viewer-error" role="alert">
              {error}
            </p>
          ) : null}
          {loaded?.note ? <p className="note">{loaded.note}</p> : null}
          {snapshot.warnings.map((w) => (
            <p className="note" key={w}>
              {w}
            </p>
          ))}
          <p className="location muted small">{snapshot.location || "\u00a0"}</p>
        </div>
        <aside className="viewer-side">
          {epochView.panel}
          {channels ? (
            <ChannelSelector
              channels={channels}
              selection={{ image: selection.image, map: mapSelection }}
              showMap={mapChannels}
              disabled={snapshot.phase === "loading"}
              onChange={(next) => setSearch(writeChannelSelection(search, next), { replace: true })}
            />
          ) : null}
          <ViewerControls controller={controller} snapshot={snapshot} />
          <Colorbar thresholds={snapshot.thresholds} legend={loaded?.legend} scale={snapshot.colourScale} />
          {loaded?.attribution ? <ProvenancePanel attribution={loaded.attribution} run={loaded.run} /> : null}
          {loaded?.attribution && !loaded.attribution.region ? <EvidencePanel attribution={loaded.attribution} /> : null}
          {loaded?.attribution && loaded.run && !isSegmentationRun(loaded.run) ? (
            <CompareBaselinesButton attribution={loaded.attribution} />
          ) : null}
          {loaded?.run && isSegmentationRun(loaded.run) ? (
            <RegionPanel
              run={loaded.run}
              subjectId={loaded.subject.id}
              crosshairMM={snapshot.crosshairMM}
              attribution={loaded.attribution}
            />
          ) : null}
        </aside>
      </section>
    </div>
  );
}

// /runs/:runId/cohort/:cohortId?map=mean|t: a cohort map in the viewer, over the image of the
// subject whose grid the maps were resampled to, with the same signed red/blue scale as any map.
import { useEffect } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api } from "../api/client";
import { errorMessage } from "../api/http";
import { apiUrl } from "../api/openapi";
import { readStats } from "../api/types";
import { parseId, runPath, subjectImageUrl } from "../api/urls";
import { useAsync } from "../hooks";
import { Colorbar } from "../viewer/Colorbar";
import { ShortcutHelp, useViewerShortcuts } from "../viewer/ShortcutHelp";
import { ViewerControls } from "../viewer/ViewerControls";
import { useViewerController } from "../viewer/useViewerController";
import { type CohortWhich, cohortLegend, statsRange } from "./format";
import { cohortViewerPath } from "./ShortcutReportPanel";

/** The stored mean or t-map of a cohort map, as the viewer loads it. */
export function cohortMapUrl(runId: number, cohortId: number, which: CohortWhich): string {
  return apiUrl("/runs/{run_id}/cohort-maps/{cohort_id}/{which}.nii.gz", {
    path: { run_id: runId, cohort_id: cohortId, which },
  });
}

export default function CohortViewerPage() {
  const { runId: rawRun = "", cohortId: rawCohort = "" } = useParams();
  const [search] = useSearchParams();
  const which: CohortWhich = search.get("map") === "mean" ? "mean" : "t";
  const data = useAsync(async () => {
    const runId = parseId(rawRun, "run id");
    const cohortId = parseId(rawCohort, "cohort map id");
    const cohort = await api.client.GET("/runs/{run_id}/cohort-maps/{cohort_id}", {
      path: { run_id: runId, cohort_id: cohortId },
    });
    if (cohort.job?.status !== "succeeded" || cohort.reference_subject_id == null) {
      throw new Error(`Cohort map #${cohort.id} is ${cohort.job?.status ?? "not computed"}: nothing to show yet.`);
    }
    return cohort;
  }, [rawRun, rawCohort]);
  const { hostRef, controller, snapshot } = useViewerController();
  useViewerShortcuts(controller);
  const cohort = data.data;

  useEffect(() => {
    if (!controller || !cohort || cohort.reference_subject_id == null) return;
    const stats = readStats((cohort.stats as Record<string, Record<string, number | null>>)[which]);
    void controller.load({
      imageUrl: subjectImageUrl(cohort.reference_subject_id),
      relevance: stats ? { url: cohortMapUrl(cohort.run_id, cohort.id, which), stats } : null,
      lesionUrl: null,
    });
  }, [controller, cohort, which]);

  const pageError = data.error ? errorMessage(data.error) : null;
  const state = pageError ? "error" : cohort ? snapshot.phase : "loading";
  const error = pageError ?? snapshot.error;
  const legend = cohortLegend(which, cohort?.n_subjects ?? 0);
  return (
    <div className="viewer-page" data-cohort-map={which}>
      <header className="viewer-header">
        <p className="crumbs">
          {cohort ? <Link to={runPath(cohort.run_id)}>Run {cohort.run_id}</Link> : null}
        </p>
        <h1>
          {which === "t" ? "Cohort t-map" : "Cohort mean map"}
          {cohort ? (
            <span className="muted small">
              {" "}
              {cohort.method}, {cohort.split} split, label {cohort.label}, {cohort.n_subjects} subjects
            </span>
          ) : null}
        </h1>
        {cohort ? (
          <p className="small">
            <Link to={cohortViewerPath(cohort.run_id, cohort.id, which === "t" ? "mean" : "t")}>
              {which === "t" ? "Show the mean map" : "Show the t-map"}
            </Link>{" "}
            <span className="muted" data-testid="cohort-range">
              {statsRange(cohort.stats, which)}
            </span>
          </p>
        ) : null}
      </header>
      <section className="viewer" data-viewer-state={state} data-viewer-view={snapshot.view} aria-busy={state === "loading"}>
        <div className="viewer-main">
          <div className="viewer-canvas-host" ref={hostRef} />
          {snapshot.helpOpen ? <ShortcutHelp onClose={() => controller?.setHelpOpen(false)} /> : null}
          {error ? (
            <p className="error viewer-error" role="alert">
              {error}
            </p>
          ) : null}
          {cohort ? (
            <p className="note">
              Over the image of the first subject of the group (#{cohort.reference_subject_id}), whose grid the maps
              were resampled to.
            </p>
          ) : null}
          <p className="location muted small">{snapshot.location || "\u00a0"}</p>
        </div>
        <aside className="viewer-side">
          <ViewerControls controller={controller} snapshot={snapshot} />
          <p className="small" data-testid="cohort-scale-label">
            {which === "t" ? "Scale: t statistic" : "Scale: mean relevance"}
          </p>
          <Colorbar thresholds={snapshot.thresholds} legend={legend} scale={snapshot.colourScale} />
        </aside>
      </section>
    </div>
  );
}

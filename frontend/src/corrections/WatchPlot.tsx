// Run page: each watch subject's lesion relevance mass against the epoch, with links to the
// viewer's epoch slider.
import { Link } from "react-router";
import { api } from "../api/client";
import { epochViewerPath } from "../api/urls";
import { CurveChart } from "../charts/CurveChart";
import { ErrorMessage } from "../components/common";
import { useAsync } from "../hooks";
import { watchSeries } from "./epochs";

export function WatchPlot({ runId, watch, refresh }: { runId: number; watch: readonly number[]; refresh: unknown }) {
  const maps = useAsync(async () => (await api.runs.epochMaps(runId)).data, [runId, refresh]);
  if (watch.length === 0) return null;
  const series = watchSeries(maps.data ?? []);
  return (
    <section className="panel watch-plot" data-testid="watch-plot">
      <h2>Watch subjects</h2>
      <ErrorMessage error={maps.error} />
      {series.length > 0 ? (
        <CurveChart title="Lesion relevance mass by epoch" series={series} />
      ) : (
        <p className="muted">The maps of the watch subjects appear after each epoch.</p>
      )}
      <p className="small">
        Step through the maps:{" "}
        {watch.map((id) => (
          <Link key={id} to={epochViewerPath(id, runId)} className="watch-link" data-subject-id={id}>
            subject {id}
          </Link>
        )).reduce<React.ReactNode[]>((acc, el, i) => (i === 0 ? [el] : [...acc, ", ", el]), [])}
      </p>
    </section>
  );
}

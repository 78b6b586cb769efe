import type { Run } from "../api/types";
import { runBundleUrl, runCheckpointUrl } from "../api/urls";
import { type ExportLink, bundleLink, checkpointLink } from "./modelImport";

/** Marks a run that was imported (POST /runs/import), not trained here. */
export function ImportedBadge() {
  return (
    <span className="badge badge-imported" data-testid="imported-badge" title="imported, not trained here">
      imported
    </span>
  );
}

function Download({ link, href, label, testId }: { link: ExportLink; href: string; label: string; testId: string }) {
  if (link.available) {
    return (
      <a className="button-link" href={href} download data-testid={testId}>
        {label}
      </a>
    );
  }
  return (
    <span className="export-unavailable" data-testid={testId}>
      <button type="button" disabled aria-describedby={`${testId}-reason`}>
        {label}
      </button>{" "}
      <span className="muted small" id={`${testId}-reason`}>
        {link.reason}
      </span>
    </span>
  );
}

/** The run's downloads: its checkpoint and a MONAI bundle, each disabled with the reason where
 * the API would refuse it (409). */
export function ExportLinks({ run }: { run: Run }) {
  return (
    <section className="panel" data-testid="export-links">
      <h2>Export</h2>
      <div className="row-actions">
        <Download
          link={checkpointLink(run)}
          href={runCheckpointUrl(run.id)}
          label="Download checkpoint"
          testId="download-checkpoint"
        />
        <Download link={bundleLink(run)} href={runBundleUrl(run.id)} label="Download bundle" testId="download-bundle" />
      </div>
    </section>
  );
}

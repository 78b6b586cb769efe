// Small presentational pieces shared by the pages.
import type { ReactNode } from "react";
import { errorMessage } from "../api/http";
import type { Job, JobStatus, ProjectRole } from "../api/types";
import { formatPercent } from "../format";

export function ErrorMessage({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p className="error" role="alert">
      {errorMessage(error)}
    </p>
  );
}

export function StatusBadge({ status }: { status: JobStatus | string }) {
  return <span className={`badge badge-${status}`}>{status}</span>;
}

/** The user's role in a project: admin, researcher (both may upload and launch) or clinician. */
export function RoleBadge({ role }: { role: ProjectRole | null | undefined }) {
  if (!role) return <span className="muted">–</span>;
  return <span className={`badge role role-${role}`}>{role}</span>;
}

export function ProgressBar({ job }: { job: Job }) {
  const percent = formatPercent(job.progress ?? 0);
  return (
    <div className="progress" title={job.message ?? undefined}>
      <div
        className="progress-track"
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round((job.progress ?? 0) * 100)}
      >
        <div className="progress-fill" style={{ width: percent }} />
      </div>
      <span className="progress-text">
        {percent}
        {job.message ? ` · ${job.message}` : ""}
      </span>
    </div>
  );
}

/** A labelled form field with its validation message underneath. */
export function Field({
  label,
  error,
  children,
}: {
  label: string;
  error?: string;
  children: ReactNode;
}) {
  return (
    <label className={error ? "field field-invalid" : "field"}>
      <span className="field-label">{label}</span>
      {children}
      {error ? <span className="field-error">{error}</span> : null}
    </label>
  );
}

// A small NiiVue view of one subject's MR volume with its lesion outline (dataset page). One
// WebGL context: the page shows one preview at a time, and closing it disposes the context.
import { useEffect } from "react";
import type { Subject } from "../api/types";
import { subjectImageUrl, subjectMaskDrawingUrl, viewerPath } from "../api/urls";
import { Link } from "react-router";
import { useViewerController } from "./useViewerController";

export function SubjectPreview({ subject, onClose }: { subject: Subject; onClose: () => void }) {
  const { hostRef, controller, snapshot } = useViewerController();

  useEffect(() => {
    if (!controller) return;
    void controller.load({
      imageUrl: subjectImageUrl(subject.id),
      lesionUrl: subject.has_mask ? subjectMaskDrawingUrl(subject.id) : null,
    });
  }, [controller, subject.id, subject.has_mask]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") onClose();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);

  return (
    <section
      className="subject-preview"
      aria-label={`Preview of ${subject.subject_key}`}
      data-preview-state={snapshot.phase}
      data-subject-id={subject.id}
    >
      <header className="subject-preview-head">
        <h2>
          {subject.subject_key}{" "}
          <span className="muted small">
            {subject.shape.join(" × ")}
            {subject.has_mask ? ", lesion outline in green" : ", no lesion mask"}
          </span>
        </h2>
        <div className="button-row">
          <Link to={viewerPath(subject.id)}>Open in the viewer</Link>
          <button type="button" className="small-button" onClick={onClose}>
            Close preview
          </button>
        </div>
      </header>
      <div className="viewer-canvas-host preview-canvas-host" ref={hostRef} />
      {snapshot.phase === "loading" ? <p className="muted small">Loading the volume…</p> : null}
      {snapshot.error ? (
        <p className="error" role="alert">
          {snapshot.error}
        </p>
      ) : null}
      {snapshot.warnings.map((w) => (
        <p className="note small" key={w}>
          {w}
        </p>
      ))}
      <p className="location muted small">{snapshot.location || "\u00a0"}</p>
    </section>
  );
}

// Drag-and-drop (files, folders, zips) or picked files -> chunked uploads with a progress bar
// each -> one import per group (upload/plan.ts) -> per-file problems and a summary.
import { type DragEvent, useCallback, useEffect, useRef, useState } from "react";
import { api } from "../api/client";
import { ApiError, errorMessage } from "../api/http";
import {
  type ImportGroup,
  kindOf,
  type MappedProblems,
  formatBytes,
  groupDropped,
  importProblems,
  importSummary,
  mapProblems,
  progressOf,
  rowsWithProblems,
} from "./plan";
import { DicomImport } from "./DicomImport";
import { DICOM_HEAD_BYTES, isDicomHead } from "./dicom";
import { ResumeStore, type ServerUpload, findResumable, unfinished } from "./resume";
import { type PickedFile, filesFromDrop, fromFile, isAbort, uploadFile } from "./transfer";

interface PartialOffer {
  label: string;
  rows: number[];
  sent: Item[];
  ids: Map<string, string>;
  mapped: MappedProblems;
}

type ItemState = "queued" | "uploading" | "uploaded" | "failed" | "cancelled" | "imported" | "rejected";

interface Item extends PickedFile {
  key: string;
  state: ItemState;
  sent: number;
  uploadId: string | null;
  errors: string[];
  /** Bytes the server already held when this file continued an unfinished upload. */
  resumedFrom: number | null;
  resumeId: string | null;
}

function browserStore(): ResumeStore {
  try {
    return new ResumeStore(window.localStorage);
  } catch {
    return new ResumeStore(null);
  }
}

const PARALLEL = 3;

/** Picked files split into raw DICOM (converted in the browser, never sent) and the rest. */
async function splitDicom(picked: PickedFile[]): Promise<{ dicom: PickedFile[]; rest: PickedFile[] }> {
  const dicom: PickedFile[] = [];
  const rest: PickedFile[] = [];
  for (const f of picked) {
    const maybe = kindOf(f.path) === "ignored" || kindOf(f.path) === "nifti";
    const head = maybe ? new Uint8Array(await f.file.slice(0, DICOM_HEAD_BYTES).arrayBuffer()) : null;
    (head && isDicomHead(head) ? dicom : rest).push(f);
  }
  return { dicom, rest };
}

export function BulkUpload({
  datasetId,
  projectId,
  onImported,
}: {
  datasetId: number;
  projectId: number;
  onImported: () => void;
}) {
  const [items, setItems] = useState<Item[]>([]);
  const [skipped, setSkipped] = useState<string[]>([]);
  const [general, setGeneral] = useState<string[]>([]);
  const [summary, setSummary] = useState<string[]>([]);
  // A refused import whose problems all name rows: the user may import the other rows.
  const [offers, setOffers] = useState<PartialOffer[]>([]);
  const [busy, setBusy] = useState(false);
  const [over, setOver] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const folderInput = useRef<HTMLInputElement>(null);
  const aborts = useRef(new Map<string, AbortController>());
  const cancelled = useRef(new Set<string>());
  const store = useRef<ResumeStore>(browserStore());
  const [pending, setPending] = useState<ServerUpload[]>([]);
  const [pendingError, setPendingError] = useState<string | null>(null);
  const [droppedDicom, setDroppedDicom] = useState<{ files: PickedFile[]; stamp: number } | null>(null);

  /** The user's unfinished uploads in this project (sessions a closed page left behind). */
  const loadPending = useCallback(async (): Promise<ServerUpload[]> => {
    try {
      const listed = (await api.uploads.list(projectId)).data as ServerUpload[];
      store.current.prune(projectId, listed);
      setPending(unfinished(listed));
      setPendingError(null);
      return listed;
    } catch (reason) {
      setPendingError(errorMessage(reason));
      return [];
    }
  }, [projectId]);

  useEffect(() => {
    void loadPending();
  }, [loadPending]);

  const patch = (key: string, change: Partial<Item>) =>
    setItems((all) => all.map((i) => (i.key === key ? { ...i, ...change } : i)));

  /** Raw DICOM goes to the DICOM import (converted here); the other files are uploaded. */
  const receive = async (all: PickedFile[]) => {
    const { dicom, rest } = await splitDicom(all);
    if (dicom.length) setDroppedDicom({ files: dicom, stamp: Date.now() });
    if (rest.length && !(dicom.length && rest.every((f) => kindOf(f.path) === "ignored"))) await start(rest);
  };

  const start = async (picked: PickedFile[]) => {
    if (busy || picked.length === 0) return;
    const { groups, skipped: left } = groupDropped(picked);
    const stamp = Date.now();
    const keyed = new Map<PickedFile, Item>();
    // The same file chosen again continues its unfinished upload.
    const server = groups.length > 0 ? await loadPending() : [];
    const records = store.current.all();
    const taken = new Set<string>();
    groups.forEach((g, gi) =>
      g.files.forEach((f, fi) => {
        const match = findResumable(
          { path: f.path, size: f.size, lastModified: f.file.lastModified },
          projectId,
          server,
          records,
          taken,
        );
        if (match) taken.add(match.id);
        keyed.set(f, {
          ...f,
          key: `${stamp}-${gi}-${fi}`,
          state: "queued",
          sent: match?.received ?? 0,
          uploadId: null,
          errors: [],
          resumedFrom: match ? match.received : null,
          resumeId: match?.id ?? null,
        });
      }),
    );
    cancelled.current.clear();
    setItems([...keyed.values()]);
    setSkipped(left.map((s) => `${s.file.path} (${s.reason})`));
    setGeneral([]);
    setOffers([]);
    setSummary([]);
    if (groups.length === 0) return;
    setBusy(true);
    try {
      for (const group of groups) await runGroup(group, keyed);
      onImported();
    } finally {
      aborts.current.clear();
      setBusy(false);
      void loadPending();
    }
  };

  const runGroup = async (group: ImportGroup<PickedFile>, keyed: Map<PickedFile, Item>) => {
    const members = group.files.map((f) => keyed.get(f) as Item);
    const ids = new Map<string, string>();
    let failed = false;
    const queue = [...members];
    const worker = async () => {
      for (let item = queue.shift(); item; item = queue.shift()) {
        const key = item.key;
        if (cancelled.current.has(key)) continue; // cancelled while queued
        const abort = new AbortController();
        aborts.current.set(key, abort);
        patch(key, { state: "uploading" });
        const picked = item;
        try {
          const id = await uploadFile(projectId, picked, (sent) => patch(key, { sent }), {
            signal: abort.signal,
            resumeId: picked.resumeId,
            onSession: (uploadId) => {
              patch(key, { uploadId });
              store.current.remember({
                id: uploadId,
                projectId,
                path: picked.path,
                size: picked.size,
                lastModified: picked.file.lastModified,
              });
            },
          });
          ids.set(key, id);
          patch(key, { state: "uploaded", sent: item.size, uploadId: id });
        } catch (reason) {
          if (isAbort(reason)) {
            patch(key, { state: "cancelled", errors: [] });
          } else {
            failed = true;
            patch(key, { state: "failed", errors: [errorMessage(reason)] });
          }
        } finally {
          aborts.current.delete(key);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, members.length) }, worker));
    const label = group.kind === "zip" ? members[0]?.path ?? "zip" : "files";
    if (failed) {
      setGeneral((g) => [...g, `${label}: not imported, some files did not upload.`]);
      return;
    }
    // Cancelled files are left out of the import; the rest goes on.
    const sent = members.filter((m) => ids.has(m.key));
    if (sent.length === 0) {
      setGeneral((g) => [...g, `${label}: cancelled, nothing imported.`]);
      return;
    }
    try {
      const result = await api.imports.fromUploads(
        datasetId,
        sent.map((m) => ids.get(m.key) as string),
      );
      for (const m of sent) {
        patch(m.key, { state: "imported" });
        store.current.forget(ids.get(m.key) as string);
      }
      setSummary((s) => [...s, importSummary(result.count, result.layout) + ` ${result.data.map((x) => x.subject_key).join(", ")}`]);
    } catch (reason) {
      const problems = reason instanceof ApiError ? importProblems(reason.body) : null;
      if (!problems) {
        for (const m of sent) patch(m.key, { state: "rejected" });
        setGeneral((g) => [...g, `${label}: ${errorMessage(reason)}`]);
        return;
      }
      const tableKey = group.table ? keyed.get(group.table)?.key : null;
      const mapped = mapProblems(
        problems,
        sent.map((m) => ({ key: m.key, path: m.path, uploadId: ids.get(m.key) })),
        { kind: group.kind, tableKey },
      );
      // Only the files with a problem are marked; the others wait for the user's choice.
      for (const m of sent) {
        const errors = mapped.byFile[m.key] ?? [];
        patch(m.key, errors.length ? { state: "rejected", errors } : { state: "uploaded", errors: [] });
      }
      const rows = rowsWithProblems(problems);
      const count = `${problems.length} problem${problems.length === 1 ? "" : "s"}`;
      setGeneral((g) => [
        ...g,
        `${label}: nothing was imported (${count}, listed next to their files).`,
        ...mapped.general,
      ]);
      if (rows) setOffers((o) => [...o, { label, rows, sent, ids, mapped }]);
    }
  };

  /** The second try of a refused import: the rows without problems, the others reported. */
  const importValid = async (offer: PartialOffer) => {
    setBusy(true);
    setOffers((o) => o.filter((x) => x !== offer));
    try {
      const result = await api.imports.fromUploads(
        datasetId,
        offer.sent.map((m) => offer.ids.get(m.key) as string),
        true,
      );
      for (const m of offer.sent) {
        const errors = offer.mapped.byFile[m.key] ?? [];
        patch(m.key, errors.length ? { state: "rejected", errors } : { state: "imported", errors: [] });
        store.current.forget(offer.ids.get(m.key) as string);
      }
      const left = [...new Set((result.rejected ?? []).map((p) => p.row))].filter((r) => r != null);
      setGeneral((g) => g.filter((line) => !line.startsWith(`${offer.label}: nothing was imported`)));
      setSummary((s) => [
        ...s,
        importSummary(result.count, result.layout) +
          ` ${result.data.map((x) => x.subject_key).join(", ")}` +
          (left.length ? `; left out: row${left.length === 1 ? "" : "s"} ${left.join(", ")}.` : ""),
      ]);
      onImported();
    } catch (reason) {
      setGeneral((g) => [...g, `${offer.label}: ${errorMessage(reason)}`]);
    } finally {
      setBusy(false);
      void loadPending();
    }
  };

  /** Stops one file: a queued one is skipped, a running one aborted and its session deleted. */
  const cancel = (key: string) => {
    cancelled.current.add(key);
    const abort = aborts.current.get(key);
    if (abort) abort.abort();
    else patch(key, { state: "cancelled" });
  };

  /** Deletes an unfinished session left by an earlier page. */
  const discard = async (upload: ServerUpload) => {
    try {
      await api.uploads.remove(upload.id);
      store.current.forget(upload.id);
    } catch (reason) {
      setPendingError(`${upload.filename}: ${errorMessage(reason)}`);
    }
    await loadPending();
  };

  const inProgress = new Set(items.map((i) => i.uploadId).filter(Boolean));
  const leftBehind = pending.filter((u) => !inProgress.has(u.id));
  const resumableHere = new Set(store.current.all().map((r) => r.id));

  const onDrop = async (event: DragEvent<HTMLDivElement>) => {
    event.preventDefault();
    setOver(false);
    if (busy) return;
    try {
      await receive(await filesFromDrop(event.dataTransfer));
    } catch (reason) {
      setGeneral([errorMessage(reason)]);
    }
  };

  const onPick = (list: FileList | null, input: HTMLInputElement | null) => {
    const picked = Array.from(list ?? []).map(fromFile);
    if (input) input.value = "";
    void receive(picked).catch((reason) => setGeneral([errorMessage(reason)]));
  };

  return (
    <div className="bulk-upload" aria-label="Import subjects">
      <h2>Import subjects</h2>
      <div
        className={`dropzone${over ? " over" : ""}${busy ? " busy" : ""}`}
        data-testid="dropzone"
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => void onDrop(e)}
      >
        <p>
          Drop NIfTI files with a <code>manifest.csv</code> (subject, image, label[, mask, split, site, target]: target is the
          continuous value of regression runs), a BIDS
          folder with its <code>participants.tsv</code>, or a zip here. A DICOM folder is converted to NIfTI in
          this browser first (below): DICOM itself is never sent.
        </p>
        <div className="form-row">
          <button type="button" disabled={busy} onClick={() => fileInput.current?.click()}>
            Choose files…
          </button>
          <button type="button" disabled={busy} onClick={() => folderInput.current?.click()}>
            Choose a folder…
          </button>
          {busy ? <span className="muted small">Uploading…</span> : null}
        </div>
        <input
          ref={fileInput}
          type="file"
          name="import_files"
          multiple
          hidden
          accept=".nii,.gz,.csv,.tsv,.zip"
          onChange={(e) => onPick(e.target.files, e.target)}
        />
        <input
          ref={folderInput}
          type="file"
          name="import_folder"
          multiple
          hidden
          {...{ webkitdirectory: "", directory: "" }}
          onChange={(e) => onPick(e.target.files, e.target)}
        />
      </div>
      <DicomImport disabled={busy} dropped={droppedDicom} onReady={(files) => void start(files)} />
      {summary.map((s) => (
        <p key={s} className="ok import-summary">
          {s}
        </p>
      ))}
      {offers.map((offer) => (
        <p key={offer.label} className="warning import-offer" data-testid="import-offer">
          {offer.rows.length === 1 ? "One row of the table" : `${offer.rows.length} rows of the table`} (
          {offer.rows.map((r) => `row ${r}`).join(", ")}) {offer.rows.length === 1 ? "has" : "have"} problems; the
          other rows are fine.{" "}
          <button type="button" disabled={busy} onClick={() => void importValid(offer)}>
            Import the valid rows, leave out {offer.rows.length}
          </button>
        </p>
      ))}
      {general.map((g, i) => (
        <p key={`${i}-${g}`} className="error import-error">
          {g}
        </p>
      ))}
      {items.length > 0 ? (
        <ul className="upload-list">
          {items.map((item) => (
            <li key={item.key} className={`upload-item upload-${item.state}`} data-path={item.path} data-state={item.state}>
              <span className="upload-name">{item.path}</span>
              <span className="muted small">{formatBytes(item.size)}</span>
              <progress
                className="upload-progress"
                max={1}
                value={progressOf(item.sent, item.size)}
                aria-label={`Upload of ${item.path}`}
              />
              <span className="small upload-state">{item.state}</span>
              {item.resumedFrom !== null ? (
                <span className="small muted upload-resumed">
                  resumed at {formatBytes(item.resumedFrom)}
                </span>
              ) : null}
              {item.state === "queued" || item.state === "uploading" ? (
                <button
                  type="button"
                  className="small-button upload-cancel"
                  aria-label={`Cancel ${item.path}`}
                  onClick={() => cancel(item.key)}
                >
                  Cancel
                </button>
              ) : null}
              {item.errors.map((e) => (
                <div key={e} className="error small upload-error">
                  {e}
                </div>
              ))}
            </li>
          ))}
        </ul>
      ) : null}
      {leftBehind.length > 0 ? (
        <div className="unfinished-uploads">
          <h3>Unfinished uploads</h3>
          <p className="muted small">
            Uploads a closed page left behind. Choose the same file again to resume it from where it stopped
            (in the browser that started it), or discard it.
          </p>
          <ul className="upload-list unfinished-list">
            {leftBehind.map((u) => (
              <li key={u.id} className="unfinished-upload" data-path={u.filename} data-upload-id={u.id}>
                <span className="upload-name">{u.filename}</span>
                <span className="muted small">
                  {formatBytes(u.received)} of {formatBytes(u.size)}
                </span>
                <progress className="upload-progress" max={1} value={progressOf(u.received, u.size)} />
                <span className="small muted">{resumableHere.has(u.id) ? "resumable here" : "started elsewhere"}</span>
                <button
                  type="button"
                  className="small-button"
                  disabled={busy}
                  aria-label={`Discard ${u.filename}`}
                  onClick={() => void discard(u)}
                >
                  Discard
                </button>
              </li>
            ))}
          </ul>
        </div>
      ) : null}
      {pendingError ? <p className="error small">{pendingError}</p> : null}
      {skipped.length > 0 ? <p className="muted small">Skipped: {skipped.join(", ")}</p> : null}
    </div>
  );
}

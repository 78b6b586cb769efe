// Drag-and-drop (files, folders, zips) or picked files -> chunked uploads with a progress bar
// each -> one import per group (upload/plan.ts) -> per-file problems and a summary.
import { type DragEvent, useRef, useState } from "react";
import { api } from "../api/client";
import { ApiError, errorMessage } from "../api/http";
import {
  type ImportGroup,
  formatBytes,
  groupDropped,
  importProblems,
  importSummary,
  mapProblems,
  progressOf,
} from "./plan";
import { type PickedFile, filesFromDrop, fromFile, uploadFile } from "./transfer";

type ItemState = "queued" | "uploading" | "uploaded" | "failed" | "imported" | "rejected";

interface Item extends PickedFile {
  key: string;
  state: ItemState;
  sent: number;
  uploadId: string | null;
  errors: string[];
}

const PARALLEL = 3;

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
  const [busy, setBusy] = useState(false);
  const [over, setOver] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const folderInput = useRef<HTMLInputElement>(null);

  const patch = (key: string, change: Partial<Item>) =>
    setItems((all) => all.map((i) => (i.key === key ? { ...i, ...change } : i)));

  const start = async (picked: PickedFile[]) => {
    if (busy || picked.length === 0) return;
    const { groups, skipped: left } = groupDropped(picked);
    const stamp = Date.now();
    const keyed = new Map<PickedFile, Item>();
    groups.forEach((g, gi) =>
      g.files.forEach((f, fi) =>
        keyed.set(f, { ...f, key: `${stamp}-${gi}-${fi}`, state: "queued", sent: 0, uploadId: null, errors: [] }),
      ),
    );
    setItems([...keyed.values()]);
    setSkipped(left.map((s) => `${s.file.path} (${s.reason})`));
    setGeneral([]);
    setSummary([]);
    if (groups.length === 0) return;
    setBusy(true);
    try {
      for (const group of groups) await runGroup(group, keyed);
      onImported();
    } finally {
      setBusy(false);
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
        patch(key, { state: "uploading" });
        try {
          const id = await uploadFile(projectId, item, (sent) => patch(key, { sent }));
          ids.set(key, id);
          patch(key, { state: "uploaded", sent: item.size, uploadId: id });
        } catch (reason) {
          failed = true;
          patch(key, { state: "failed", errors: [errorMessage(reason)] });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, members.length) }, worker));
    const label = group.kind === "zip" ? members[0]?.path ?? "zip" : "files";
    if (failed) {
      setGeneral((g) => [...g, `${label}: not imported, some files did not upload.`]);
      return;
    }
    try {
      const result = await api.imports.fromUploads(
        datasetId,
        members.map((m) => ids.get(m.key) as string),
      );
      for (const m of members) patch(m.key, { state: "imported" });
      setSummary((s) => [...s, importSummary(result.count, result.layout) + ` ${result.data.map((x) => x.subject_key).join(", ")}`]);
    } catch (reason) {
      const problems = reason instanceof ApiError ? importProblems(reason.body) : null;
      if (!problems) {
        for (const m of members) patch(m.key, { state: "rejected" });
        setGeneral((g) => [...g, `${label}: ${errorMessage(reason)}`]);
        return;
      }
      const tableKey = group.table ? keyed.get(group.table)?.key : null;
      const mapped = mapProblems(
        problems,
        members.map((m) => ({ key: m.key, path: m.path, uploadId: ids.get(m.key) })),
        { kind: group.kind, tableKey },
      );
      for (const m of members) patch(m.key, { state: "rejected", errors: mapped.byFile[m.key] ?? [] });
      setGeneral((g) => [
        ...g,
        `${label}: ${errorMessage(reason)} Nothing was imported.`,
        ...mapped.general,
      ]);
    }
  };

  const onDrop = async (event: DragEvent<HTMLDivElement>) => {
    event.preventDefault();
    setOver(false);
    if (busy) return;
    try {
      await start(await filesFromDrop(event.dataTransfer));
    } catch (reason) {
      setGeneral([errorMessage(reason)]);
    }
  };

  const onPick = (list: FileList | null, input: HTMLInputElement | null) => {
    const picked = Array.from(list ?? []).map(fromFile);
    if (input) input.value = "";
    void start(picked);
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
          Drop NIfTI files with a <code>manifest.csv</code> (subject, image, label[, mask, split, site]), a BIDS
          folder with its <code>participants.tsv</code>, or a zip here.
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
      {summary.map((s) => (
        <p key={s} className="ok import-summary">
          {s}
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
              {item.errors.map((e) => (
                <div key={e} className="error small upload-error">
                  {e}
                </div>
              ))}
            </li>
          ))}
        </ul>
      ) : null}
      {skipped.length > 0 ? <p className="muted small">Skipped: {skipped.join(", ")}</p> : null}
    </div>
  );
}

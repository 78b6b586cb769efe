// Resuming chunked uploads that a closed page left behind. The server keeps every unfinished
// upload session (GET /uploads); this browser remembers which local file each one came from
// (name, size and last-modified time, in localStorage), so that choosing the same file again
// continues from the bytes the server already holds instead of starting over.

/** What the server says about one of the user's uploads (UploadPublic). */
export interface ServerUpload {
  id: string;
  project_id: number;
  filename: string;
  size: number;
  received: number;
  status: "open" | "complete";
}

/** The local file an upload session was opened for. */
export interface ResumeRecord {
  id: string;
  projectId: number;
  path: string;
  size: number;
  lastModified: number;
}

/** A picked file as far as matching goes. */
export interface LocalFile {
  path: string;
  size: number;
  lastModified: number;
}

/** Minimal Storage (window.localStorage in the app, a Map in tests). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export const RESUME_STORAGE_KEY = "attrivue.uploads.v1";

/** The upload-id -> local-file records of this browser. */
export class ResumeStore {
  constructor(private readonly store: KeyValueStore | null) {}

  all(): ResumeRecord[] {
    try {
      const parsed: unknown = JSON.parse(this.store?.getItem(RESUME_STORAGE_KEY) ?? "[]");
      return Array.isArray(parsed) ? parsed.filter(isRecord) : [];
    } catch {
      return [];
    }
  }

  remember(record: ResumeRecord): void {
    this.write([...this.all().filter((r) => r.id !== record.id), record]);
  }

  forget(id: string): void {
    const kept = this.all().filter((r) => r.id !== id);
    this.write(kept);
  }

  /**
   * Drops this project's records whose session the server no longer has (imported, discarded
   * or swept); `known` is the server's full list for that project.
   */
  prune(projectId: number, known: readonly ServerUpload[]): void {
    const ids = new Set(known.map((u) => u.id));
    this.write(this.all().filter((r) => r.projectId !== projectId || ids.has(r.id)));
  }

  private write(records: ResumeRecord[]): void {
    try {
      if (records.length === 0) this.store?.removeItem(RESUME_STORAGE_KEY);
      else this.store?.setItem(RESUME_STORAGE_KEY, JSON.stringify(records));
    } catch {
      // Storage full or disabled: uploads still work, they just cannot be resumed.
    }
  }
}

function isRecord(value: unknown): value is ResumeRecord {
  const r = value as Partial<ResumeRecord> | null;
  return (
    typeof r?.id === "string" &&
    typeof r.projectId === "number" &&
    typeof r.path === "string" &&
    typeof r.size === "number" &&
    typeof r.lastModified === "number"
  );
}

/**
 * The server session a picked file can continue: same project, same name and size on the
 * server, and this browser's record says it came from a file with the same last-modified time.
 * A session is used for one file only; the newest record wins.
 */
export function findResumable(
  file: LocalFile,
  projectId: number,
  server: readonly ServerUpload[],
  records: readonly ResumeRecord[],
  taken: ReadonlySet<string> = new Set(),
): ServerUpload | null {
  for (const record of [...records].reverse()) {
    if (taken.has(record.id)) continue;
    if (record.projectId !== projectId || record.path !== file.path) continue;
    if (record.size !== file.size || record.lastModified !== file.lastModified) continue;
    const upload = server.find((u) => u.id === record.id);
    if (upload && upload.project_id === projectId && upload.filename === file.path && upload.size === file.size) {
      return upload;
    }
  }
  return null;
}

/** Sessions that still wait for bytes or for an import, for the "unfinished uploads" list. */
export function unfinished(server: readonly ServerUpload[]): ServerUpload[] {
  return server.filter((u) => u.status === "open" || u.received < u.size);
}

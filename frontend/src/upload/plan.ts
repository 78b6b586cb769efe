// Pure helpers of the dataset page's bulk upload: which dropped files go into which import,
// how a file is cut into chunks (and the Content-Range of each), and which import problem
// belongs to which file. No DOM, no network: see upload/transfer.ts for those.

/** 8 MiB: large enough to keep the request count low, small enough to retry cheaply. */
export const CHUNK_SIZE = 8 * 1024 * 1024;

/** One chunk of a file: bytes `start` to `end`, both inclusive (as in Content-Range). */
export interface Chunk {
  start: number;
  end: number;
}

/** The chunks of a `size`-byte file from `from` on (where an interrupted upload resumes). */
export function planChunks(size: number, chunkSize: number = CHUNK_SIZE, from = 0): Chunk[] {
  if (!Number.isInteger(size) || size < 0) throw new Error(`invalid size ${size}`);
  if (!Number.isInteger(chunkSize) || chunkSize <= 0) throw new Error(`invalid chunk size ${chunkSize}`);
  const chunks: Chunk[] = [];
  for (let start = Math.max(0, from); start < size; start += chunkSize) {
    chunks.push({ start, end: Math.min(start + chunkSize, size) - 1 });
  }
  return chunks;
}

/** `bytes START-END/SIZE`, the header appendUpload expects. */
export function contentRange(chunk: Chunk, size: number): string {
  if (chunk.start < 0 || chunk.end < chunk.start || chunk.end >= size) {
    throw new Error(`chunk ${chunk.start}-${chunk.end} is outside a ${size}-byte file`);
  }
  return `bytes ${chunk.start}-${chunk.end}/${size}`;
}

/** A fraction 0..1 of a file sent: the chunks done plus the bytes of the current one. */
export function progressOf(sent: number, size: number): number {
  if (size <= 0) return 1;
  return Math.min(1, Math.max(0, sent / size));
}

/** A relative POSIX path: no leading slash or "./", backslashes turned into slashes. */
export function normalizePath(path: string): string {
  return path
    .replace(/\\/g, "/")
    .split("/")
    .filter((part) => part !== "" && part !== ".")
    .join("/");
}

/** The last part of a path. */
export function baseName(path: string): string {
  const parts = normalizePath(path).split("/");
  return parts[parts.length - 1] ?? "";
}

export type FileKind = "nifti" | "table" | "zip" | "ignored";

/** Files that operating systems add to folders (.DS_Store, __MACOSX/, Thumbs.db) and hidden files. */
export function isSystemFile(path: string): boolean {
  const parts = normalizePath(path).split("/");
  return parts.some((p) => p === "__MACOSX" || p.startsWith(".")) || /^(thumbs\.db|desktop\.ini)$/i.test(baseName(path));
}

/** What an import can use: NIfTI volumes, tables (manifest or participants.tsv) and zips. */
export function kindOf(path: string): FileKind {
  if (isSystemFile(path)) return "ignored";
  const name = baseName(path).toLowerCase();
  if (name.endsWith(".nii") || name.endsWith(".nii.gz")) return "nifti";
  if (name.endsWith(".csv") || name.endsWith(".tsv")) return "table";
  if (name.endsWith(".zip")) return "zip";
  return "ignored";
}

/** The table an import reads: a manifest.csv/.tsv or a BIDS participants.tsv. */
export function isImportTable(path: string): boolean {
  return /^(manifest\.(csv|tsv)|participants\.tsv)$/i.test(baseName(path));
}

export interface DroppedFile {
  /** The name sent to the server: the relative path inside the dropped folder, or the file name. */
  path: string;
  size: number;
}

export interface ImportGroup<F extends DroppedFile> {
  /** "zip": one archive, imported alone; "files": loose files with their table. */
  kind: "zip" | "files";
  files: F[];
  /** The manifest or participants.tsv among `files`, if any. */
  table: F | null;
}

export interface GroupedDrop<F extends DroppedFile> {
  groups: ImportGroup<F>[];
  /** Files left out, with why (system files, sidecars, empty files, duplicates). */
  skipped: { file: F; reason: string }[];
}

/**
 * Splits a drop into imports: each zip alone (the server takes a zip only by itself), and all
 * loose files together with the table nearest the top (the server picks the same one).
 */
export function groupDropped<F extends DroppedFile>(files: readonly F[]): GroupedDrop<F> {
  const skipped: { file: F; reason: string }[] = [];
  const zips: F[] = [];
  const loose: F[] = [];
  const seen = new Set<string>();
  for (const file of files) {
    const path = normalizePath(file.path);
    const kind = kindOf(path);
    if (kind === "ignored") {
      skipped.push({ file, reason: isSystemFile(path) ? "system file" : "not used by an import" });
    } else if (file.size <= 0) {
      skipped.push({ file, reason: "empty file" });
    } else if (seen.has(path)) {
      skipped.push({ file, reason: "the same name twice" });
    } else {
      seen.add(path);
      (kind === "zip" ? zips : loose).push(file);
    }
  }
  const groups: ImportGroup<F>[] = zips.map((z) => ({ kind: "zip", files: [z], table: null }));
  if (loose.length > 0) {
    const tables = loose
      .filter((f) => isImportTable(f.path))
      .sort((a, b) => depth(a.path) - depth(b.path) || tableRank(a.path) - tableRank(b.path));
    groups.push({ kind: "files", files: loose, table: tables[0] ?? null });
  }
  return { groups, skipped };
}

function depth(path: string): number {
  return normalizePath(path).split("/").length;
}

function tableRank(path: string): number {
  return baseName(path).toLowerCase().startsWith("manifest") ? 0 : 1;
}

/** One problem of a refused import, as the server lists it. */
export interface ImportProblem {
  file?: string | null;
  row?: number | null;
  problem: string;
}

/** The `errors` of an import's error body ({detail, errors: [{file, row, problem}]}), or null. */
export function importProblems(body: unknown): ImportProblem[] | null {
  if (!body || typeof body !== "object" || !("errors" in body)) return null;
  const errors = (body as { errors: unknown }).errors;
  if (!Array.isArray(errors)) return null;
  return errors
    .filter((e): e is Record<string, unknown> => !!e && typeof e === "object" && typeof e.problem === "string")
    .map((e) => ({
      file: typeof e.file === "string" ? e.file : null,
      row: typeof e.row === "number" ? e.row : null,
      problem: e.problem as string,
    }));
}

/** A problem as one line: "row 3: label must be 0 or 1". */
export function problemText(p: ImportProblem): string {
  return p.row != null ? `row ${p.row}: ${p.problem}` : p.problem;
}

export interface MappedProblems {
  /** Problems per file key (the keys of `files`). */
  byFile: Record<string, string[]>;
  /** Problems that name no file of the import. */
  general: string[];
}

/**
 * Puts each problem next to its file: the file whose path (or upload id) the problem names;
 * a row problem without a file goes to the table; anything inside a zip goes to the zip.
 */
export function mapProblems(
  problems: readonly ImportProblem[],
  files: readonly { key: string; path: string; uploadId?: string | null }[],
  group: { kind: "zip" | "files"; tableKey?: string | null } = { kind: "files" },
): MappedProblems {
  const byFile: Record<string, string[]> = {};
  const general: string[] = [];
  const byPath = new Map<string, string>();
  const byBase = new Map<string, string[]>();
  for (const f of files) {
    const path = normalizePath(f.path);
    byPath.set(path, f.key);
    if (f.uploadId) byPath.set(f.uploadId, f.key);
    byBase.set(baseName(path), [...(byBase.get(baseName(path)) ?? []), f.key]);
  }
  const add = (key: string, text: string) => {
    (byFile[key] ??= []).push(text);
  };
  for (const p of problems) {
    const text = problemText(p);
    const named = p.file ? normalizePath(p.file) : null;
    let key: string | undefined;
    if (named) {
      key = byPath.get(named) ?? byPath.get(p.file ?? "");
      // A suffix match ("anat/x.nii.gz" for "ds/sub-01/anat/x.nii.gz"), only when unique.
      if (!key) {
        const suffix = files.filter((f) => normalizePath(f.path).endsWith(`/${named}`));
        if (suffix.length === 1) key = suffix[0]?.key;
      }
      if (!key) {
        const same = byBase.get(baseName(named)) ?? [];
        if (same.length === 1 && !named.includes("/")) key = same[0];
      }
    }
    if (!key && group.kind === "zip" && files.length === 1) key = files[0]?.key;
    if (!key && p.row != null && group.tableKey) key = group.tableKey;
    if (key) add(key, named && group.kind === "zip" && !byPath.has(named) ? `${named}: ${text}` : text);
    else general.push(named ? `${p.file}: ${text}` : text);
  }
  return { byFile, general };
}

/** The table rows named by problems, when every problem names a row (a partial import may help). */
export function rowsWithProblems(problems: readonly ImportProblem[]): number[] | null {
  if (problems.length === 0 || problems.some((p) => p.row == null)) return null;
  return [...new Set(problems.map((p) => p.row as number))].sort((a, b) => a - b);
}

/** "2 subjects imported (manifest)". */
export function importSummary(count: number, layout: string): string {
  return `${count} subject${count === 1 ? "" : "s"} imported (${layout === "bids" ? "BIDS folder" : layout}).`;
}

/** "1.5 MB". */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// The browser side of the bulk upload: reading dropped folders (webkitGetAsEntry) and sending
// a file's chunks with XMLHttpRequest, whose upload progress events drive the progress bars.
import { ApiError, CSRF_COOKIE, CSRF_HEADER, buildUrl, errorFromResponse, readCookie } from "../api/http";
import { api } from "../api/client";
import { CHUNK_SIZE, contentRange, normalizePath, planChunks } from "./plan";

/** A file with the name it is sent under (its path inside a dropped folder). */
export interface PickedFile {
  path: string;
  size: number;
  file: File;
}

type Entry = {
  isFile: boolean;
  isDirectory: boolean;
  name: string;
  fullPath: string;
  file?: (ok: (f: File) => void, fail: (e: unknown) => void) => void;
  createReader?: () => { readEntries: (ok: (e: Entry[]) => void, fail: (e: unknown) => void) => void };
};

async function walk(entry: Entry, out: PickedFile[]): Promise<void> {
  if (entry.isFile && entry.file) {
    const file = await new Promise<File>((ok, fail) => entry.file?.(ok, fail));
    out.push({ path: normalizePath(entry.fullPath || file.name), size: file.size, file });
  } else if (entry.isDirectory && entry.createReader) {
    const reader = entry.createReader();
    // readEntries answers in batches (100 in Chromium) until an empty one.
    for (;;) {
      const batch = await new Promise<Entry[]>((ok, fail) => reader.readEntries(ok, fail));
      if (batch.length === 0) break;
      for (const child of batch) await walk(child, out);
    }
  }
}

/** Every file of a drop, folders walked, each named by its path relative to the drop. */
export async function filesFromDrop(data: DataTransfer): Promise<PickedFile[]> {
  const entries: Entry[] = [];
  const loose: File[] = [];
  for (const item of Array.from(data.items ?? [])) {
    if (item.kind !== "file") continue;
    const entry = (item as DataTransferItem & { webkitGetAsEntry?: () => Entry | null }).webkitGetAsEntry?.();
    if (entry) entries.push(entry);
    else {
      const file = item.getAsFile();
      if (file) loose.push(file);
    }
  }
  // getAsEntry must be called synchronously for every item before awaiting anything.
  const out: PickedFile[] = [];
  for (const entry of entries) await walk(entry, out);
  if (entries.length === 0 && loose.length === 0) loose.push(...Array.from(data.files ?? []));
  out.push(...loose.map(fromFile));
  return out;
}

/** A picked file: named by its webkitRelativePath when it came with a folder. */
export function fromFile(file: File): PickedFile {
  const relative = (file as File & { webkitRelativePath?: string }).webkitRelativePath;
  return { path: normalizePath(relative || file.name), size: file.size, file };
}

/** Where a chunk of an upload goes (appendUpload). */
export function chunkUrl(uploadId: string): string {
  return buildUrl(`/uploads/${encodeURIComponent(uploadId)}`);
}

/** PUT one chunk with XMLHttpRequest; `onProgress` gets the bytes of this chunk sent so far. */
function putChunk(
  uploadId: string,
  blob: Blob,
  range: string,
  onProgress: (loaded: number) => void,
  signal?: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", chunkUrl(uploadId));
    xhr.withCredentials = true;
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Content-Range", range);
    xhr.setRequestHeader("Accept", "application/json");
    const token = readCookie(CSRF_COOKIE, document.cookie);
    if (token) xhr.setRequestHeader(CSRF_HEADER, token);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else {
        const response = new Response(xhr.responseText || null, { status: xhr.status, statusText: xhr.statusText });
        void errorFromResponse(response).then(reject, reject);
      }
    };
    xhr.onerror = () => reject(new Error("network error while sending a chunk"));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.send(blob);
  });
}

/**
 * Sends a file as a chunked upload and returns its id. A failed chunk is retried from what the
 * server says it holds (GET /uploads/{id}: `received`), a few times before giving up.
 */
export async function uploadFile(
  projectId: number,
  picked: PickedFile,
  onProgress: (sent: number) => void,
  options: { chunkSize?: number; retries?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const upload = await api.uploads.create({ project_id: projectId, filename: picked.path, size: picked.size });
  let received = upload.received;
  let failures = 0;
  while (received < picked.size) {
    const [chunk] = planChunks(picked.size, options.chunkSize ?? CHUNK_SIZE, received);
    if (!chunk) break;
    try {
      await putChunk(
        upload.id,
        picked.file.slice(chunk.start, chunk.end + 1),
        contentRange(chunk, picked.size),
        (loaded) => onProgress(chunk.start + loaded),
        options.signal,
      );
      received = chunk.end + 1;
      onProgress(received);
    } catch (error) {
      if (options.signal?.aborted) throw error;
      // Client errors other than a range mismatch will not get better with a retry.
      if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 409 && error.status !== 422)
        throw error;
      failures += 1;
      if (failures > (options.retries ?? 3)) throw error;
      received = (await api.uploads.get(upload.id)).received;
      onProgress(received);
    }
  }
  return upload.id;
}

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
export function putChunk(
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

/** How uploadFile talks to the server; the app uses the API client and XMLHttpRequest. */
export interface UploadTransport {
  create(body: { project_id: number; filename: string; size: number }): Promise<{ id: string; received: number }>;
  get(uploadId: string): Promise<{ received: number; size: number; status: string }>;
  remove(uploadId: string): Promise<unknown>;
  put: typeof putChunk;
}

export const xhrTransport: UploadTransport = {
  create: (body) => api.uploads.create(body),
  get: (uploadId) => api.uploads.get(uploadId),
  remove: (uploadId) => api.uploads.remove(uploadId),
  put: putChunk,
};

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

export interface UploadOptions {
  chunkSize?: number;
  retries?: number;
  /** Aborting it stops the transfer and deletes the server's upload session (cancel). */
  signal?: AbortSignal;
  /** An unfinished session of this same file (upload/resume.ts): continue where it stopped. */
  resumeId?: string | null;
  /** Called with the session id as soon as it exists (to remember it for a later resume). */
  onSession?: (uploadId: string) => void;
  transport?: UploadTransport;
}

/**
 * Sends a file as a chunked upload and returns its id. A failed chunk is retried from what the
 * server says it holds (GET /uploads/{id}: `received`), a few times before giving up. Aborted,
 * it deletes the session on the server (its bytes go too) and rejects with an AbortError.
 */
export async function uploadFile(
  projectId: number,
  picked: PickedFile,
  onProgress: (sent: number) => void,
  options: UploadOptions = {},
): Promise<string> {
  const transport = options.transport ?? xhrTransport;
  const { signal } = options;
  const aborted = () => new DOMException("aborted", "AbortError");
  if (signal?.aborted) throw aborted();
  let uploadId: string | null = null;
  let received = 0;
  if (options.resumeId) {
    try {
      const resumed = await transport.get(options.resumeId);
      if (resumed.size === picked.size) {
        uploadId = options.resumeId;
        received = resumed.received;
      }
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      // Gone meanwhile (imported, discarded or swept): start afresh.
    }
  }
  if (uploadId === null) {
    const created = await transport.create({ project_id: projectId, filename: picked.path, size: picked.size });
    uploadId = created.id;
    received = created.received;
  }
  const id = uploadId;
  options.onSession?.(id);
  onProgress(received);
  try {
    let failures = 0;
    while (received < picked.size) {
      if (signal?.aborted) throw aborted();
      const [chunk] = planChunks(picked.size, options.chunkSize ?? CHUNK_SIZE, received);
      if (!chunk) break;
      try {
        await transport.put(
          id,
          picked.file.slice(chunk.start, chunk.end + 1),
          contentRange(chunk, picked.size),
          (loaded) => onProgress(chunk.start + loaded),
          signal,
        );
        received = chunk.end + 1;
        onProgress(received);
      } catch (error) {
        if (signal?.aborted || isAbort(error)) throw error;
        // Client errors other than a range mismatch will not get better with a retry.
        if (
          error instanceof ApiError &&
          error.status >= 400 &&
          error.status < 500 &&
          error.status !== 409 &&
          error.status !== 422
        )
          throw error;
        failures += 1;
        if (failures > (options.retries ?? 3)) throw error;
        received = (await transport.get(id)).received;
        onProgress(received);
      }
    }
    if (signal?.aborted) throw aborted();
  } catch (error) {
    if (signal?.aborted || isAbort(error)) {
      // Cancelled: the server forgets the session and its bytes (best effort; a session left
      // behind is swept after a day).
      await transport.remove(id).catch(() => undefined);
      throw aborted();
    }
    throw error;
  }
  return id;
}

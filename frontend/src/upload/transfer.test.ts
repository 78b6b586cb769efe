import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../api/http";
import { type UploadTransport, uploadFile } from "./transfer";

/** A server in memory: sessions with their received bytes; `put` appends what it is sent. */
function fakeServer(options: { putDelay?: boolean } = {}) {
  const sessions = new Map<string, { size: number; received: number }>();
  let next = 0;
  const removed: string[] = [];
  const transport: UploadTransport = {
    create: vi.fn(async ({ size }) => {
      const id = `s${++next}`;
      sessions.set(id, { size, received: 0 });
      return { id, received: 0 };
    }),
    get: vi.fn(async (id: string) => {
      const s = sessions.get(id);
      if (!s) throw new ApiError(404, `upload ${id} not found`);
      return { ...s, status: s.received === s.size ? "complete" : "open" };
    }),
    remove: vi.fn(async (id: string) => {
      removed.push(id);
      sessions.delete(id);
    }),
    put: vi.fn(
      (id: string, blob: Blob, _range: string, onProgress: (n: number) => void, signal?: AbortSignal) =>
        new Promise<void>((resolve, reject) => {
          const finish = () => {
            const s = sessions.get(id);
            if (s) s.received += blob.size;
            onProgress(blob.size);
            resolve();
          };
          if (!options.putDelay) return finish();
          const timer = setTimeout(finish, 50);
          signal?.addEventListener("abort", () => {
            clearTimeout(timer);
            reject(new DOMException("aborted", "AbortError"));
          });
        }),
    ),
  };
  return { sessions, removed, transport };
}

const picked = (size: number) => {
  const file = new File([new Uint8Array(size)], "t1.nii.gz");
  return { path: "t1.nii.gz", size, file };
};

describe("uploadFile", () => {
  it("sends every chunk of a new upload", async () => {
    const { sessions, transport } = fakeServer();
    const seen: number[] = [];
    const id = await uploadFile(1, picked(25), (n) => seen.push(n), { chunkSize: 10, transport });
    expect(sessions.get(id)?.received).toBe(25);
    expect(transport.put).toHaveBeenCalledTimes(3);
    expect(seen.at(-1)).toBe(25);
  });

  it("resumes an unfinished session from the bytes the server holds", async () => {
    const { sessions, transport } = fakeServer();
    sessions.set("old", { size: 25, received: 20 });
    const seen: number[] = [];
    const id = await uploadFile(1, picked(25), (n) => seen.push(n), { chunkSize: 10, transport, resumeId: "old" });
    expect(id).toBe("old");
    expect(transport.create).not.toHaveBeenCalled();
    expect(transport.put).toHaveBeenCalledTimes(1);
    expect((transport.put as ReturnType<typeof vi.fn>).mock.calls[0][2]).toBe("bytes 20-24/25");
    expect(seen[0]).toBe(20);
    expect(sessions.get("old")?.received).toBe(25);
  });

  it("starts afresh when the session to resume is gone", async () => {
    const { transport } = fakeServer();
    const onSession = vi.fn();
    const id = await uploadFile(1, picked(5), () => undefined, { transport, resumeId: "gone", onSession });
    expect(id).toBe("s1");
    expect(onSession).toHaveBeenCalledWith("s1");
  });

  it("cancelled mid-way: stops sending and deletes the server session", async () => {
    const { sessions, removed, transport } = fakeServer({ putDelay: true });
    const abort = new AbortController();
    const pending = uploadFile(1, picked(40), () => undefined, { chunkSize: 10, transport, signal: abort.signal });
    await vi.waitFor(() => expect(transport.put).toHaveBeenCalled());
    abort.abort();
    await expect(pending).rejects.toMatchObject({ name: "AbortError" });
    expect(removed).toEqual(["s1"]);
    expect(sessions.size).toBe(0);
    expect(transport.put).toHaveBeenCalledTimes(1);
  });

  it("gives up on a client error without deleting the session", async () => {
    const { removed, transport } = fakeServer();
    transport.put = vi.fn(async () => {
      throw new ApiError(413, "over the limit");
    });
    await expect(uploadFile(1, picked(5), () => undefined, { transport })).rejects.toBeInstanceOf(ApiError);
    expect(removed).toEqual([]);
  });
});

import { describe, expect, it } from "vitest";
import { RESUME_STORAGE_KEY, type ResumeRecord, ResumeStore, type ServerUpload, findResumable, unfinished } from "./resume";

function memory() {
  const map = new Map<string, string>();
  return {
    map,
    getItem: (k: string) => map.get(k) ?? null,
    setItem: (k: string, v: string) => void map.set(k, v),
    removeItem: (k: string) => void map.delete(k),
  };
}

const FILE = { path: "sub-01/anat/t1.nii.gz", size: 1000, lastModified: 1_700_000_000_000 };
const upload = (over: Partial<ServerUpload> = {}): ServerUpload => ({
  id: "u1",
  project_id: 3,
  filename: FILE.path,
  size: FILE.size,
  received: 400,
  status: "open",
  ...over,
});
const record = (over: Partial<ResumeRecord> = {}): ResumeRecord => ({
  id: "u1",
  projectId: 3,
  path: FILE.path,
  size: FILE.size,
  lastModified: FILE.lastModified,
  ...over,
});

describe("findResumable", () => {
  it("continues the session of the same file in the same project", () => {
    expect(findResumable(FILE, 3, [upload()], [record()])?.id).toBe("u1");
  });

  it("refuses another project, name, size or modification time, and sessions already taken", () => {
    expect(findResumable(FILE, 4, [upload()], [record()])).toBeNull();
    expect(findResumable({ ...FILE, path: "other.nii.gz" }, 3, [upload()], [record()])).toBeNull();
    expect(findResumable({ ...FILE, size: 999 }, 3, [upload()], [record()])).toBeNull();
    expect(findResumable({ ...FILE, lastModified: 1 }, 3, [upload()], [record()])).toBeNull();
    expect(findResumable(FILE, 3, [upload()], [record()], new Set(["u1"]))).toBeNull();
  });

  it("needs both this browser's record and the server's session", () => {
    expect(findResumable(FILE, 3, [upload()], [])).toBeNull(); // started in another browser
    expect(findResumable(FILE, 3, [], [record()])).toBeNull(); // imported or discarded
    // The server's name or size disagreeing with the record is not the same upload.
    expect(findResumable(FILE, 3, [upload({ size: 5 })], [record()])).toBeNull();
  });

  it("prefers the newest record when a file was started twice", () => {
    const server = [upload(), upload({ id: "u2", received: 900 })];
    expect(findResumable(FILE, 3, server, [record(), record({ id: "u2" })])?.id).toBe("u2");
  });
});

describe("ResumeStore", () => {
  it("remembers, forgets and prunes records per project", () => {
    const kv = memory();
    const store = new ResumeStore(kv);
    store.remember(record());
    store.remember(record({ id: "u2" }));
    store.remember(record({ id: "x", projectId: 9 }));
    store.remember(record()); // again: replaced, not duplicated
    expect(store.all().map((r) => r.id)).toEqual(["u2", "x", "u1"]);
    store.forget("u2");
    expect(store.all().map((r) => r.id)).toEqual(["x", "u1"]);
    // Project 3's server list no longer has u1: pruned; project 9's record stays.
    store.prune(3, [upload({ id: "other" })]);
    expect(store.all().map((r) => r.id)).toEqual(["x"]);
    store.forget("x");
    expect(kv.map.has(RESUME_STORAGE_KEY)).toBe(false);
  });

  it("survives garbage and missing storage", () => {
    const kv = memory();
    kv.setItem(RESUME_STORAGE_KEY, "{not json");
    expect(new ResumeStore(kv).all()).toEqual([]);
    kv.setItem(RESUME_STORAGE_KEY, JSON.stringify([{ id: 1 }, record()]));
    expect(new ResumeStore(kv).all()).toEqual([record()]);
    const none = new ResumeStore(null);
    none.remember(record());
    expect(none.all()).toEqual([]);
  });
});

describe("unfinished", () => {
  it("lists sessions still waiting for bytes", () => {
    const done = upload({ id: "done", received: 1000, status: "complete" });
    expect(unfinished([upload(), done]).map((u) => u.id)).toEqual(["u1"]);
  });
});

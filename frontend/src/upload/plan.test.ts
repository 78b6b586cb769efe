import { describe, expect, it } from "vitest";
import {
  contentRange,
  formatBytes,
  groupDropped,
  importProblems,
  importSummary,
  isImportTable,
  kindOf,
  mapProblems,
  normalizePath,
  planChunks,
  progressOf,
  rowsWithProblems,
} from "./plan";

describe("planChunks", () => {
  it("cuts a file into inclusive ranges, the last one short", () => {
    expect(planChunks(10, 4)).toEqual([
      { start: 0, end: 3 },
      { start: 4, end: 7 },
      { start: 8, end: 9 },
    ]);
  });
  it("gives one chunk for a file at or under the chunk size", () => {
    expect(planChunks(4, 4)).toEqual([{ start: 0, end: 3 }]);
    expect(planChunks(1, 4)).toEqual([{ start: 0, end: 0 }]);
  });
  it("resumes from an offset and has nothing left for a complete file", () => {
    expect(planChunks(10, 4, 6)).toEqual([
      { start: 6, end: 9 },
    ]);
    expect(planChunks(10, 4, 10)).toEqual([]);
    expect(planChunks(0, 4)).toEqual([]);
  });
  it("refuses invalid sizes", () => {
    expect(() => planChunks(-1, 4)).toThrow();
    expect(() => planChunks(10, 0)).toThrow();
  });
});

describe("contentRange", () => {
  it("formats bytes START-END/SIZE", () => {
    expect(contentRange({ start: 0, end: 3 }, 10)).toBe("bytes 0-3/10");
    expect(contentRange({ start: 8, end: 9 }, 10)).toBe("bytes 8-9/10");
  });
  it("refuses ranges outside the file", () => {
    expect(() => contentRange({ start: 8, end: 10 }, 10)).toThrow();
    expect(() => contentRange({ start: 5, end: 4 }, 10)).toThrow();
  });
  it("covers every byte once over a plan", () => {
    const ranges = planChunks(25, 8).map((c) => contentRange(c, 25));
    expect(ranges).toEqual(["bytes 0-7/25", "bytes 8-15/25", "bytes 16-23/25", "bytes 24-24/25"]);
  });
});

describe("progressOf", () => {
  it("is a clamped fraction", () => {
    expect(progressOf(5, 10)).toBe(0.5);
    expect(progressOf(20, 10)).toBe(1);
    expect(progressOf(0, 0)).toBe(1);
  });
});

describe("paths and kinds", () => {
  it("normalizes paths", () => {
    expect(normalizePath("/ds//sub-01\\anat/./x.nii.gz")).toBe("ds/sub-01/anat/x.nii.gz");
  });
  it("classifies files", () => {
    expect(kindOf("a/b.nii.gz")).toBe("nifti");
    expect(kindOf("B.NII")).toBe("nifti");
    expect(kindOf("manifest.csv")).toBe("table");
    expect(kindOf("data.zip")).toBe("zip");
    expect(kindOf("sub-01/anat/x.json")).toBe("ignored");
    expect(kindOf("ds/.DS_Store")).toBe("ignored");
    expect(kindOf("__MACOSX/x.nii")).toBe("ignored");
    expect(isImportTable("ds/participants.tsv")).toBe(true);
    expect(isImportTable("notes.csv")).toBe(false);
  });
});

describe("groupDropped", () => {
  const f = (path: string, size = 10) => ({ path, size });
  it("puts loose files in one import with the table nearest the top", () => {
    const files = [f("ds/sub-01/anat/sub-01_T1w.nii.gz"), f("ds/participants.tsv"), f("ds/derivatives/participants.tsv")];
    const { groups, skipped } = groupDropped(files);
    expect(skipped).toEqual([]);
    expect(groups).toHaveLength(1);
    expect(groups[0]?.kind).toBe("files");
    expect(groups[0]?.files).toHaveLength(3);
    expect(groups[0]?.table?.path).toBe("ds/participants.tsv");
  });
  it("prefers a manifest at the same depth", () => {
    const { groups } = groupDropped([f("participants.tsv"), f("manifest.csv"), f("a.nii")]);
    expect(groups[0]?.table?.path).toBe("manifest.csv");
  });
  it("imports each zip alone and skips sidecars, system and empty files, duplicates", () => {
    const files = [f("a.zip"), f("b.zip"), f("x.nii"), f("x.json"), f(".DS_Store"), f("e.nii", 0), f("x.nii")];
    const { groups, skipped } = groupDropped(files);
    expect(groups.map((g) => [g.kind, g.files.map((x) => x.path)])).toEqual([
      ["zip", ["a.zip"]],
      ["zip", ["b.zip"]],
      ["files", ["x.nii"]],
    ]);
    expect(skipped.map((s) => [s.file.path, s.reason])).toEqual([
      ["x.json", "not used by an import"],
      [".DS_Store", "system file"],
      ["e.nii", "empty file"],
      ["x.nii", "the same name twice"],
    ]);
  });
  it("has no group for nothing usable", () => {
    expect(groupDropped([f("readme.txt")]).groups).toEqual([]);
  });
});

describe("import problems", () => {
  it("reads the errors of an error body", () => {
    expect(
      importProblems({ detail: "x", errors: [{ file: "a.nii", row: null, problem: "bad" }, { problem: "p", row: 3 }, 7] }),
    ).toEqual([
      { file: "a.nii", row: null, problem: "bad" },
      { file: null, row: 3, problem: "p" },
    ]);
    expect(importProblems({ detail: "x" })).toBeNull();
    expect(importProblems(null)).toBeNull();
  });

  const files = [
    { key: "m", path: "ds/manifest.csv", uploadId: "u1" },
    { key: "a", path: "ds/img/a.nii.gz", uploadId: "u2" },
    { key: "b", path: "ds/img/b.nii.gz", uploadId: "u3" },
  ];

  it("maps problems to files by path, suffix, upload id and row", () => {
    const mapped = mapProblems(
      [
        { file: "ds/img/a.nii.gz", problem: "not a NIfTI file" },
        { file: "img/b.nii.gz", problem: "empty volume" },
        { file: "u1", problem: "no such upload" },
        { file: "ds/manifest.csv", row: 3, problem: "label must be 0 or 1" },
        { row: 4, problem: "unknown split" },
        { file: "c.nii.gz", row: 5, problem: "no such file" },
        { problem: "nothing to import" },
      ],
      files,
      { kind: "files", tableKey: "m" },
    );
    expect(mapped.byFile).toEqual({
      a: ["not a NIfTI file"],
      b: ["empty volume"],
      m: ["no such upload", "row 3: label must be 0 or 1", "row 4: unknown split", "row 5: no such file"],
    });
    expect(mapped.general).toEqual(["nothing to import"]);
  });

  it("keeps an ambiguous base name general", () => {
    const twins = [
      { key: "1", path: "s1/t1.nii" },
      { key: "2", path: "s2/t1.nii" },
    ];
    expect(mapProblems([{ file: "t1.nii", problem: "bad" }], twins).general).toEqual(["t1.nii: bad"]);
  });

  it("puts a zip's entries' problems on the zip", () => {
    const mapped = mapProblems([{ file: "inner/x.nii", problem: "truncated" }], [{ key: "z", path: "data.zip" }], {
      kind: "zip",
    });
    expect(mapped.byFile).toEqual({ z: ["inner/x.nii: truncated"] });
  });
});

describe("texts", () => {
  it("summarizes and formats", () => {
    expect(importSummary(1, "manifest")).toBe("1 subject imported (manifest).");
    expect(importSummary(3, "bids")).toBe("3 subjects imported (BIDS folder).");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KB");
    expect(formatBytes(20 * 1024 * 1024)).toBe("20 MB");
  });
});

describe("rowsWithProblems", () => {
  it("lists the rows when every problem names one, else null", () => {
    expect(rowsWithProblems([{ row: 4, problem: "a" }, { row: 2, problem: "b" }, { row: 4, problem: "c" }])).toEqual([2, 4]);
    expect(rowsWithProblems([{ row: 4, problem: "a" }, { row: null, problem: "table" }])).toBeNull();
    expect(rowsWithProblems([])).toBeNull();
  });
});

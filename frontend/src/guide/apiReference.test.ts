import { describe, expect, it } from "vitest";
import doc from "../../openapi.json";
import { operationsByTag } from "./apiReference";

describe("operationsByTag", () => {
  it("lists every operation of the document once, under its tag", () => {
    const groups = operationsByTag(doc as never);
    const rows = groups.flatMap(([, r]) => r);
    const expected = Object.values(doc.paths as Record<string, object>).reduce(
      (n, item) => n + Object.keys(item).filter((m) => ["get", "post", "put", "patch", "delete"].includes(m)).length,
      0,
    );
    expect(rows).toHaveLength(expected);
    expect(rows.find((r) => r.operationId === "createAttributionBatch")).toMatchObject({
      method: "POST",
      path: "/api/v1/attributions/batch",
    });
    expect(groups.map(([tag]) => tag)).toEqual([...groups.map(([tag]) => tag)].sort());
  });
});

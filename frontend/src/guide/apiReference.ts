// The API reference page's rows, from the OpenAPI document the frontend is built against.

export interface OperationRow {
  method: string;
  path: string;
  operationId: string;
  summary: string;
  description: string;
  tag: string;
}

type OpenApiDoc = {
  paths: Record<string, Record<string, { operationId?: string; summary?: string; description?: string; tags?: string[] }>>;
};

const METHODS = ["get", "post", "put", "patch", "delete"];

/** Every operation, grouped by its first tag (tags sorted), in path order within a tag. */
export function operationsByTag(doc: OpenApiDoc): [string, OperationRow[]][] {
  const groups = new Map<string, OperationRow[]>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = op.tags?.[0] ?? "other";
      const rows = groups.get(tag) ?? [];
      rows.push({
        method: method.toUpperCase(),
        path,
        operationId: op.operationId ?? "",
        summary: op.summary ?? "",
        description: op.description ?? "",
        tag,
      });
      groups.set(tag, rows);
    }
  }
  return [...groups.entries()].sort(([a], [b]) => a.localeCompare(b));
}

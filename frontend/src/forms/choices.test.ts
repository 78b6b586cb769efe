// The form's choices (choices.ts) against the enums of frontend/openapi.json: each list names
// exactly the values the backend's schema accepts, in the schema's order. TypeScript checks the
// same against schema.d.ts; this catches a stale build or a list cast past the types.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  CLASSIFICATION_EARLY_STOPPING_METRICS,
  CLASSIFICATION_NETWORKS,
  EARLY_STOPPING_METRIC_NAMES,
  NETWORK_NAMES,
  SCHEMA_ENUMS,
  SEGMENTATION_EARLY_STOPPING_METRICS,
  SEGMENTATION_NETWORKS,
} from "./choices";
import { DEVICES, GRAD_BALANCES } from "./remedies";
import { REGRESSION_CONSTRAINTS, REGRESSION_LOSSES, REGRESSION_PENALTIES, TASKS } from "./regressionConfig";
import { ATTRIBUTION_LOSSES, LAMBDA_KINDS, LOSS_SETTINGS, TRAIN_ATTRIBUTIONS } from "./runConfig";

interface JsonSchema {
  $ref?: string;
  enum?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  properties?: Record<string, JsonSchema>;
}

const schemas = (
  JSON.parse(readFileSync(new URL("../../openapi.json", import.meta.url), "utf-8")) as {
    components: { schemas: Record<string, JsonSchema> };
  }
).components.schemas;

/** The enum of a property: its own, its items' (a list), or a nullable's or a $ref's. */
function enumOf(schema: JsonSchema | undefined): string[] | null {
  if (!schema) return null;
  if (schema.enum) return schema.enum;
  if (schema.$ref) return enumOf(schemas[schema.$ref.split("/").pop() ?? ""]);
  if (schema.items) return enumOf(schema.items);
  for (const option of schema.anyOf ?? []) {
    const found = enumOf(option);
    if (found) return found;
  }
  return null;
}

/** The enum at "Model.field" in openapi.json's components. */
function schemaEnum(path: string): string[] | null {
  const [model, field] = path.split(".");
  return enumOf(schemas[model]?.properties?.[field]);
}

describe("the form's choices are the schema's enums", () => {
  it.each(Object.entries(SCHEMA_ENUMS))("%s", (path, list) => {
    const values = schemaEnum(path);
    expect(values, `no enum at ${path} in openapi.json`).not.toBeNull();
    expect([...list]).toEqual(values);
  });

  it("finds a divergence", () => {
    expect(schemaEnum("RunConfig.device")).not.toEqual(["auto", "cpu"]);
    expect(schemaEnum("RunConfig.nothing_here")).toBeNull();
  });

  it("is what the forms offer", () => {
    const values = (list: readonly { value: string }[]) => list.map((c) => c.value);
    expect(SCHEMA_ENUMS["RunConfig.loss_setting"]).toEqual(values(LOSS_SETTINGS));
    expect(SCHEMA_ENUMS["RunConfig.train_attribution"]).toEqual(values(TRAIN_ATTRIBUTIONS));
    expect(SCHEMA_ENUMS["RunConfig.attribution_loss"]).toEqual([...ATTRIBUTION_LOSSES]);
    expect(SCHEMA_ENUMS["LambdaSchedule.kind"]).toEqual([...LAMBDA_KINDS]);
    expect(SCHEMA_ENUMS["RunConfig.grad_balance"]).toEqual(values(GRAD_BALANCES));
    expect(SCHEMA_ENUMS["RunConfig.device"]).toEqual([...DEVICES]);
    expect(SCHEMA_ENUMS["RunConfig.task"]).toEqual(values(TASKS));
    expect(SCHEMA_ENUMS["RegressionSettings.loss"]).toEqual(values(REGRESSION_LOSSES));
    expect(SCHEMA_ENUMS["RegressionSettings.constraints"]).toEqual(values(REGRESSION_CONSTRAINTS));
    expect(SCHEMA_ENUMS["RegressionSettings.penalty"]).toEqual(values(REGRESSION_PENALTIES));
  });

  it("splits networks and early-stopping metrics by task, within the schema's", () => {
    expect([...CLASSIFICATION_NETWORKS, ...SEGMENTATION_NETWORKS].sort()).toEqual([...NETWORK_NAMES].sort());
    expect(CLASSIFICATION_NETWORKS).not.toContain("unet");
    for (const metric of SEGMENTATION_EARLY_STOPPING_METRICS) expect(EARLY_STOPPING_METRIC_NAMES).toContain(metric);
    expect(CLASSIFICATION_EARLY_STOPPING_METRICS).toEqual(EARLY_STOPPING_METRIC_NAMES.filter((m) => m !== "val_dice"));
  });
});

// The client is generated-typed: its types are the OpenAPI schema's (checked by `tsc` in
// `npm run build`, which compiles this file), and every request it sends is an operation of
// frontend/openapi.json (checked at run time below).
import { readFileSync } from "node:fs";
import { describe, expect, expectTypeOf, it, vi } from "vitest";
import { type Api, createApi } from "./client";
import { Http } from "./http";
import { TypedClient, apiUrl, fillPath, toFormData } from "./openapi";
import type { components, paths } from "./schema";
import type { Attribution, Dataset, DatasetCreate, Job, Project, Run, RunCreate, Subject, User } from "./types";
import { readStats } from "./types";
import {
  attributionChannelMapUrl,
  attributionDisplayUrl,
  attributionMapUrl,
  epochMapUrl,
  parseId,
  reviewItemDisplayUrl,
  parseIdList,
  runEventsUrl,
  subjectChannelUrl,
  subjectImageUrl,
  subjectMaskDrawingUrl,
} from "./urls";
import { chunkUrl } from "../upload/transfer";

type Schemas = components["schemas"];
type Answer<F extends (...args: never[]) => Promise<unknown>> = Awaited<ReturnType<F>>;

interface OpenApiDocument {
  paths: Record<string, Record<string, { operationId?: string }>>;
}

const spec = JSON.parse(
  readFileSync(new URL("../../openapi.json", import.meta.url), "utf-8"),
) as OpenApiDocument;

/** The operationId of `METHOD url`, or null when the document has no such operation. */
function operationFor(method: string, url: string): string | null {
  const path = new URL(url, "http://x").pathname;
  for (const [template, item] of Object.entries(spec.paths)) {
    const pattern = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+");
    if (new RegExp(`^${pattern}$`).test(path)) {
      const op = item[method.toLowerCase()];
      if (op) return op.operationId ?? null;
    }
  }
  return null;
}

describe("generated types", () => {
  it("are the types of the resource aliases and of the client's answers", () => {
    expectTypeOf<Dataset>().toEqualTypeOf<Schemas["DatasetPublic"]>();
    expectTypeOf<DatasetCreate>().toEqualTypeOf<Schemas["DatasetCreate"]>();
    expectTypeOf<Subject>().toEqualTypeOf<Schemas["SubjectPublic"]>();
    expectTypeOf<Run>().toEqualTypeOf<Schemas["RunPublic"]>();
    expectTypeOf<RunCreate>().toEqualTypeOf<Schemas["RunCreate"]>();
    expectTypeOf<Job>().toEqualTypeOf<Schemas["JobPublic"]>();
    expectTypeOf<Attribution>().toEqualTypeOf<Schemas["AttributionPublic"]>();
    expectTypeOf<Project>().toEqualTypeOf<Schemas["ProjectPublic"]>();
    expectTypeOf<User>().toEqualTypeOf<Schemas["UserPublic"]>();

    expectTypeOf<Answer<Api["datasets"]["get"]>>().toEqualTypeOf<Schemas["DatasetPublic"]>();
    expectTypeOf<Answer<Api["datasets"]["list"]>>().toEqualTypeOf<Schemas["DatasetsPublic"]>();
    expectTypeOf<Answer<Api["projects"]["list"]>>().toEqualTypeOf<Schemas["ProjectsPublic"]>();
    expectTypeOf<Answer<Api["runs"]["create"]>>().toEqualTypeOf<Schemas["RunPublic"]>();
    expectTypeOf<Answer<Api["jobs"]["get"]>>().toEqualTypeOf<Schemas["JobPublic"]>();
    expectTypeOf<Answer<Api["auth"]["login"]>>().toEqualTypeOf<Schemas["LoginResponse"]>();
    expectTypeOf<Answer<Api["auth"]["logout"]>>().toEqualTypeOf<undefined>();
    expectTypeOf<Parameters<Api["datasets"]["create"]>[0]>().toEqualTypeOf<Schemas["DatasetCreate"]>();
    expectTypeOf<Parameters<Api["attributions"]["create"]>[0]>().toEqualTypeOf<Schemas["AttributionCreate"]>();
    expectTypeOf<Parameters<Api["datasets"]["get"]>[0]>().toEqualTypeOf<
      paths["/api/v1/datasets/{dataset_id}"]["get"]["parameters"]["path"]["dataset_id"]
    >();
  });

  it("reject paths, parameters and bodies the schema does not have", () => {
    const client = new TypedClient(new Http({ fetch: vi.fn<typeof fetch>() }));
    // Type-level only: none of these calls runs.
    const never = (): void => {
      // @ts-expect-error no such path in the OpenAPI document
      void client.GET("/no-such-route");
      // @ts-expect-error the path parameter is required
      void client.GET("/datasets/{dataset_id}");
      // @ts-expect-error the path parameter is an integer
      void client.GET("/datasets/{dataset_id}", { path: { dataset_id: "1" } });
      // @ts-expect-error GET /datasets takes no body, POST /datasets needs one
      void client.POST("/datasets", {});
      // @ts-expect-error the body is checked against DatasetCreate
      void client.POST("/datasets", { body: { title: "x" } });
      // @ts-expect-error unknown query parameter
      void client.GET("/runs", { query: { colour: "red" } });
    };
    expect(typeof never).toBe("function");
  });
});

describe("every client call is an operation of openapi.json", () => {
  it("sends only documented method + path pairs", async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => new Response("{}", { status: 200 }));
    const api = createApi(new Http({ fetch, cookies: () => "attrivue_csrf=t" }));
    const image = new File([new Uint8Array([1])], "s.nii.gz");
    const calls: [string, () => Promise<unknown>][] = [
      ["login", () => api.auth.login("a", "b")],
      ["logout", () => api.auth.logout()],
      ["readMe", () => api.auth.me()],
      ["listTokens", () => api.auth.tokens()],
      ["createToken", () => api.auth.createToken({ name: "ci" })],
      ["revokeToken", () => api.auth.revokeToken(3)],
      ["changePassword", () => api.auth.changePassword({ current_password: "a", new_password: "long enough pw" })],
      ["createProject", () => api.projects.create({ name: "p" })],
      ["listMembers", () => api.projects.members(1)],
      ["setMember", () => api.projects.setMember(1, { username: "u", role: "clinician" })],
      ["removeMember", () => api.projects.removeMember(1, 2)],
      ["listUsers", () => api.users.list()],
      ["createUser", () => api.users.create({ username: "someone", password: "long enough pw", role: "researcher" })],
      ["listProjects", () => api.projects.list()],
      ["getProject", () => api.projects.get(1)],
      ["updateProject", () => api.projects.update(1, { review_blinded: false })],
      ["listDatasets", () => api.datasets.list(2)],
      ["getDataset", () => api.datasets.get(1)],
      ["createDataset", () => api.datasets.create({ name: "d", project_id: 1 })],
      ["listSubjects", () => api.datasets.subjects(1)],
      ["uploadSubject", () => api.datasets.uploadSubject(1, { subject_key: "s", label: 1, image })],
      ["getSubject", () => api.subjects.get(1)],
      ["updateSubject", () => api.subjects.update(1, { split: "val", label: 1 })],
      ["downloadSubjectChannel", () => api.subjects.channel(1, 1)],
      ["createUpload", () => api.uploads.create({ project_id: 1, filename: "a/b.nii.gz", size: 3 })],
      ["getUpload", () => api.uploads.get("u1")],
      ["listUploads", () => api.uploads.list(3)],
      ["deleteUpload", () => api.uploads.remove("u1")],
      ["importSubjects", () => api.imports.fromUploads(1, ["u1", "u2"])],
      ["listRuns", () => api.runs.list({ dataset_id: 1 })],
      ["getRun", () => api.runs.get(1)],
      ["createRun", () => api.runs.create({ dataset_id: 1, name: "r" })],
      [
        "importModel",
        () => api.runs.importModel({ dataset_id: 1, name: "m", grid: [8, 8, 8], model: new File([new Uint8Array([1])], "m.ts") }),
      ],
      ["getRunMetrics", () => api.runs.metrics(1)],
      ["cancelRun", () => api.runs.cancel(1)],
      ["retryRun", () => api.runs.retry(1)],
      ["compareRuns", () => api.runs.compare([1, 2])],
      ["getRunCorrections", () => api.runs.corrections(1)],
      ["createRunFromReviews", () => api.runs.fromReviews(1, { name: "r" })],
      ["listCorrectedTargets", () => api.runs.correctedTargets(1)],
      ["listEpochMaps", () => api.runs.epochMaps(1, 2)],
      ["getRunPredictions", () => api.runs.predictions(1)],
      ["getRunSiteMetrics", () => api.runs.siteMetrics(1)],
      ["listPresets", () => api.presets.list()],
      ["getJob", () => api.jobs.get(1)],
      ["listAttributions", () => api.attributions.list({ subject_id: 1 })],
      ["getAttribution", () => api.attributions.get(1)],
      ["createAttribution", () => api.attributions.create({ run_id: 1, subject_id: 1 })],
      ["createAttributionBatch", () => api.attributions.createBatch({ run_id: 1, split: "test" })],
      ["downloadAttributionChannelMap", () => api.attributions.channelMap(1, 0)],
      ["listReviews", () => api.reviews.list({ run_id: 1 })],
      ["createReview", () => api.reviews.create({ item: "a1b2", rating: 3, trust: true })],
      ["reviewQueue", () => api.reviews.queue(1, true)],
      ["getReviewItem", () => api.reviews.item("a1b2", true)],
      ["reviewAgreement", () => api.reviews.agreement(1)],
      ["putReviewCorrection", () => api.reviews.putCorrection(1, new Blob([new Uint8Array([1])]))],
      ["createEvidenceCheck", () => api.evidence.create(1, {})],
      ["listMapEvidence", () => api.evidence.forMap(1)],
      ["listRunEvidence", () => api.evidence.forRun(1)],
      ["createRunEvidence", () => api.evidence.createForRun(1, { split: "test" })],
    ];
    // A new client method must be listed above, so that it is checked too.
    const leaves = Object.entries(api)
      .filter(([key]) => key !== "http" && key !== "client")
      .flatMap(([, group]) => Object.values(group as Record<string, unknown>));
    expect(leaves.filter((f) => typeof f === "function")).toHaveLength(calls.length);

    for (const [operationId, call] of calls) {
      fetch.mockClear();
      await call();
      const [url, init] = fetch.mock.calls[0] as [string, RequestInit];
      expect(operationFor(init.method ?? "GET", url), `${init.method} ${url}`).toBe(operationId);
    }
  });

  it("answers the channel downloads with the volume's bytes", async () => {
    const fetch = vi.fn<typeof globalThis.fetch>(async () => new Response(new Uint8Array([31, 139, 8])));
    const api = createApi(new Http({ fetch }));
    const blob = await api.attributions.channelMap(9, 1);
    expect(blob).toBeInstanceOf(Blob);
    expect([...new Uint8Array(await blob.arrayBuffer())]).toEqual([31, 139, 8]);
    expect(fetch.mock.calls[0][0]).toBe("/api/v1/attributions/9/channels/1.nii.gz");
  });

  it("builds the review item's map URL from its documented path", () => {
    expect(operationFor("GET", reviewItemDisplayUrl("a1b2"))).toBe("downloadReviewItemDisplayMap");
  });

  it("builds the epoch map URL from its documented path", () => {
    expect(operationFor("GET", epochMapUrl(2, 3, 4))).toBe("getEpochMap");
  });

  it("sends upload chunks to appendUpload", () => {
    expect(operationFor("PUT", chunkUrl("0f3a-b"))).toBe("appendUpload");
  });

  it("builds the viewer's file URLs from documented paths", () => {
    const urls = [
      subjectImageUrl(4),
      subjectMaskDrawingUrl(4),
      attributionMapUrl(9),
      attributionDisplayUrl(9),
      runEventsUrl(2),
      subjectChannelUrl(4, 1),
      attributionChannelMapUrl(9, 0),
    ];
    expect(urls).toEqual([
      "/api/v1/subjects/4/image.nii.gz",
      "/api/v1/subjects/4/mask.nii.gz?drawing=true",
      "/api/v1/attributions/9/map.nii.gz",
      "/api/v1/attributions/9/display.nii.gz",
      "/api/v1/runs/2/events",
      "/api/v1/subjects/4/channels/1.nii.gz",
      "/api/v1/attributions/9/channels/0.nii.gz",
    ]);
    expect(urls.map((u) => operationFor("GET", u))).toEqual([
      "downloadSubjectImage",
      "downloadSubjectMask",
      "downloadAttributionMap",
      "downloadAttributionDisplayMap",
      "streamRunEvents",
      "downloadSubjectChannel",
      "downloadAttributionChannelMap",
    ]);
  });
});

describe("helpers", () => {
  it("fills and encodes path parameters, and refuses missing ones", () => {
    expect(fillPath("/datasets/{dataset_id}/subjects", { dataset_id: 5 })).toBe("/datasets/5/subjects");
    expect(fillPath("/x/{name}", { name: "a/b c" })).toBe("/x/a%2Fb%20c");
    expect(() => fillPath("/datasets/{dataset_id}", {})).toThrow("missing path parameter dataset_id");
    expect(() => fillPath("/datasets/{dataset_id}", { dataset_id: Number.NaN })).toThrow();
    expect(apiUrl("/datasets", { query: { project_id: 3 } })).toBe("/api/v1/datasets?project_id=3");
  });

  it("builds multipart bodies, leaving out empty fields", () => {
    const image = new File([new Uint8Array([1])], "s1.nii.gz");
    const form = toFormData({ subject_key: "s1", label: 0, target: null, mask: undefined, image });
    expect([...form.keys()].sort()).toEqual(["image", "label", "subject_key"]);
    expect(form.get("label")).toBe("0");
    expect((form.get("image") as File).name).toBe("s1.nii.gz");
  });

  it("parses id lists of the compare views", () => {
    expect(parseIdList("3, 5,x,3,,8")).toEqual([3, 5, 8]);
    expect(parseIdList(null)).toEqual([]);
  });

  it("parses route ids", () => {
    expect(parseId("12")).toBe(12);
    expect(() => parseId("abc", "subject id")).toThrow('Not a valid subject id: "abc"');
    expect(() => parseId(undefined)).toThrow();
  });

  it("reads map statistics from the open stats object", () => {
    expect(readStats({ min: -1, max: 2, mean_abs: 0.1 })).toEqual({
      min: -1,
      max: 2,
      positive_mass: null,
      negative_mass: null,
      mean_abs: 0.1,
    });
    expect(readStats({})).toBeNull();
    expect(readStats({ min: "x", max: 1 })).toBeNull();
  });
});

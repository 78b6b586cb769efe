import { describe, expect, it, vi } from "vitest";
import { createApi } from "./client";
import { ApiError, CSRF_HEADER, Http, buildUrl, formatDetail, readCookie } from "./http";

function jsonResponse(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json" },
  });
}

function setup(responses: Response[], cookies = "theme=dark; attrivue_csrf=tok%2B123; other=1") {
  const fetch = vi.fn<typeof globalThis.fetch>();
  for (const r of responses) fetch.mockResolvedValueOnce(r);
  const onUnauthorized = vi.fn();
  const http = new Http({ fetch, cookies: () => cookies, onUnauthorized });
  return { fetch, http, api: createApi(http), onUnauthorized };
}

function sent(fetch: ReturnType<typeof vi.fn>, call = 0): { url: string; init: RequestInit; headers: Headers } {
  const [url, init] = fetch.mock.calls[call] as [string, RequestInit];
  return { url, init, headers: new Headers(init.headers) };
}

describe("CSRF header", () => {
  it("is added to POST requests from the csrf cookie", async () => {
    const { fetch, api } = setup([jsonResponse(201, { id: 1, name: "d" })]);
    await api.datasets.create({ name: "d", description: "" });
    const { url, init, headers } = sent(fetch);
    expect(url).toBe("/api/v1/datasets");
    expect(init.method).toBe("POST");
    expect(headers.get(CSRF_HEADER)).toBe("tok+123");
    expect(headers.get("Content-Type")).toBe("application/json");
    expect(JSON.parse(init.body as string)).toEqual({ name: "d", description: "" });
    expect(init.credentials).toBe("same-origin");
  });

  it("is not added to GET requests", async () => {
    const { fetch, api } = setup([jsonResponse(200, { data: [], count: 0 })]);
    await api.datasets.list();
    const { init, headers } = sent(fetch);
    expect(init.method).toBe("GET");
    expect(headers.has(CSRF_HEADER)).toBe(false);
  });

  it("is left out when there is no csrf cookie yet (before login)", async () => {
    const user = { id: 1, username: "a", role: "admin" };
    const { fetch, api } = setup(
      [jsonResponse(200, { access_token: "t", token_type: "bearer", user })],
      "",
    );
    const response = await api.auth.login("a", "b");
    expect(response.user).toEqual(user);
    expect(sent(fetch).headers.has(CSRF_HEADER)).toBe(false);
  });

  it("is sent with multipart uploads, which keep the browser's content type", async () => {
    const { fetch, api } = setup([jsonResponse(201, { id: 3 })]);
    const image = new File([new Uint8Array([1, 2])], "s1.nii.gz");
    await api.datasets.uploadSubject(5, { subject_key: "s1", label: 1, split: "test", image });
    const { url, init, headers } = sent(fetch);
    expect(url).toBe("/api/v1/datasets/5/subjects");
    expect(headers.get(CSRF_HEADER)).toBe("tok+123");
    expect(headers.has("Content-Type")).toBe(false);
    const form = init.body as FormData;
    expect(form.get("subject_key")).toBe("s1");
    expect(form.get("label")).toBe("1");
    expect(form.get("split")).toBe("test");
    expect((form.get("image") as File).name).toBe("s1.nii.gz");
    expect(form.has("mask")).toBe(false);
  });
});

describe("errors", () => {
  it("throws an ApiError with the string detail", async () => {
    const { api } = setup([jsonResponse(400, { detail: "image is not a NIfTI file" })]);
    const error = await api.datasets.get(1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(400);
    expect((error as ApiError).message).toBe("image is not a NIfTI file");
    expect((error as ApiError).detail).toBe("image is not a NIfTI file");
  });

  it("joins validation issues with their field names", async () => {
    const detail = [
      { loc: ["body", "config", "epochs"], msg: "Input should be greater than 0", type: "x" },
      { loc: ["body", "name"], msg: "Field required", type: "missing" },
    ];
    const { api } = setup([jsonResponse(422, { detail })]);
    const error = (await api.runs
      .create({ dataset_id: 1, name: "", config: { epochs: 0, batch_size: 1, learning_rate: 0.1, seed: 0 } })
      .catch((e: unknown) => e)) as ApiError;
    expect(error.status).toBe(422);
    expect(error.message).toBe("config.epochs: Input should be greater than 0; name: Field required");
    expect(error.detail).toEqual(detail);
  });

  it("falls back to the status line when the body is not JSON", async () => {
    const { api } = setup([new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" })]);
    const error = (await api.runs.list().catch((e: unknown) => e)) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    expect(error.message).toBe("502 Bad Gateway");
    expect(error.detail).toBeNull();
  });

  it("calls onUnauthorized on 401", async () => {
    const { api, onUnauthorized } = setup([jsonResponse(401, { detail: "Not authenticated" })]);
    await expect(api.auth.me()).rejects.toThrow("Not authenticated");
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it("numbers requests in the order they are sent and names the one refused", async () => {
    const { api, http, onUnauthorized } = setup([
      jsonResponse(200, { id: 1, username: "a", role: "user" }),
      jsonResponse(401, { detail: "Not authenticated" }),
    ]);
    expect(http.issued).toBe(0);
    await api.auth.me();
    await api.auth.me().catch(() => undefined);
    expect(http.issued).toBe(2);
    expect(onUnauthorized).toHaveBeenCalledWith(2);
  });
});

describe("helpers", () => {
  it("reads one cookie", () => {
    expect(readCookie("attrivue_csrf", "a=1; attrivue_csrf=xyz")).toBe("xyz");
    expect(readCookie("attrivue_csrf", "attrivue_csrf_old=1")).toBeNull();
    expect(readCookie("x", "")).toBeNull();
  });

  it("formats details", () => {
    expect(formatDetail("plain")).toBe("plain");
    expect(formatDetail([{ msg: "no location" }])).toBe("no location");
    expect(formatDetail({ weird: true })).toBeNull();
  });

  it("builds query strings without empty values", () => {
    expect(buildUrl("/attributions", { subject_id: 3, run_id: undefined })).toBe(
      "/api/v1/attributions?subject_id=3",
    );
    expect(buildUrl("/runs")).toBe("/api/v1/runs");
  });

  it("repeats the key of an array parameter", () => {
    expect(buildUrl("/runs/compare", { ids: [3, 5], metrics: null })).toBe("/api/v1/runs/compare?ids=3&ids=5");
  });
});

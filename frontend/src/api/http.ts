// A small fetch wrapper: same-origin cookies, the CSRF header on writes, typed errors.

export const API_PREFIX = "/api/v1";
export const CSRF_COOKIE = "attrivue_csrf";
export const CSRF_HEADER = "X-CSRF-Token";

const WRITE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** A validation item as FastAPI reports it. */
export interface ValidationIssue {
  loc?: (string | number)[];
  msg: string;
  type?: string;
}

export type ErrorDetail = string | ValidationIssue[];

/** A non-2xx answer from the API, with the server's message. */
export class ApiError extends Error {
  readonly status: number;
  readonly detail: ErrorDetail | null;
  /** The whole JSON body of the answer (an import's `errors` list, say), or null. */
  readonly body: unknown;

  constructor(status: number, message: string, detail: ErrorDetail | null = null, body: unknown = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

/** Reads one cookie from a `document.cookie`-style string. */
export function readCookie(name: string, cookies: string): string | null {
  for (const part of cookies.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) {
      return decodeURIComponent(part.slice(eq + 1).trim());
    }
  }
  return null;
}

/** Turns a `{detail}` body into one readable sentence. */
export function formatDetail(detail: unknown): string | null {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    const parts = detail
      .filter((d): d is ValidationIssue => typeof d === "object" && d !== null && "msg" in d)
      .map((d) => {
        const where = (d.loc ?? []).filter((p) => p !== "body" && p !== "query" && p !== "path");
        return where.length > 0 ? `${where.join(".")}: ${d.msg}` : d.msg;
      });
    return parts.length > 0 ? parts.join("; ") : null;
  }
  return null;
}

/** Builds an ApiError from a failed response, whatever its body. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  let detail: ErrorDetail | null = null;
  let message: string | null = null;
  let body: unknown = null;
  try {
    body = await response.json();
    if (body && typeof body === "object" && "detail" in body) {
      const raw = (body as { detail: unknown }).detail;
      message = formatDetail(raw);
      if (typeof raw === "string" || Array.isArray(raw)) detail = raw as ErrorDetail;
    }
  } catch {
    // Not JSON (a proxy error page, say): fall back to the status line.
  }
  const fallback = `${response.status} ${response.statusText || "request failed"}`.trim();
  return new ApiError(response.status, message ?? fallback, detail, body);
}

export interface HttpOptions {
  fetch?: typeof fetch;
  /** Returns the current `document.cookie` string. */
  cookies?: () => string;
  /** Called on any 401, e.g. to send the user to /login, with the number of the refused request
   * (see `Http.issued`): a 401 to a request sent before a login says nothing about the new session. */
  onUnauthorized?: (request: number) => void;
}

type QueryValue = string | number | boolean | undefined | null;

/** Query parameters; undefined, null and "" are left out; an array repeats its key (`ids=1&ids=2`). */
export type Query = Record<string, QueryValue | readonly QueryValue[]>;

export interface RequestOptions {
  method?: string;
  /** Sent as JSON unless it is FormData. */
  body?: unknown;
  query?: Query;
  signal?: AbortSignal;
  /** "blob": the answer's bytes (a NIfTI volume) instead of parsed JSON. */
  as?: "json" | "blob";
}

export function buildUrl(path: string, query?: Query): string {
  const url = `${API_PREFIX}${path}`;
  if (!query) return url;
  const params = new URLSearchParams();
  for (const [key, values] of Object.entries(query)) {
    for (const value of Array.isArray(values) ? values : [values]) {
      if (value !== undefined && value !== null && value !== "") params.append(key, String(value));
    }
  }
  const qs = params.toString();
  return qs ? `${url}?${qs}` : url;
}

export class Http {
  private readonly fetchImpl: typeof fetch;
  private readonly cookies: () => string;
  onUnauthorized: ((request: number) => void) | undefined;
  private sent = 0;

  constructor(options: HttpOptions = {}) {
    this.fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.cookies = options.cookies ?? (() => (typeof document === "undefined" ? "" : document.cookie));
    this.onUnauthorized = options.onUnauthorized;
  }

  /** How many requests have been sent so far; each request is numbered in order from 1. */
  get issued(): number {
    return this.sent;
  }

  async request<T>(path: string, options: RequestOptions = {}): Promise<T> {
    const requestNumber = ++this.sent;
    const method = (options.method ?? "GET").toUpperCase();
    const headers = new Headers({ Accept: options.as === "blob" ? "*/*" : "application/json" });
    let body: BodyInit | undefined;
    if (options.body instanceof FormData) {
      body = options.body; // the browser sets the multipart boundary
    } else if (options.body instanceof Blob) {
      headers.set("Content-Type", "application/octet-stream");
      body = options.body;
    } else if (options.body !== undefined) {
      headers.set("Content-Type", "application/json");
      body = JSON.stringify(options.body);
    }
    if (WRITE_METHODS.has(method)) {
      const token = readCookie(CSRF_COOKIE, this.cookies());
      if (token) headers.set(CSRF_HEADER, token);
    }
    const response = await this.fetchImpl(buildUrl(path, options.query), {
      method,
      headers,
      body,
      credentials: "same-origin",
      signal: options.signal,
    });
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized?.(requestNumber);
      throw await errorFromResponse(response);
    }
    if (response.status === 204) return undefined as T;
    if (options.as === "blob") return (await response.blob()) as T;
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
    return this.request<T>(path, { query, signal });
  }

  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>(path, { method: "POST", body });
  }
}

/** A readable message for anything thrown. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

// Typed calls keyed by the OpenAPI document's paths. Every type here is derived from
// schema.d.ts, which `make openapi` generates from the backend: a path, parameter or body the
// backend no longer has is a type error in `npm run build`. Requests go through Http (CSRF
// header on writes, ApiError with the server's detail, 401 handling).
import { API_PREFIX, type Http, type Query, buildUrl } from "./http";
import type { paths } from "./schema";

type Prefix = typeof API_PREFIX;

/** The API's paths relative to /api/v1, exactly as the OpenAPI document spells them. */
export type ApiPaths = {
  [P in keyof paths as P extends `${Prefix}${infer Rest}` ? Rest : never]: paths[P];
};
export type ApiPath = keyof ApiPaths;
export type HttpMethod = "get" | "put" | "post" | "patch" | "delete";

/** The paths that have an operation for `M`. */
export type PathsWith<M extends HttpMethod> = {
  [P in ApiPath]: undefined extends ApiPaths[P][M] ? never : P;
}[ApiPath];

/** The generated operation behind `M path`. */
export type Operation<P extends ApiPath, M extends HttpMethod> = NonNullable<ApiPaths[P][M]>;

type ParamsOf<O> = O extends { parameters: infer X } ? X : never;

export type PathParamsOf<O> = ParamsOf<O> extends { path: infer X } ? X : never;
export type QueryOf<O> = ParamsOf<O> extends { query?: infer Q } ? NonNullable<Q> : never;

type ContentOf<O> = O extends { requestBody: { content: infer C } } ? C : never;

/** The request body: the JSON schema's type, FormData for a multipart operation, a Blob for bytes. */
export type BodyOf<O> =
  [ContentOf<O>] extends [never]
    ? never
    : ContentOf<O> extends { "application/json": infer B }
      ? B
      : ContentOf<O> extends { "multipart/form-data": unknown }
        ? FormData
        : ContentOf<O> extends { "application/octet-stream": unknown }
          ? Blob
          : never;

/** The fields of a multipart request body, as the schema declares them. */
export type FormFieldsOf<O> = ContentOf<O> extends { "multipart/form-data": infer F } ? F : never;

type SuccessStatus = 200 | 201 | 202 | 204;

/** The JSON answer of the operation's success status (undefined when it has no body). */
export type ResponseOf<O> = O extends { responses: infer R }
  ? {
      [S in keyof R & SuccessStatus]: R[S] extends { content: { "application/json": infer B } }
        ? B
        : R[S] extends { content?: never }
          ? undefined
          : unknown;
    }[keyof R & SuccessStatus]
  : never;

type PathPart<O> = [PathParamsOf<O>] extends [never] ? { path?: undefined } : { path: PathParamsOf<O> };
type QueryPart<O> =
  ParamsOf<O> extends { query: infer Q }
    ? { query: Q }
    : [QueryOf<O>] extends [never]
      ? { query?: undefined }
      : { query?: QueryOf<O> };
type BodyPart<O> = [BodyOf<O>] extends [never] ? { body?: undefined } : { body: BodyOf<O> };

/** What one call needs: path parameters, query and body where the operation has them. */
export type CallInit<O> = PathPart<O> & QueryPart<O> & BodyPart<O> & { signal?: AbortSignal };

/** The init argument is optional when nothing in it is required. */
type CallArgs<O> = object extends CallInit<O> ? [init?: CallInit<O>] : [init: CallInit<O>];

/** Replaces each `{name}` of a path template by its encoded parameter. */
export function fillPath(template: string, params?: Record<string, unknown>): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => {
    const value = params?.[name];
    if (value === undefined || value === null || value === "" || Number.isNaN(value)) {
      throw new Error(`missing path parameter ${name} for ${template}`);
    }
    return encodeURIComponent(String(value));
  });
}

interface AnyInit {
  path?: Record<string, unknown>;
  query?: Record<string, unknown>;
  body?: unknown;
  signal?: AbortSignal;
}

/** The full URL of a GET operation, for what the browser fetches itself (NIfTI volumes). */
export function apiUrl<P extends PathsWith<"get">>(path: P, ...[init]: CallArgs<Operation<P, "get">>): string {
  const { path: params, query } = (init ?? {}) as AnyInit;
  return buildUrl(fillPath(path, params), query as Query | undefined);
}

/** `client.GET("/datasets/{dataset_id}", { path: { dataset_id: 1 } })` and so on. */
export class TypedClient {
  constructor(readonly http: Http) {}

  GET<P extends PathsWith<"get">>(path: P, ...[init]: CallArgs<Operation<P, "get">>) {
    return this.call<ResponseOf<Operation<P, "get">>>("GET", path, init);
  }

  /** A GET whose answer is bytes (a NIfTI volume), as a Blob. */
  GETBlob<P extends PathsWith<"get">>(path: P, ...[init]: CallArgs<Operation<P, "get">>): Promise<Blob> {
    return this.call<Blob>("GET", path, init, "blob");
  }

  POST<P extends PathsWith<"post">>(path: P, ...[init]: CallArgs<Operation<P, "post">>) {
    return this.call<ResponseOf<Operation<P, "post">>>("POST", path, init);
  }

  PUT<P extends PathsWith<"put">>(path: P, ...[init]: CallArgs<Operation<P, "put">>) {
    return this.call<ResponseOf<Operation<P, "put">>>("PUT", path, init);
  }

  PATCH<P extends PathsWith<"patch">>(path: P, ...[init]: CallArgs<Operation<P, "patch">>) {
    return this.call<ResponseOf<Operation<P, "patch">>>("PATCH", path, init);
  }

  DELETE<P extends PathsWith<"delete">>(path: P, ...[init]: CallArgs<Operation<P, "delete">>) {
    return this.call<ResponseOf<Operation<P, "delete">>>("DELETE", path, init);
  }

  private call<T>(method: string, template: string, init: unknown, as?: "blob"): Promise<T> {
    const { path, query, body, signal } = (init ?? {}) as AnyInit;
    return this.http.request<T>(fillPath(template, path), {
      method,
      query: query as Query | undefined,
      body,
      signal,
      as,
    });
  }
}

/** Multipart body from the schema's fields: files keep their names, null/undefined are left out. */
export function toFormData(fields: Record<string, string | number | boolean | Blob | null | undefined>): FormData {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value === undefined || value === null) continue;
    if (value instanceof Blob) form.set(name, value, value instanceof File ? value.name : name);
    else form.set(name, String(value));
  }
  return form;
}

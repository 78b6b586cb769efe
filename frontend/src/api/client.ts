// Typed calls for each API resource; one shared Http instance for the app.
import { Http } from "./http";
import type {
  Attribution,
  AttributionCreate,
  Dataset,
  DatasetCreate,
  Job,
  ListResponse,
  LoginResponse,
  Run,
  RunCreate,
  Subject,
  User,
} from "./types";

type Id = number | string;

export interface SubjectUpload {
  subject_key: string;
  label: 0 | 1;
  split: string;
  image: File;
  mask?: File | null;
}

export function createApi(http: Http) {
  return {
    http,
    auth: {
      login: (username: string, password: string) =>
        http.post<LoginResponse>("/auth/login", { username, password }),
      logout: () => http.post<void>("/auth/logout"),
      me: () => http.get<User>("/auth/me"),
    },
    datasets: {
      list: () => http.get<ListResponse<Dataset>>("/datasets"),
      get: (id: Id) => http.get<Dataset>(`/datasets/${id}`),
      create: (body: DatasetCreate) => http.post<Dataset>("/datasets", body),
      subjects: (id: Id) => http.get<ListResponse<Subject>>(`/datasets/${id}/subjects`),
      uploadSubject: (id: Id, upload: SubjectUpload) => {
        const form = new FormData();
        form.set("subject_key", upload.subject_key);
        form.set("label", String(upload.label));
        form.set("split", upload.split);
        form.set("image", upload.image, upload.image.name);
        if (upload.mask) form.set("mask", upload.mask, upload.mask.name);
        return http.post<Subject>(`/datasets/${id}/subjects`, form);
      },
    },
    subjects: {
      get: (id: Id) => http.get<Subject>(`/subjects/${id}`),
    },
    runs: {
      list: () => http.get<ListResponse<Run>>("/runs"),
      get: (id: Id) => http.get<Run>(`/runs/${id}`),
      create: (body: RunCreate) => http.post<Run>("/runs", body),
    },
    jobs: {
      get: (id: Id) => http.get<Job>(`/jobs/${id}`),
    },
    attributions: {
      list: (filter: { subject_id?: Id; run_id?: Id } = {}) =>
        http.get<ListResponse<Attribution>>("/attributions", filter),
      get: (id: Id) => http.get<Attribution>(`/attributions/${id}`),
      create: (body: AttributionCreate) => http.post<Attribution>("/attributions", body),
    },
  };
}

export type Api = ReturnType<typeof createApi>;

/** The app's client: same-origin, cookie session, CSRF header on writes. */
export const api = createApi(new Http());

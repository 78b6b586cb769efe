// Calls for each API resource, one shared Http instance for the app. Paths, parameters, bodies
// and answers are all typed from the generated OpenAPI schema (see openapi.ts).
import { Http } from "./http";
import { type BodyOf, type FormFieldsOf, type Operation, type QueryOf, TypedClient, toFormData } from "./openapi";
import { type ModelImport, importFormData } from "../runs/modelImport";

type UploadOperation = Operation<"/datasets/{dataset_id}/subjects", "post">;

/** The upload form's fields as the schema declares them, with real files for the file fields. */
export type SubjectUpload = Omit<FormFieldsOf<UploadOperation>, "image" | "mask" | "brain_mask"> & {
  image: File;
  mask?: File | null;
  /** Without it, the server computes a brain mask from the image. */
  brain_mask?: File | null;
};

export type AttributionFilter = QueryOf<Operation<"/attributions", "get">>;
export type ReviewFilter = QueryOf<Operation<"/reviews", "get">>;
export type RunFilter = QueryOf<Operation<"/runs", "get">>;

export function createApi(http: Http) {
  const client = new TypedClient(http);
  return {
    http,
    client,
    auth: {
      login: (username: string, password: string) =>
        client.POST("/auth/login", { body: { username, password } }),
      logout: () => client.POST("/auth/logout"),
      me: () => client.GET("/auth/me"),
      /** The user's personal access tokens (for scripts); the secret is shown once, on creation. */
      tokens: () => client.GET("/auth/tokens"),
      createToken: (body: BodyOf<Operation<"/auth/tokens", "post">>) => client.POST("/auth/tokens", { body }),
      revokeToken: (token_id: number) => client.DELETE("/auth/tokens/{token_id}", { path: { token_id } }),
      /** Every session and token of the user is revoked; the answer's cookies keep this browser logged in. */
      changePassword: (body: BodyOf<Operation<"/auth/password", "post">>) => client.POST("/auth/password", { body }),
    },
    projects: {
      list: () => client.GET("/projects"),
      get: (project_id: number) => client.GET("/projects/{project_id}", { path: { project_id } }),
      create: (body: BodyOf<Operation<"/projects", "post">>) => client.POST("/projects", { body }),
      members: (project_id: number) =>
        client.GET("/projects/{project_id}/members", { path: { project_id } }),
      /** Add a member or change their role (project admins). */
      setMember: (project_id: number, body: BodyOf<Operation<"/projects/{project_id}/members", "put">>) =>
        client.PUT("/projects/{project_id}/members", { path: { project_id }, body }),
      removeMember: (project_id: number, user_id: number) =>
        client.DELETE("/projects/{project_id}/members/{user_id}", { path: { project_id, user_id } }),
      /** Project admins: the description, or blind / open the review round. */
      update: (project_id: number, body: BodyOf<Operation<"/projects/{project_id}", "patch">>) =>
        client.PATCH("/projects/{project_id}", { path: { project_id }, body }),
    },
    users: {
      /** Site admins only. */
      list: () => client.GET("/users"),
      create: (body: BodyOf<Operation<"/users", "post">>) => client.POST("/users", { body }),
    },
    datasets: {
      /** The datasets of the user's projects, or of one project. */
      list: (projectId?: number | null) =>
        client.GET("/datasets", { query: { project_id: projectId ?? undefined } }),
      get: (dataset_id: number) => client.GET("/datasets/{dataset_id}", { path: { dataset_id } }),
      create: (body: BodyOf<Operation<"/datasets", "post">>) =>
        client.POST("/datasets", { body }),
      subjects: (dataset_id: number) =>
        client.GET("/datasets/{dataset_id}/subjects", { path: { dataset_id } }),
      uploadSubject: (dataset_id: number, upload: SubjectUpload) =>
        client.POST("/datasets/{dataset_id}/subjects", {
          path: { dataset_id },
          body: toFormData(upload),
        }),
    },
    subjects: {
      get: (subject_id: number) => client.GET("/subjects/{subject_id}", { path: { subject_id } }),
      /** Change label, split or site (admins and researchers). */
      update: (subject_id: number, body: BodyOf<Operation<"/subjects/{subject_id}", "patch">>) =>
        client.PATCH("/subjects/{subject_id}", { path: { subject_id }, body }),
      /** Multi-modal subjects: the NIfTI bytes of channel `index` (the subject's `channels`; 0 is the image). */
      channel: (subject_id: number, index: number) =>
        client.GETBlob("/subjects/{subject_id}/channels/{index}.nii.gz", { path: { subject_id, index } }),
    },
    uploads: {
      /** Open a chunked upload; its bytes go with PUT /uploads/{id} (upload/transfer.ts, for progress). */
      create: (body: BodyOf<Operation<"/uploads", "post">>) => client.POST("/uploads", { body }),
      get: (upload_id: string) => client.GET("/uploads/{upload_id}", { path: { upload_id } }),
      /** The user's unfinished or unused uploads (to resume or discard them). */
      list: (projectId?: number | null) =>
        client.GET("/uploads", { query: { project_id: projectId ?? undefined } }),
      /** Abandon an upload: the server deletes its bytes. */
      remove: (upload_id: string) => client.DELETE("/uploads/{upload_id}", { path: { upload_id } }),
    },
    imports: {
      /** Import the subjects of completed uploads (files, a manifest or participants.tsv, or a zip). */
      /** skipInvalid: store the rows that pass and report the others (a second, partial try). */
      fromUploads: (dataset_id: number, upload_ids: string[], skipInvalid = false) =>
        client.POST("/datasets/{dataset_id}/imports", {
          path: { dataset_id },
          body: skipInvalid ? { upload_ids, skip_invalid: true } : { upload_ids },
        }),
    },
    runs: {
      list: (query: RunFilter = {}) => client.GET("/runs", { query }),
      get: (run_id: number) => client.GET("/runs/{run_id}", { path: { run_id } }),
      create: (body: BodyOf<Operation<"/runs", "post">>) =>
        client.POST("/runs", { body }),
      metrics: (run_id: number) => client.GET("/runs/{run_id}/metrics", { path: { run_id } }),
      cancel: (run_id: number) => client.POST("/runs/{run_id}/cancel", { path: { run_id } }),
      retry: (run_id: number) => client.POST("/runs/{run_id}/retry", { path: { run_id } }),
      compare: (ids: number[]) => client.GET("/runs/compare", { query: { ids } }),
      /** Import a TorchScript model or a zipped MONAI bundle as a run; the answer waits for a
       * worker's forward pass (422 with the reason when the model is refused). */
      importModel: (upload: ModelImport) =>
        client.POST("/runs/import", { body: importFormData(upload) }),
      /** Reviews with a drawn correction on the run's maps, by subject. */
      corrections: (run_id: number) => client.GET("/runs/{run_id}/corrections", { path: { run_id } }),
      /** A new run trained on the targets merged with the corrections of this run's reviews. */
      fromReviews: (run_id: number, body: BodyOf<Operation<"/runs/{run_id}/from-reviews", "post">>) =>
        client.POST("/runs/{run_id}/from-reviews", { path: { run_id }, body }),
      correctedTargets: (run_id: number) =>
        client.GET("/runs/{run_id}/corrected-targets", { path: { run_id } }),
      epochMaps: (run_id: number, subject_id?: number) =>
        client.GET("/runs/{run_id}/epoch-maps", { path: { run_id }, query: { subject_id } }),
      /** The best weights' prediction per subject (classification runs, once succeeded). */
      predictions: (run_id: number) => client.GET("/runs/{run_id}/predictions", { path: { run_id } }),
      /** AUROC, accuracy and counts per split and site, from the predictions. */
      siteMetrics: (run_id: number) => client.GET("/runs/{run_id}/site-metrics", { path: { run_id } }),
    },
    presets: {
      /** The named starting configurations of the launch form, with every value they set. */
      list: () => client.GET("/presets"),
    },
    jobs: {
      get: (job_id: number) => client.GET("/jobs/{job_id}", { path: { job_id } }),
    },
    attributions: {
      list: (query: AttributionFilter = {}) => client.GET("/attributions", { query }),
      get: (attribution_id: number) =>
        client.GET("/attributions/{attribution_id}", { path: { attribution_id } }),
      create: (body: BodyOf<Operation<"/attributions", "post">>) =>
        client.POST("/attributions", { body }),
      /** Maps for chosen subjects or a whole split of the run's dataset, one job each. */
      createBatch: (body: BodyOf<Operation<"/attributions/batch", "post">>) =>
        client.POST("/attributions/batch", { body }),
      /** Multi-modal subjects: the NIfTI bytes of the map of input channel `index` (the maps sum to
       * the map; 404 for a channel the subject lacks, 409 for a map stored without them). */
      channelMap: (attribution_id: number, index: number) =>
        client.GETBlob("/attributions/{attribution_id}/channels/{index}.nii.gz", { path: { attribution_id, index } }),
    },
    evidence: {
      /** Sanity checks and faithfulness of a computed map (one job). */
      create: (attribution_id: number, body: BodyOf<Operation<"/attributions/{attribution_id}/evidence", "post">>) =>
        client.POST("/attributions/{attribution_id}/evidence", { path: { attribution_id }, body }),
      /** The map's checks, newest first. */
      forMap: (attribution_id: number) =>
        client.GET("/attributions/{attribution_id}/evidence", { path: { attribution_id } }),
      /** The checks of every map of a run, newest first. */
      forRun: (run_id: number) => client.GET("/runs/{run_id}/evidence", { path: { run_id } }),
      /** The same checks for every computed map of the run on one split, one job each. */
      createForRun: (run_id: number, body: BodyOf<Operation<"/runs/{run_id}/evidence", "post">>) =>
        client.POST("/runs/{run_id}/evidence", { path: { run_id }, body }),
    },
    reviews: {
      list: (query: ReviewFilter = {}) => client.GET("/reviews", { query }),
      create: (body: BodyOf<Operation<"/reviews", "post">>) => client.POST("/reviews", { body }),
      queue: (project_id: number, blinded: boolean) =>
        client.GET("/reviews/queue", { query: { project_id, blinded } }),
      /** The map a queue item token names (also one the user has reviewed), as the queue shows it. */
      item: (item: string, blinded = true) =>
        client.GET("/reviews/items/{item}", { path: { item }, query: { blinded } }),
      agreement: (project_id: number) => client.GET("/reviews/agreement", { query: { project_id } }),
      /** The drawn correction as NIfTI bytes (labels 1 missed lesion, 2 spurious relevance). */
      putCorrection: (review_id: number, nifti: Blob) =>
        client.PUT("/reviews/{review_id}/correction", { path: { review_id }, body: nifti }),
    },
  };
}

export type Api = ReturnType<typeof createApi>;

/** The app's client: same-origin, cookie session, CSRF header on writes. */
export const api = createApi(new Http());

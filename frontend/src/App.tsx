import { Suspense, lazy } from "react";
import { Link, Route, Routes } from "react-router";
import { AuthProvider, RequireAuth } from "./auth/AuthContext";
import { Layout } from "./components/Layout";
import { AccountPage, ProjectMembersPage, ProjectsPage, UsersPage } from "./pages/AdminPages";
import { DatasetPage } from "./pages/DatasetPage";
import { HomePage } from "./pages/HomePage";
import { LaunchRunPage } from "./pages/LaunchRunPage";
import { LoginPage } from "./pages/LoginPage";
import { RunComparePage } from "./pages/RunComparePage";
import { RunPage } from "./pages/RunPage";

// NiiVue is large; only the viewer route loads it.
const ViewerPage = lazy(() => import("./pages/ViewerPage"));
const ComparePage = lazy(() => import("./pages/ComparePage"));
const ReviewPage = lazy(() => import("./pages/ReviewPage"));
const GuidePage = lazy(() => import("./pages/GuidePage"));
const ApiReferencePage = lazy(() => import("./pages/ApiReferencePage"));
const CohortViewerPage = lazy(() => import("./shortcut/CohortViewerPage"));

export function App() {
  return (
    <AuthProvider>
      <Routes>
        <Route path="/login" element={<LoginPage />} />
        <Route
          element={
            <RequireAuth>
              <Layout />
            </RequireAuth>
          }
        >
          <Route index element={<HomePage />} />
          <Route path="datasets/:datasetId" element={<DatasetPage />} />
          <Route
            path="viewer/:subjectId"
            element={
              <Suspense fallback={<p className="muted">Loading viewer…</p>}>
                <ViewerPage />
              </Suspense>
            }
          />
          <Route path="runs/new" element={<LaunchRunPage />} />
          <Route path="runs/compare" element={<RunComparePage />} />
          <Route path="runs/:runId" element={<RunPage />} />
          <Route
            path="runs/:runId/cohort/:cohortId"
            element={
              <Suspense fallback={<p className="muted">Loading viewer…</p>}>
                <CohortViewerPage />
              </Suspense>
            }
          />
          <Route
            path="compare"
            element={
              <Suspense fallback={<p className="muted">Loading viewer…</p>}>
                <ComparePage />
              </Suspense>
            }
          />
          <Route
            path="review"
            element={
              <Suspense fallback={<p className="muted">Loading review…</p>}>
                <ReviewPage />
              </Suspense>
            }
          />
          <Route
            path="guide"
            element={
              <Suspense fallback={<p className="muted">Loading the guide…</p>}>
                <GuidePage />
              </Suspense>
            }
          />
          <Route
            path="api"
            element={
              <Suspense fallback={<p className="muted">Loading the API reference…</p>}>
                <ApiReferencePage />
              </Suspense>
            }
          />
          <Route path="account" element={<AccountPage />} />
          <Route path="projects" element={<ProjectsPage />} />
          <Route path="projects/:projectId" element={<ProjectMembersPage />} />
          <Route path="users" element={<UsersPage />} />
          <Route path="*" element={<NotFound />} />
        </Route>
      </Routes>
    </AuthProvider>
  );
}

function NotFound() {
  return (
    <section className="panel">
      <h1>Page not found</h1>
      <p>
        <Link to="/">Back to datasets and runs</Link>
      </p>
    </section>
  );
}

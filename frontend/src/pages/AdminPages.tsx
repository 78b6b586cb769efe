// What a lab does without the API: the user's account (personal tokens; the password),
// projects with their members and roles, and the site's users (site admins).
import { type FormEvent, useState } from "react";
import { Link, useParams } from "react-router";
import { api } from "../api/client";
import type { ProjectRole } from "../api/types";
import { parseId } from "../api/urls";
import { useAuth } from "../auth/AuthContext";
import { ErrorMessage, Field, RoleBadge } from "../components/common";
import { formatDate } from "../format";
import { useAsync } from "../hooks";

const PROJECT_ROLES: readonly ProjectRole[] = ["admin", "researcher", "clinician"];
const SITE_ROLES = ["admin", "researcher", "clinician"] as const;

/** A form's busy flag and error around one async action. */
function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (reason) {
      setError(reason);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}

/** /account: who I am, my password, my personal access tokens. */
export function AccountPage() {
  const { user } = useAuth();
  const tokens = useAsync(() => api.auth.tokens(), []);
  const [name, setName] = useState("");
  const [days, setDays] = useState("90");
  const [secret, setSecret] = useState<{ name: string; token: string } | null>(null);
  const action = useAction();

  const create = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      const expires = days.trim() === "" ? null : Number(days);
      const made = await api.auth.createToken({ name: name.trim(), expires_in_days: expires });
      setSecret({ name: made.name, token: made.token });
      setName("");
      tokens.reload();
    });
  };
  const revoke = (id: number) =>
    void action.run(async () => {
      await api.auth.revokeToken(id);
      tokens.reload();
    });

  return (
    <div className="admin-page" data-testid="account-page">
      <section className="panel">
        <h1>Your account</h1>
        {user ? (
          <p>
            Signed in as <strong>{user.username}</strong> (site role <RoleBadge role={user.role} />).
          </p>
        ) : null}
        <PasswordForm onChanged={() => tokens.reload()} />
      </section>
      <section className="panel">
        <h2>Personal access tokens</h2>
        <p className="muted small">
          For scripts and the <code>attrivue-client</code> command line: send <code>Authorization: Bearer &lt;token&gt;</code>.
          A token acts as you; revoke one you no longer use.
        </p>
        <form className="form-row" onSubmit={create} aria-label="New token">
          <Field label="Name">
            <input name="token-name" value={name} onChange={(e) => setName(e.target.value)} required />
          </Field>
          <Field label="Expires after (days; empty: never)">
            <input name="token-days" inputMode="numeric" value={days} onChange={(e) => setDays(e.target.value)} />
          </Field>
          <button type="submit" disabled={action.busy || name.trim() === ""}>
            Create token
          </button>
        </form>
        {secret ? (
          <p className="warning" role="status" data-testid="new-token">
            Token <strong>{secret.name}</strong>: <code>{secret.token}</code> — copy it now, it is not shown again.
          </p>
        ) : null}
        <ErrorMessage error={action.error ?? tokens.error} />
        <table className="table narrow-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Created</th>
              <th>Expires</th>
              <th>State</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(tokens.data ?? []).map((t) => (
              <tr key={t.id} data-token-id={t.id}>
                <td>{t.name}</td>
                <td>{formatDate(t.created_at)}</td>
                <td>{t.expires_at ? formatDate(t.expires_at) : "never"}</td>
                <td>{t.revoked_at ? `revoked ${formatDate(t.revoked_at)}` : "active"}</td>
                <td>
                  {t.revoked_at ? null : (
                    <button type="button" className="small-button" onClick={() => revoke(t.id)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}

/**
 * The user's own password (POST /auth/password): every session and token of theirs is revoked,
 * and the answer's cookies keep this browser logged in.
 */
function PasswordForm({ onChanged }: { onChanged: () => void }) {
  const [values, setValues] = useState({ current: "", next: "", again: "" });
  const [problem, setProblem] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const action = useAction();
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setDone(false);
    if (values.next.length < 10) return setProblem("The new password needs at least 10 characters.");
    if (values.next !== values.again) return setProblem("The two new passwords differ.");
    setProblem(null);
    void action.run(async () => {
      await api.auth.changePassword({ current_password: values.current, new_password: values.next });
      setValues({ current: "", next: "", again: "" });
      setDone(true);
      onChanged();
    });
  };
  return (
    <>
      <h2>Password</h2>
      <form className="form-row" onSubmit={submit} aria-label="Change password" noValidate>
        <Field label="Current password">
          <input
            name="current-password"
            type="password"
            autoComplete="current-password"
            value={values.current}
            onChange={(e) => setValues({ ...values, current: e.target.value })}
          />
        </Field>
        <Field label="New password (10 characters or more)">
          <input
            name="new-password"
            type="password"
            autoComplete="new-password"
            value={values.next}
            onChange={(e) => setValues({ ...values, next: e.target.value })}
          />
        </Field>
        <Field label="New password again">
          <input
            name="new-password-again"
            type="password"
            autoComplete="new-password"
            value={values.again}
            onChange={(e) => setValues({ ...values, again: e.target.value })}
          />
        </Field>
        <button type="submit" disabled={action.busy || values.current === "" || values.next === ""}>
          Change password
        </button>
      </form>
      {problem ? <p className="error small">{problem}</p> : null}
      <ErrorMessage error={action.error} />
      {done ? (
        <p className="note" role="status" data-testid="password-changed">
          Password changed. Your other sessions and every personal token were revoked (scripts need a new token); this
          browser stays logged in.
        </p>
      ) : null}
    </>
  );
}

/** /projects: the user's projects with their members; a new project (admins, researchers). */
export function ProjectsPage() {
  const { user } = useAuth();
  const projects = useAsync(async () => (await api.projects.list()).data, []);
  const [name, setName] = useState("");
  const action = useAction();
  const create = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await api.projects.create({ name: name.trim() });
      setName("");
      projects.reload();
    });
  };
  return (
    <div className="admin-page" data-testid="projects-page">
      <section className="panel">
        <h1>Projects</h1>
        <table className="table narrow-table">
          <thead>
            <tr>
              <th>Project</th>
              <th>Your role</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(projects.data ?? []).map((p) => (
              <tr key={p.id} data-project-id={p.id}>
                <td>
                  <Link to={`/?project=${p.id}`}>{p.name}</Link>
                </td>
                <td>
                  <RoleBadge role={p.role} />
                </td>
                <td>
                  <Link to={`/projects/${p.id}`}>Members</Link>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {user && user.role !== "clinician" ? (
          <form className="form-row" onSubmit={create} aria-label="New project">
            <Field label="New project">
              <input name="project-name" value={name} onChange={(e) => setName(e.target.value)} />
            </Field>
            <button type="submit" disabled={action.busy || name.trim() === ""}>
              Create project
            </button>
          </form>
        ) : null}
        <ErrorMessage error={action.error ?? projects.error} />
      </section>
    </div>
  );
}

/** /projects/:id: the members and their roles; project admins add, change and remove them. */
export function ProjectMembersPage() {
  const { projectId: raw = "" } = useParams();
  const projectId = parseId(raw, "project id");
  const project = useAsync(() => api.projects.get(projectId), [projectId]);
  const members = useAsync(async () => (await api.projects.members(projectId)).data, [projectId]);
  const isAdmin = project.data?.role === "admin";
  const [username, setUsername] = useState("");
  const [role, setRole] = useState<ProjectRole>("clinician");
  const action = useAction();
  const setMember = (name: string, newRole: ProjectRole) =>
    action.run(async () => {
      await api.projects.setMember(projectId, { username: name, role: newRole });
      members.reload();
    });
  const add = (e: FormEvent) => {
    e.preventDefault();
    void setMember(username.trim(), role).then(() => setUsername(""));
  };
  return (
    <div className="admin-page" data-testid="members-page">
      <section className="panel">
        <p className="crumbs">
          <Link to="/projects">Projects</Link> /
        </p>
        <h1>{project.data?.name ?? `Project ${projectId}`}: members</h1>
        <p className="muted small">
          Admins manage members; researchers (and admins) upload data and launch runs; clinicians review maps.
          {isAdmin ? "" : " Only a project admin can change members."}
        </p>
        <ErrorMessage error={action.error ?? members.error ?? project.error} />
        <table className="table narrow-table">
          <thead>
            <tr>
              <th>User</th>
              <th>Role</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {(members.data ?? []).map((m) => (
              <tr key={m.user_id} data-member={m.username}>
                <td>{m.username}</td>
                <td>
                  {isAdmin ? (
                    <select
                      aria-label={`Role of ${m.username}`}
                      value={m.role}
                      disabled={action.busy}
                      onChange={(e) => void setMember(m.username, e.target.value as ProjectRole)}
                    >
                      {PROJECT_ROLES.map((r) => (
                        <option key={r} value={r}>
                          {r}
                        </option>
                      ))}
                    </select>
                  ) : (
                    <RoleBadge role={m.role} />
                  )}
                </td>
                <td>
                  {isAdmin ? (
                    <button
                      type="button"
                      className="small-button"
                      disabled={action.busy}
                      onClick={() =>
                        void action.run(async () => {
                          await api.projects.removeMember(projectId, m.user_id);
                          members.reload();
                        })
                      }
                    >
                      Remove
                    </button>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {isAdmin ? (
          <form className="form-row" onSubmit={add} aria-label="Add member">
            <Field label="Username">
              <input name="member-username" value={username} onChange={(e) => setUsername(e.target.value)} />
            </Field>
            <Field label="Role">
              <select name="member-role" value={role} onChange={(e) => setRole(e.target.value as ProjectRole)}>
                {PROJECT_ROLES.map((r) => (
                  <option key={r} value={r}>
                    {r}
                  </option>
                ))}
              </select>
            </Field>
            <button type="submit" disabled={action.busy || username.trim() === ""}>
              Add or change
            </button>
          </form>
        ) : null}
      </section>
    </div>
  );
}

/** /users: the site's users (site admins): list them and create one. */
export function UsersPage() {
  const { user } = useAuth();
  const users = useAsync(async () => (user?.role === "admin" ? (await api.users.list()).data : null), [user?.role]);
  const [values, setValues] = useState({ username: "", password: "", role: "researcher" as (typeof SITE_ROLES)[number] });
  const action = useAction();
  if (user && user.role !== "admin") {
    return (
      <section className="panel" data-testid="users-page">
        <h1>Users</h1>
        <p className="note" role="note">
          Only site admins manage users. Ask one to create an account or to add someone to a project (project admins
          can add existing users under <Link to="/projects">Projects</Link>).
        </p>
      </section>
    );
  }
  const create = (e: FormEvent) => {
    e.preventDefault();
    void action.run(async () => {
      await api.users.create({ username: values.username.trim(), password: values.password, role: values.role });
      setValues({ username: "", password: "", role: values.role });
      users.reload();
    });
  };
  return (
    <div className="admin-page" data-testid="users-page">
      <section className="panel">
        <h1>Users</h1>
        <table className="table narrow-table">
          <thead>
            <tr>
              <th>User</th>
              <th>Site role</th>
            </tr>
          </thead>
          <tbody>
            {(users.data ?? []).map((u) => (
              <tr key={u.id} data-user={u.username}>
                <td>{u.username}</td>
                <td>
                  <RoleBadge role={u.role} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <form className="form-row" onSubmit={create} aria-label="New user">
          <Field label="Username">
            <input
              name="new-username"
              value={values.username}
              onChange={(e) => setValues({ ...values, username: e.target.value })}
            />
          </Field>
          <Field label="Password (at least 10 characters)">
            <input
              name="new-password"
              type="password"
              autoComplete="new-password"
              value={values.password}
              onChange={(e) => setValues({ ...values, password: e.target.value })}
            />
          </Field>
          <Field label="Site role">
            <select
              name="new-role"
              value={values.role}
              onChange={(e) => setValues({ ...values, role: e.target.value as (typeof SITE_ROLES)[number] })}
            >
              {SITE_ROLES.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </Field>
          <button type="submit" disabled={action.busy || values.username.trim() === "" || values.password.length < 10}>
            Create user
          </button>
        </form>
        <ErrorMessage error={action.error ?? users.error} />
      </section>
    </div>
  );
}

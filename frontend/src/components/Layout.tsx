import { Link, NavLink, Outlet, useNavigate } from "react-router";
import { useAuth } from "../auth/AuthContext";

export function Layout() {
  const { user, logout } = useAuth();
  const navigate = useNavigate();
  const onLogout = async () => {
    await logout().catch(() => undefined);
    navigate("/login", { replace: true });
  };
  return (
    <div className="app">
      <header className="topbar">
        <Link to="/" className="brand">
          Attrivue
        </Link>
        <nav className="topnav">
          <NavLink to="/" end>
            Datasets &amp; runs
          </NavLink>
          <NavLink to="/review">Review</NavLink>
          <NavLink to="/projects">Projects</NavLink>
          {user?.role === "admin" ? <NavLink to="/users">Users</NavLink> : null}
          <NavLink to="/guide">User guide</NavLink>
          <NavLink to="/api">API</NavLink>
        </nav>
        <div className="topbar-user">
          {user ? (
            <Link to="/account" className="muted" title="Your account and tokens">
              {user.username} · {user.role}
            </Link>
          ) : null}
          <button type="button" className="link-button" onClick={onLogout}>
            Log out
          </button>
        </div>
      </header>
      <main className="content">
        <Outlet />
      </main>
    </div>
  );
}

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
          <NavLink to="/guide">User guide</NavLink>
          <NavLink to="/api">API</NavLink>
        </nav>
        <div className="topbar-user">
          {user ? (
            <span className="muted">
              {user.username} · {user.role}
            </span>
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

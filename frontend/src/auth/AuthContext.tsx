// Who is logged in. The session lives in an HttpOnly cookie; GET /auth/me tells us who it is.
import { type ReactNode, createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import { Navigate, useLocation } from "react-router";
import { api } from "../api/client";
import type { User } from "../api/types";

interface AuthState {
  /** undefined while the first /auth/me is in flight. */
  user: User | null | undefined;
  login: (username: string, password: string) => Promise<User>;
  logout: () => Promise<void>;
}

const AuthContext = createContext<AuthState | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [user, setUser] = useState<User | null | undefined>(undefined);

  useEffect(() => {
    // Any 401 from any call means the session is gone: RequireAuth then sends us to /login.
    api.http.onUnauthorized = () => setUser(null);
    let current = true;
    api.auth.me().then(
      (me) => current && setUser(me),
      // Not logged in, or the server is unreachable: the login form will say which.
      () => current && setUser(null),
    );
    return () => {
      current = false;
      api.http.onUnauthorized = undefined;
    };
  }, []);

  const login = useCallback(async (username: string, password: string) => {
    const response = await api.auth.login(username, password);
    setUser(response.user);
    return response.user;
  }, []);

  const logout = useCallback(async () => {
    try {
      await api.auth.logout();
    } finally {
      setUser(null);
    }
  }, []);

  const value = useMemo(() => ({ user, login, logout }), [user, login, logout]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthState {
  const state = useContext(AuthContext);
  if (!state) throw new Error("useAuth() outside <AuthProvider>");
  return state;
}

/** Renders its children for a logged-in user, otherwise redirects to /login. */
export function RequireAuth({ children }: { children: ReactNode }) {
  const { user } = useAuth();
  const location = useLocation();
  if (user === undefined) return <p className="muted page-loading">Loading…</p>;
  if (user === null) {
    const next = location.pathname + location.search;
    return <Navigate to="/login" replace state={{ next }} />;
  }
  return <>{children}</>;
}

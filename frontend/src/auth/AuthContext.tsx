// Who is logged in. The session lives in an HttpOnly cookie; GET /auth/me tells us who it is.
import { type ReactNode, createContext, useCallback, useContext, useEffect, useMemo, useRef, useState } from "react";
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
  // Requests numbered up to this one were sent before the last login (Http.issued): their
  // answers, a 401 in particular, say nothing about the session the login opened.
  const sessionFrom = useRef(0);

  useEffect(() => {
    // Any 401 from any call means the session is gone: RequireAuth then sends us to /login.
    api.http.onUnauthorized = (request) => {
      if (request > sessionFrom.current) setUser(null);
    };
    let current = true;
    const before = sessionFrom.current;
    api.auth.me().then(
      (me) => current && sessionFrom.current === before && setUser(me),
      // Not logged in, or the server is unreachable: the login form will say which. A login
      // made while this answer was on its way wins over it.
      () => current && sessionFrom.current === before && setUser(null),
    );
    return () => {
      current = false;
      api.http.onUnauthorized = undefined;
    };
  }, []);

  const login = useCallback(async (username: string, password: string) => {
    const response = await api.auth.login(username, password);
    sessionFrom.current = api.http.issued;
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

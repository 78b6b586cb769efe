import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// The backend serves dist/ at "/" with an SPA fallback, so assets use absolute "/assets/..." paths.
// In development, `npm run dev` proxies /api to a locally running `attrivue serve`.
const apiTarget = process.env.ATTRIVUE_API_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "/",
  plugins: [react()],
  server: {
    proxy: { "/api": { target: apiTarget, changeOrigin: false } },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // NiiVue is one ~1.5 MB module; it is split into the lazily loaded viewer chunk.
    chunkSizeWarningLimit: 2500,
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.{ts,tsx}"],
  },
});

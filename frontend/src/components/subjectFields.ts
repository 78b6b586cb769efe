// Client-side checks of a subject's editable text fields, matching the server's (SubjectUpdate).

export const SITE_MAX_LENGTH = 64;

/** The site to send (trimmed), or a message saying what is wrong with it. */
export function validateSite(raw: string): { ok: true; value: string } | { ok: false; error: string } {
  if (/[\u0000-\u001f\u007f]/.test(raw)) return { ok: false, error: "No tabs or line breaks in a site name." };
  const value = raw.trim();
  if (value.length > SITE_MAX_LENGTH) {
    return { ok: false, error: `At most ${SITE_MAX_LENGTH} characters (${value.length} now).` };
  }
  return { ok: true, value };
}

// Client-side checks of a subject's editable text fields, matching the server's (SubjectUpdate).

export const SITE_MAX_LENGTH = 64;

/**
 * A continuous target (regression runs) from a text field: empty means none (null); anything
 * else must be a finite number ("2,5" is read as 2.5).
 */
export function parseTarget(raw: string): { ok: true; value: number | null } | { ok: false; error: string } {
  const text = raw.trim().replace(",", ".");
  if (text === "") return { ok: true, value: null };
  const value = Number(text);
  if (!Number.isFinite(value)) return { ok: false, error: "The target must be a number (or empty for none)." };
  return { ok: true, value };
}

/** The site to send (trimmed), or a message saying what is wrong with it. */
export function validateSite(raw: string): { ok: true; value: string } | { ok: false; error: string } {
  if (hasControlCharacter(raw)) return { ok: false, error: "No tabs or line breaks in a site name." };
  const value = raw.trim();
  if (value.length > SITE_MAX_LENGTH) {
    return { ok: false, error: `At most ${SITE_MAX_LENGTH} characters (${value.length} now).` };
  }
  return { ok: true, value };
}

/** Whether the text holds a C0 control character (tab, line break, ...) or DEL. */
function hasControlCharacter(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

/**
 * Where the Google clients send their requests and how they authenticate as
 * an OAuth client. Built from the environment by
 * `integrations/_google_config.ts`; the clients here never read it.
 *
 * @module
 */

/** Endpoints and client credentials for the Google integrations. */
export interface GoogleConfig {
  /** The OAuth token endpoint (`grant_type=refresh_token`). */
  tokenUrl: string;
  /** Gmail API root, version included: `https://gmail.googleapis.com/gmail/v1`. */
  gmailApiUrl: string;
  /** Calendar API root, version included: `https://www.googleapis.com/calendar/v3`. */
  gcalApiUrl: string;
  /** The OAuth client id, or `null` when unset. */
  clientId: string | null;
  /** The OAuth client secret, or `null` when unset. */
  clientSecret: string | null;
  /**
   * When set, tokens are refreshed through this Common Tools toolshed
   * (`POST /api/integrations/google-oauth/refresh`), which holds the client
   * secret, instead of at `tokenUrl`.
   */
  toolshedApiUrl: string | null;
}

/** Google's production endpoints. */
export const GOOGLE_DEFAULT_URLS = {
  tokenUrl: "https://oauth2.googleapis.com/token",
  gmailApiUrl: "https://gmail.googleapis.com/gmail/v1",
  gcalApiUrl: "https://www.googleapis.com/calendar/v3",
} as const;

/** The OAuth scopes the importers need (read-only). */
export const GOOGLE_SCOPES = {
  gmail: "https://www.googleapis.com/auth/gmail.readonly",
  gcal: "https://www.googleapis.com/auth/calendar.readonly",
} as const;

/** `true` for a loopback host, where plain http stays on the machine. */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === "127.0.0.1" || hostname === "localhost" ||
    hostname === "[::1]" || hostname === "::1";
}

/**
 * The `auth` object a Google importer keeps in its argument cell, with the
 * field names the charm ecosystem uses, and when it needs refreshing.
 *
 * `token` and `refreshToken` are secrets: they never go into logs, errors or
 * API replies (`GET /api/charms/...` redacts them).
 *
 * @module
 */
import { z } from "zod";

/** Refresh when the access token expires within this long. */
export const REFRESH_MARGIN_MS = 10 * 60_000;

const TOKEN = z.string().max(4096);

/** The `auth` object: every field defaults, so a charm may start empty. */
export const googleAuthSchema = z.object({
  /** The access token; `""` when there is none yet. */
  token: TOKEN.default(""),
  tokenType: z.string().max(64).default(""),
  /** Granted scopes: a list, or Google's space-separated string. */
  scope: z.union([
    z.string().max(4096),
    z.array(z.string().max(512)).max(64),
  ]).default([]),
  /** Lifetime of `token` in seconds, as the token endpoint said. */
  expiresIn: z.number().min(0).default(0),
  /** When `token` expires, epoch ms; 0 when unknown. */
  expiresAt: z.number().min(0).default(0),
  /** The long-lived refresh token; `""` when there is none. */
  refreshToken: TOKEN.default(""),
  user: z.object({
    email: z.string().max(320).default(""),
    name: z.string().max(256).default(""),
    picture: z.string().max(2048).default(""),
  }).prefault({}),
});

/** A parsed `auth` object. */
export type GoogleAuth = z.infer<typeof googleAuthSchema>;

/**
 * `true` when the access token is missing or expires within
 * {@linkcode REFRESH_MARGIN_MS} of `nowMs` (an unknown expiry counts as
 * expiring).
 */
export function tokenIsExpiring(auth: GoogleAuth, nowMs: number): boolean {
  return auth.token === "" || auth.expiresAt - nowMs < REFRESH_MARGIN_MS;
}

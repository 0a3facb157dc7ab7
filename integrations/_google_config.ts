/**
 * The environment variables of the Google integrations (`gmail`, `gcal`):
 * parsed at each run into a {@linkcode GoogleConfig}, and checked by
 * `--initialize`.
 *
 * They are read from `IntegrationDeps.env`, not `config/config.ts`: only these
 * integrations use them, and a missing client id must not stop a process that
 * runs other integrations.
 *
 * @module
 */
import {
  GOOGLE_DEFAULT_URLS,
  type GoogleConfig,
  isLoopbackHost,
} from "../google/config.ts";
import { NonRetriableError } from "../lib/errors.ts";

/** One variable: its name, default and what it is for (`--help`, docs). */
export interface GoogleEnvVar {
  name: string;
  default: string | null;
  description: string;
}

/** Every variable the Google integrations read. */
export const GOOGLE_ENV_VARS: readonly GoogleEnvVar[] = [
  {
    name: "GOOGLE_CLIENT_ID",
    default: null,
    description: "OAuth client id (needed unless TOOLSHED_API_URL is set)",
  },
  {
    name: "GOOGLE_CLIENT_SECRET",
    default: null,
    description: "OAuth client secret (needed unless TOOLSHED_API_URL is set)",
  },
  {
    name: "GOOGLE_TOKEN_URL",
    default: GOOGLE_DEFAULT_URLS.tokenUrl,
    description: "OAuth token endpoint",
  },
  {
    name: "GMAIL_API_URL",
    default: GOOGLE_DEFAULT_URLS.gmailApiUrl,
    description: "Gmail API root, version included",
  },
  {
    name: "GCAL_API_URL",
    default: GOOGLE_DEFAULT_URLS.gcalApiUrl,
    description: "Calendar API root, version included",
  },
  {
    name: "TOOLSHED_API_URL",
    default: null,
    description:
      "Refresh tokens through this toolshed instead of the token endpoint",
  },
];

/**
 * Reads the Google configuration from `env`. An empty variable counts as
 * unset. URLs must be https, or http on a loopback host (a test server).
 *
 * @throws {NonRetriableError} naming the variable when a URL is malformed.
 */
export function googleConfigFromEnv(
  env: Record<string, string | undefined>,
): GoogleConfig {
  return {
    tokenUrl: _url(env, "GOOGLE_TOKEN_URL", GOOGLE_DEFAULT_URLS.tokenUrl),
    gmailApiUrl: _url(env, "GMAIL_API_URL", GOOGLE_DEFAULT_URLS.gmailApiUrl),
    gcalApiUrl: _url(env, "GCAL_API_URL", GOOGLE_DEFAULT_URLS.gcalApiUrl),
    clientId: env.GOOGLE_CLIENT_ID || null,
    clientSecret: env.GOOGLE_CLIENT_SECRET || null,
    toolshedApiUrl: env.TOOLSHED_API_URL
      ? _url(env, "TOOLSHED_API_URL", "")
      : null,
  };
}

/**
 * Lines for `--initialize`: which variables are missing or malformed and how
 * to fix them, or that the client is configured.
 */
export function checkGoogleConfig(
  id: string,
  env: Record<string, string | undefined>,
): string[] {
  const lines: string[] = [];
  try {
    googleConfigFromEnv(env);
  } catch (error) {
    lines.push(`${id}: ${(error as Error).message}`);
  }
  if (env.TOOLSHED_API_URL) {
    lines.push(
      `${id}: tokens are refreshed through the toolshed at TOOLSHED_API_URL`,
    );
    return lines;
  }
  const missing = ["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"].filter((name) =>
    !env[name]
  );
  if (missing.length === 0) {
    lines.push(`${id}: Google OAuth client configured`);
  } else {
    lines.push(
      `${id}: missing ${
        missing.join(", ")
      }: create an OAuth client (type "Web application") in the Google Cloud console under APIs & Services > Credentials, then set them in the environment (see docs/google.md)`,
    );
  }
  return lines;
}

function _url(
  env: Record<string, string | undefined>,
  name: string,
  fallback: string,
): string {
  const value = env[name] || fallback;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new NonRetriableError(`${name}: "${value}" is not a URL`);
  }
  if (
    url.protocol !== "https:" &&
    !(url.protocol === "http:" && isLoopbackHost(url.hostname))
  ) {
    throw new NonRetriableError(
      `${name}: "${value}" must be https (plain http only on a loopback host)`,
    );
  }
  return value.replace(/\/+$/, "");
}

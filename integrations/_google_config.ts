/**
 * The environment variables of the Google integrations (`gmail`, `gcal`):
 * parsed at each run into a {@linkcode GoogleConfig}, and checked by
 * `--initialize`.
 *
 * They are read from `IntegrationDeps.env`, not `config/config.ts`: only these
 * integrations use them, and a missing client id must not stop a process that
 * runs other integrations. A variable that is set but malformed stops any
 * process ({@linkcode assertGoogleConfig}, called by `main.ts`): every process
 * serves the API, so any may run a Google charm by hand, and a typo is a
 * startup error, not a failure of every such run.
 *
 * @module
 */
import {
  GOOGLE_DEFAULT_URLS,
  type GoogleConfig,
  isLoopbackHost,
} from "../google/config.ts";
import { ConfigError, NonRetriableError } from "../lib/errors.ts";

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

/** What a Google OAuth client id ends with. */
const GOOGLE_CLIENT_ID_SUFFIX = ".apps.googleusercontent.com";

/**
 * Reads the Google configuration from `env`. An empty variable counts as
 * unset. URLs must be https, or http on a loopback host (a test server).
 *
 * @throws {NonRetriableError} naming the first malformed variable (see
 *   {@linkcode googleConfigProblems}).
 */
export function googleConfigFromEnv(
  env: Record<string, string | undefined>,
): GoogleConfig {
  const { config, problems } = _parse(env);
  if (problems.length > 0) throw new NonRetriableError(problems[0]!.message);
  return config;
}

/**
 * Every Google variable that is set but malformed, one line each naming the
 * variable (`GMAIL_API_URL: "gmail" is not a URL`): a URL that is not one,
 * or not https (plain http only on a loopback host); a client id or secret
 * with whitespace, quotes or characters no Google credential has; a client
 * id for Google's token endpoint that is not one. Unset variables are not
 * problems here: {@linkcode checkGoogleConfig} reports what is missing.
 */
export function googleConfigProblems(
  env: Record<string, string | undefined>,
): string[] {
  return _parse(env).problems.map((p) => p.message);
}

/** The integrations whose `--initialize` reports these variables. */
export const GOOGLE_INTEGRATION_IDS: readonly string[] = ["gmail", "gcal"];

/**
 * Refuses to start a process when a Google variable is set but malformed:
 * every run of a Google charm would fail on it (and count toward disabling
 * the charm), scheduled by `gmail` or `gcal` or started by hand through the
 * API, which every process serves. Missing variables are left to
 * `--initialize` and the runs, so an unconfigured process still starts.
 *
 * @throws {ConfigError} naming every malformed variable, on one line.
 */
export function assertGoogleConfig(
  env: Record<string, string | undefined>,
): void {
  const problems = googleConfigProblems(env);
  if (problems.length > 0) throw new ConfigError(problems.join("; "));
}

/**
 * Lines for `--initialize`: which variables are missing or malformed and how
 * to fix them, or that the client is configured.
 */
export function checkGoogleConfig(
  id: string,
  env: Record<string, string | undefined>,
): string[] {
  const { problems } = _parse(env);
  const lines = problems.map((p) => `${id}: ${p.message}`);
  if (env.TOOLSHED_API_URL) {
    lines.push(
      `${id}: tokens are refreshed through the toolshed at TOOLSHED_API_URL`,
    );
    return lines;
  }
  const missing = missingGoogleClient(env);
  if (missing.length > 0) {
    lines.push(
      `${id}: missing ${
        missing.join(", ")
      }: create an OAuth client (type "Web application") in the Google Cloud console under APIs & Services > Credentials, then set them in the environment (see docs/google.md)`,
    );
  } else if (!problems.some((p) => CLIENT_VARS.includes(p.name))) {
    lines.push(`${id}: Google OAuth client configured`);
  }
  return lines;
}

/**
 * The OAuth client variables a token refresh needs and `env` lacks (none
 * when a toolshed refreshes tokens instead).
 */
export function missingGoogleClient(
  env: Record<string, string | undefined>,
): string[] {
  if (env.TOOLSHED_API_URL) return [];
  return CLIENT_VARS.filter((name) => !env[name]);
}

const CLIENT_VARS: readonly string[] = [
  "GOOGLE_CLIENT_ID",
  "GOOGLE_CLIENT_SECRET",
];

type Env = Record<string, string | undefined>;

interface Problem {
  name: string;
  message: string;
}

/** Parses every variable, collecting the problems instead of stopping. */
function _parse(env: Env): { config: GoogleConfig; problems: Problem[] } {
  const problems: Problem[] = [];
  const read = <T>(name: string, parse: () => T, fallback: T): T => {
    try {
      return parse();
    } catch (error) {
      problems.push({ name, message: (error as Error).message });
      return fallback;
    }
  };
  const url = (name: string, fallback: string) =>
    read(name, () => _url(env, name, fallback), fallback);
  const tokenUrl = url("GOOGLE_TOKEN_URL", GOOGLE_DEFAULT_URLS.tokenUrl);
  const toolshedApiUrl = env.TOOLSHED_API_URL
    ? read("TOOLSHED_API_URL", () => _url(env, "TOOLSHED_API_URL", ""), null)
    : null;
  // Only Google's own token endpoint implies Google's client id format (a
  // test server or a proxy may use any; a toolshed uses none).
  const atGoogle = !env.TOOLSHED_API_URL &&
    tokenUrl === GOOGLE_DEFAULT_URLS.tokenUrl &&
    problems.every((p) => p.name !== "GOOGLE_TOKEN_URL");
  const config: GoogleConfig = {
    tokenUrl,
    gmailApiUrl: url("GMAIL_API_URL", GOOGLE_DEFAULT_URLS.gmailApiUrl),
    gcalApiUrl: url("GCAL_API_URL", GOOGLE_DEFAULT_URLS.gcalApiUrl),
    clientId: read(
      "GOOGLE_CLIENT_ID",
      () => _clientId(env.GOOGLE_CLIENT_ID || null, atGoogle),
      null,
    ),
    clientSecret: read(
      "GOOGLE_CLIENT_SECRET",
      () =>
        _credential("GOOGLE_CLIENT_SECRET", env.GOOGLE_CLIENT_SECRET || null),
      null,
    ),
    toolshedApiUrl,
  };
  // In the order of GOOGLE_ENV_VARS, as --help and the docs list them.
  const order = (p: Problem) =>
    GOOGLE_ENV_VARS.findIndex((v) => v.name === p.name);
  problems.sort((a, b) => order(a) - order(b));
  return { config, problems };
}

function _clientId(value: string | null, atGoogle: boolean): string | null {
  const id = _credential("GOOGLE_CLIENT_ID", value);
  if (id !== null && atGoogle && !id.endsWith(GOOGLE_CLIENT_ID_SUFFIX)) {
    throw new NonRetriableError(
      `GOOGLE_CLIENT_ID: does not end in "${GOOGLE_CLIENT_ID_SUFFIX}"; copy the OAuth client's id (not its secret or the project number) from the Google Cloud console`,
    );
  }
  return id;
}

/**
 * A client id or secret as pasted: Google's are printable ASCII without
 * spaces, so whitespace, quotes around the value (an env file that keeps
 * them) or other characters are a copy-and-paste slip that Google would
 * answer with `invalid_client` at every run. Neither check echoes the value:
 * it may be the secret (pasted into the wrong variable, even).
 */
function _credential(name: string, value: string | null): string | null {
  if (value === null) return null;
  let problem: string | null = null;
  if (value.trim() !== value) {
    problem = "has leading or trailing whitespace";
  } else if (/^(["']).*\1$/s.test(value)) {
    problem = "is wrapped in quotes";
  } else if (/[^\x21-\x7e]/.test(value)) {
    problem = "contains a space, a control character or a non-ASCII character";
  }
  if (problem !== null) {
    throw new NonRetriableError(
      `${name}: ${problem}; set it to the value exactly as the Google Cloud console shows it`,
    );
  }
  return value;
}

function _url(
  env: Env,
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

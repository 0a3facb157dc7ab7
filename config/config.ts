/**
 * Configuration: read once at startup from flags and environment variables,
 * validated, typed. Flags override variables; defaults live in `DEFAULTS`.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type CharmRef, parseCharmRef } from "../charm/charm.ts";
import { ConfigError } from "../lib/errors.ts";
import { parseHostList } from "../lib/net_guard.ts";
import {
  describeParseArgsError,
  parseIntegerOption,
} from "../lib/parse_args_error.ts";

/** Log levels accepted by `LOG_LEVEL`. */
export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;

/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** The validated configuration. */
export interface Config {
  /** `--charms`: charms the `manual` integration runs. */
  charms: CharmRef[];
  /** `--interval` / `CYCLE_INTERVAL_MS`. */
  intervalMs: number;
  /** `--failures` / `MAX_CONSECUTIVE_FAILURES`. */
  maxConsecutiveFailures: number;
  /** `--log-interval` / `LOG_INTERVAL_MS`. */
  logIntervalMs: number;
  /** `--integration`: enabled integration ids. */
  integrations: string[];
  /** `--initialize`: create registries, report, exit. */
  initialize: boolean;
  /** `--demo`: create demo counter charms on startup. */
  demo: boolean;
  /** `--max-concurrent` / `MAX_CONCURRENT_JOBS`. */
  maxConcurrentJobs: number;
  /** `--max-retries` / `MAX_RETRIES`. */
  maxRetries: number;
  /** `CHARM_EXECUTION_TIMEOUT_MS`. */
  charmExecutionTimeoutMs: number;
  /** `RETRY_BASE_DELAY_MS`: first retry delay; doubles per attempt. */
  retryBaseDelayMs: number;
  /** `RETRY_MAX_DELAY_MS`: cap on one retry delay. */
  retryMaxDelayMs: number;
  /** `SHUTDOWN_TIMEOUT_MS`: how long shutdown waits for in-flight runs. */
  shutdownTimeoutMs: number;
  /** `PORT`. */
  port: number;
  /** `HOST`. */
  host: string;
  /**
   * `KV_PATH`: a file path, `:memory:`, or a KV Connect URL; `null` opens
   * the default database (Deno Deploy's attached one).
   */
  kvPath: string | null;
  /** `LOG_LEVEL`. */
  logLevel: LogLevel;
  /** `QUEUE_DRIVER`: `native`, `kv`, or `auto` (detect the platform). */
  queueDriver: "native" | "kv" | "auto";
  /**
   * `QUEUE_WORKER`: `loop` (a long-running worker), `cron` (drain inside each
   * cron tick and fan-out request, as on Deno Deploy), or `auto`.
   */
  queueWorker: "loop" | "cron" | "auto";
  /** `DRAIN_BUDGET_MS`: how long a cron-driven drain may run. */
  drainBudgetMs: number;
  /** `QUEUE_POLL_MS`: longest idle sleep of the `kv` driver's worker. */
  queuePollMs: number;
  /** `ADMIN_TOKEN`: the operator's bearer token, when set. */
  adminToken: string | null;
  /**
   * `WEBHOOK_ALLOWED_HOSTS`: hosts webhooks may call when exposed even if
   * they are, or resolve to, private addresses.
   */
  webhookAllowedHosts: string[];
  /** `--help`. */
  help: boolean;
}

/** Defaults, with units in the names. */
export const DEFAULTS = {
  intervalMs: 60_000,
  maxConsecutiveFailures: 5,
  logIntervalMs: 300_000,
  integrations: ["gmail"],
  maxConcurrentJobs: 5,
  maxRetries: 3,
  charmExecutionTimeoutMs: 30_000,
  retryBaseDelayMs: 1_000,
  retryMaxDelayMs: 60_000,
  shutdownTimeoutMs: 10_000,
  port: 8000,
  host: "127.0.0.1",
  kvPath: "./data/bcs.sqlite3",
  logLevel: "info",
  queueDriver: "auto",
  queueWorker: "auto",
  drainBudgetMs: 50_000,
  queuePollMs: 1_000,
} as const satisfies Partial<Config>;

const FLAGS = {
  charms: { type: "string" },
  interval: { type: "string" },
  failures: { type: "string" },
  "log-interval": { type: "string" },
  integration: { type: "string" },
  initialize: { type: "boolean" },
  demo: { type: "boolean" },
  "max-concurrent": { type: "string" },
  "max-retries": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Environment variables the service reads, for `--help` and the README. */
const ENV_VARS = [
  ["INTEGRATIONS", "comma-separated integrations (like --integration)"],
  ["CYCLE_INTERVAL_MS", "fan-out interval in ms (like --interval)"],
  ["MAX_CONSECUTIVE_FAILURES", "like --failures"],
  ["LOG_INTERVAL_MS", "status log interval in ms (like --log-interval)"],
  ["MAX_CONCURRENT_JOBS", "like --max-concurrent"],
  ["MAX_RETRIES", "like --max-retries"],
  ["CHARM_EXECUTION_TIMEOUT_MS", "run timeout in ms (default 30000)"],
  [
    "RETRY_BASE_DELAY_MS",
    "first retry delay in ms, doubled per attempt (default 1000)",
  ],
  ["RETRY_MAX_DELAY_MS", "longest retry delay in ms (default 60000)"],
  [
    "SHUTDOWN_TIMEOUT_MS",
    "how long shutdown waits for running charms (default 10000)",
  ],
  ["PORT", "HTTP port (default 8000; 0 picks a free one)"],
  ["HOST", "HTTP listen address (default 127.0.0.1)"],
  ["KV_PATH", "Deno KV file, or :memory: (default ./data/bcs.sqlite3)"],
  ["LOG_LEVEL", "debug, info, warning or error (default info)"],
  ["ADMIN_TOKEN", "operator bearer token (see docs/auth.md)"],
  ["IDENTITY", "operator identity: path to an Ed25519 PKCS#8 PEM key file"],
  ["OPERATOR_PASS", "operator identity from a passphrase (if no IDENTITY)"],
  [
    "SECRETS_KEY",
    "encrypts secret cell fields (OAuth tokens) at rest; required when deployed (see docs/secrets.md)",
  ],
  [
    "SECRETS_KEY_PREVIOUS",
    "the old SECRETS_KEY during a rotation: still read, never written",
  ],
  [
    "WEBHOOK_ALLOWED_HOSTS",
    "comma-separated hosts webhooks may call when exposed (deployed, or HOST beyond loopback) even if private (see docs/webhooks.md)",
  ],
  [
    "QUEUE_DRIVER",
    "native, kv or auto (default auto: kv on Deno Deploy, KV Connect and with QUEUE_WORKER=cron)",
  ],
  [
    "QUEUE_WORKER",
    "loop, cron or auto (default auto: cron on Deno Deploy); kv driver only",
  ],
  ["DRAIN_BUDGET_MS", "longest cron-driven drain in ms (default 50000)"],
  ["QUEUE_POLL_MS", "longest idle sleep of the kv worker in ms (default 1000)"],
] as const;

/**
 * Reads and validates the configuration.
 *
 * @param args command-line arguments (`Deno.args`)
 * @param env environment variables
 * @param integrationIds the integrations that exist
 * @throws {ConfigError} naming the first bad flag or variable and what is
 *   accepted.
 */
export function loadConfig(
  args: readonly string[],
  env: Record<string, string | undefined>,
  integrationIds: readonly string[],
): Config {
  let values: ReturnType<typeof _parse>["values"];
  try {
    values = _parse(args).values;
  } catch (error) {
    throw new ConfigError(describeParseArgsError(error));
  }
  const pick = (flag: keyof typeof FLAGS, envName: string | null) => {
    const fromFlag = values[flag];
    if (typeof fromFlag === "string") {
      return { value: fromFlag, name: `--${flag}` };
    }
    const fromEnv = envName === null ? undefined : env[envName];
    if (fromEnv !== undefined && fromEnv !== "") {
      return { value: fromEnv, name: envName as string };
    }
    return null;
  };
  const envOnly = (name: string) => {
    const value = env[name];
    return value === undefined || value === "" ? null : { value, name };
  };

  // Seconds on the command line, milliseconds in the environment.
  const intervalSource = pick("interval", "CYCLE_INTERVAL_MS");
  const intervalMs = intervalSource === null
    ? DEFAULTS.intervalMs
    : _interval(intervalSource);

  const logSource = pick("log-interval", "LOG_INTERVAL_MS");
  const logIntervalMs = logSource === null
    ? DEFAULTS.logIntervalMs
    : _duration(logSource, 1, 86_400);

  const integrationSource = pick("integration", "INTEGRATIONS");
  const integrations = integrationSource === null
    ? [...DEFAULTS.integrations]
    : _integrations(integrationSource, integrationIds);

  const charms = values.charms === undefined ? [] : _charms(values.charms);
  // --charms and --demo name charms that only the manual integration runs.
  if (
    (charms.length > 0 || values.demo === true) &&
    !integrations.includes("manual")
  ) {
    integrations.push("manual");
  }

  const logLevelRaw = envOnly("LOG_LEVEL");
  let logLevel: LogLevel = DEFAULTS.logLevel;
  if (logLevelRaw !== null) {
    const normalized = logLevelRaw.value.toLowerCase() === "warn"
      ? "warning"
      : logLevelRaw.value.toLowerCase();
    if (!(LOG_LEVELS as readonly string[]).includes(normalized)) {
      throw new ConfigError(
        `LOG_LEVEL: "${logLevelRaw.value}" is not a log level; use one of ${
          LOG_LEVELS.join(", ")
        }`,
      );
    }
    logLevel = normalized as LogLevel;
  }

  const host = envOnly("HOST")?.value ?? DEFAULTS.host;
  // On Deno Deploy the attached database is opened with no path.
  const kvPath = envOnly("KV_PATH")?.value ??
    (env.DENO_DEPLOYMENT_ID ? null : DEFAULTS.kvPath);
  const retryBaseDelayMs = _intOr(
    envOnly("RETRY_BASE_DELAY_MS"),
    DEFAULTS.retryBaseDelayMs,
    1,
    3_600_000,
  );
  const retryMaxDelayMs = _intOr(
    envOnly("RETRY_MAX_DELAY_MS"),
    DEFAULTS.retryMaxDelayMs,
    1,
    86_400_000,
  );
  if (retryMaxDelayMs < retryBaseDelayMs) {
    throw new ConfigError(
      `RETRY_MAX_DELAY_MS: ${retryMaxDelayMs} is below RETRY_BASE_DELAY_MS (${retryBaseDelayMs}); it must be at least as large`,
    );
  }

  const queueDriver = _oneOf(
    envOnly("QUEUE_DRIVER"),
    ["native", "kv", "auto"] as const,
    DEFAULTS.queueDriver,
  );
  const queueWorker = _oneOf(
    envOnly("QUEUE_WORKER"),
    ["loop", "cron", "auto"] as const,
    DEFAULTS.queueWorker,
  );
  if (queueDriver === "native" && queueWorker === "cron") {
    throw new ConfigError(
      "QUEUE_WORKER: cron needs QUEUE_DRIVER=kv (the native queue cannot be drained on demand)",
    );
  }

  return {
    queueDriver,
    queueWorker,
    drainBudgetMs: _intOr(
      envOnly("DRAIN_BUDGET_MS"),
      DEFAULTS.drainBudgetMs,
      100,
      55_000,
    ),
    queuePollMs: _intOr(
      envOnly("QUEUE_POLL_MS"),
      DEFAULTS.queuePollMs,
      10,
      60_000,
    ),
    charms,
    intervalMs,
    maxConsecutiveFailures: _intOr(
      pick("failures", "MAX_CONSECUTIVE_FAILURES"),
      DEFAULTS.maxConsecutiveFailures,
      1,
      1_000_000,
    ),
    logIntervalMs,
    integrations,
    initialize: values.initialize === true,
    demo: values.demo === true,
    maxConcurrentJobs: _intOr(
      pick("max-concurrent", "MAX_CONCURRENT_JOBS"),
      DEFAULTS.maxConcurrentJobs,
      1,
      1000,
    ),
    maxRetries: _intOr(
      pick("max-retries", "MAX_RETRIES"),
      DEFAULTS.maxRetries,
      0,
      100,
    ),
    charmExecutionTimeoutMs: _intOr(
      envOnly("CHARM_EXECUTION_TIMEOUT_MS"),
      DEFAULTS.charmExecutionTimeoutMs,
      1,
      3_600_000,
    ),
    retryBaseDelayMs,
    retryMaxDelayMs,
    shutdownTimeoutMs: _intOr(
      envOnly("SHUTDOWN_TIMEOUT_MS"),
      DEFAULTS.shutdownTimeoutMs,
      0,
      3_600_000,
    ),
    port: _intOr(envOnly("PORT"), DEFAULTS.port, 0, 65_535),
    host,
    kvPath,
    logLevel,
    adminToken: envOnly("ADMIN_TOKEN")?.value ?? null,
    webhookAllowedHosts: _hostList(envOnly("WEBHOOK_ALLOWED_HOSTS")),
    help: values.help === true,
  };
}

/** The `--help` text, listing the integrations that exist. */
export function usage(
  integrations: readonly { id: string; description: string }[],
  /** Variables of the integrations, listed under their own heading. */
  integrationVariables: readonly {
    heading: string;
    variables: readonly { name: string; description: string }[];
  }[] = [],
): string {
  const lines = [
    "Background Charm Service: runs charms on a schedule, with retries.",
    "",
    "Usage: deno task start [options]",
    "",
    "Options:",
    "  --charms=<space/charm>,...  Charms to run with the manual integration",
    "                              (space is a did:key; implies --integration=manual)",
    "  --interval=<seconds>        Fan-out interval (default 60); a divisor or",
    "                              multiple of 60: 1, 2, 3, 4, 5, 6, 10, 12, 15,",
    "                              20, 30, 60, 120, 180, 300, ...",
    "  --failures=<n>              Disable a charm after n consecutive failed",
    "                              slots (default 5)",
    "  --log-interval=<seconds>    Status log interval (default 300)",
    "  --integration=<name>[,...]  Integrations to run (default gmail)",
    "  --initialize                Create the integrations' registries, report",
    "                              missing configuration, and exit",
    "  --max-concurrent=<n>        Runs at once in this process (default 5)",
    "  --max-retries=<n>           Retries of a failed slot (default 3)",
    "  --demo                      Create three demo counter charms (implies",
    "                              --integration=manual)",
    "  -h, --help                  Show this help",
    "",
    "Available integrations:",
    ...integrations.map((i) => `  ${i.id.padEnd(28)}${i.description}`),
    "",
    "Environment variables (flags override them):",
    ...ENV_VARS.map(([name, text]) => `  ${name.padEnd(28)}${text}`),
    ...integrationVariables.flatMap(({ heading, variables }) => [
      "",
      `${heading}:`,
      ...variables.map((v) => `  ${v.name.padEnd(28)}${v.description}`),
    ]),
  ];
  return lines.join("\n");
}

function _parse(args: readonly string[]) {
  return parseArgs({
    args: [...args],
    options: FLAGS,
    strict: true,
    allowPositionals: false,
  });
}

type Source = { value: string; name: string } | null;

function _int(source: NonNullable<Source>, min: number, max: number): number {
  try {
    return parseIntegerOption(source.name, source.value, min, max);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

function _intOr(
  source: Source,
  fallback: number,
  min: number,
  max: number,
): number {
  return source === null ? fallback : _int(source, min, max);
}

/** A flag in seconds or a variable in milliseconds, returned in ms. */
function _duration(
  source: NonNullable<Source>,
  minSeconds: number,
  maxSeconds: number,
): number {
  if (source.name.startsWith("--")) {
    return _int(source, minSeconds, maxSeconds) * 1000;
  }
  return _int(source, minSeconds * 1000, maxSeconds * 1000);
}

function _interval(source: NonNullable<Source>): number {
  const ms = _duration(source, 1, 86_400);
  const seconds = ms / 1000;
  const accepted =
    "a whole number of seconds that divides 60 or is a multiple of 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, ...)";
  if (
    !Number.isInteger(seconds) || (60 % seconds !== 0 && seconds % 60 !== 0)
  ) {
    const shown = source.name.startsWith("--") ? `${seconds}s` : `${ms}ms`;
    throw new ConfigError(
      `${source.name}: ${shown} is not accepted; use ${accepted}`,
    );
  }
  return ms;
}

function _integrations(
  source: NonNullable<Source>,
  known: readonly string[],
): string[] {
  const ids = source.value.split(",").map((id) => id.trim()).filter((id) =>
    id !== ""
  );
  if (ids.length === 0) {
    throw new ConfigError(
      `${source.name}: empty; use one or more of ${known.join(", ")}`,
    );
  }
  for (const id of ids) {
    if (!known.includes(id)) {
      throw new ConfigError(
        `${source.name}: "${id}" is not an integration; use one or more of ${
          known.join(", ")
        }`,
      );
    }
  }
  return [...new Set(ids)];
}

function _charms(value: string): CharmRef[] {
  const entries = value.split(",").map((entry) => entry.trim()).filter((e) =>
    e !== ""
  );
  if (entries.length === 0) {
    throw new ConfigError(
      "--charms: empty; use <space/charm>,... with space a did:key",
    );
  }
  return entries.map((entry) => {
    try {
      return parseCharmRef(entry);
    } catch (error) {
      throw new ConfigError(`--charms: ${(error as Error).message}`);
    }
  });
}

function _oneOf<T extends string>(
  source: Source,
  values: readonly T[],
  fallback: T,
): T {
  if (source === null) return fallback;
  const value = source.value.trim().toLowerCase();
  if (!(values as readonly string[]).includes(value)) {
    throw new ConfigError(
      `${source.name}: "${source.value}" is not accepted; use one of ${
        values.join(", ")
      }`,
    );
  }
  return value as T;
}

function _hostList(source: Source): string[] {
  if (source === null) return [];
  try {
    return parseHostList(source.value);
  } catch (error) {
    throw new ConfigError(`${source.name}: ${(error as Error).message}`);
  }
}

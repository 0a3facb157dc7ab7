/**
 * The operator CLI: `deno task charms <command> [options]`. Talks to a running
 * service by URL, so it works against a deployed one as well as a local one.
 *
 * Exit codes: 0 done, 1 the service refused, could not be reached or did
 * not answer within the timeout (its message on one line), 2 bad flags,
 * arguments or key file.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { CHARM_STATUSES, parseCharmRef } from "../charm/charm.ts";
import { parseDidKey } from "../charm/did.ts";
import { MAX_PAGE_LIMIT } from "../http/page_limit.ts";
import { Identity } from "../identity/identity.ts";
import { MAX_TOKEN_TTL_SECONDS, mintToken } from "../identity/token.ts";
import {
  describeParseArgsError,
  parseChoiceOption,
  parseIntegerOption,
} from "../lib/parse_args_error.ts";
import {
  type ApiClient,
  CliError,
  createClient,
  DEFAULT_TIMEOUT_MS,
  usageError,
} from "./client.ts";
import { formatPairs, formatTable } from "./table.ts";

/** What the CLI reads and writes, injected for tests. */
export interface CliIo {
  env: Record<string, string | undefined>;
  stdout(line: string): void;
  stderr(line: string): void;
  readTextFile(path: string): Promise<string>;
  fetch?: typeof fetch;
  now?: () => number;
}

const DEFAULT_URL = "http://127.0.0.1:8000";

/** Longest `--timeout`, seconds. */
const MAX_TIMEOUT_SECONDS = 600;

const FLAGS = {
  url: { type: "string" },
  timeout: { type: "string" },
  token: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  passphrase: { type: "string" },
  "key-file": { type: "string" },
  derive: { type: "string" },
  audience: { type: "string" },
  ttl: { type: "string" },
  space: { type: "string" },
  status: { type: "string" },
  integration: { type: "string" },
  limit: { type: "string" },
  all: { type: "boolean" },
  recipe: { type: "string" },
  argument: { type: "string" },
  "charm-id": { type: "string" },
  add: { type: "string" },
  remove: { type: "string" },
} as const;

type Values = ReturnType<typeof _parse>["values"];

interface Context {
  io: CliIo;
  values: Values;
  args: string[];
  client: ApiClient;
  json: boolean;
}

const COMMANDS: Record<
  string,
  { usage: string; help: string; run: (ctx: Context) => Promise<void> }
> = {
  status: {
    usage: "status",
    help: "service health and counters, and the charms (operator) as tables",
    run: _status,
  },
  list: {
    usage:
      "list [--space=<did>] [--status=<s>] [--integration=<id>] [--limit=<n>] [--all]",
    help: "charms as a table (without --space: operator only)",
    run: _list,
  },
  show: {
    usage: "show <space>/<charmId>",
    help: "one charm: state, cells, integrations",
    run: _show,
  },
  create: {
    usage:
      "create --space=<did> --recipe=<name> [--argument=<json>] [--charm-id=<id>]",
    help: "create a charm",
    run: _create,
  },
  register: {
    usage: "register <integration> <space>/<charmId>",
    help: "register a charm with an integration (re-enables it)",
    run: _register,
  },
  run: {
    usage: "run <space>/<charmId>",
    help: "run a charm now",
    run: _runNow,
  },
  enable: {
    usage: "enable <space>/<charmId>",
    help: "enable a charm (resets its failure count)",
    run: (ctx) => _setDisabled(ctx, "enable"),
  },
  disable: {
    usage: "disable <space>/<charmId>",
    help: "disable a charm",
    run: (ctx) => _setDisabled(ctx, "disable"),
  },
  token: {
    usage:
      "token (--passphrase=<p> | --key-file=<pem>) [--derive=<name>] [--audience=<did>] [--ttl=<seconds>]",
    help:
      "mint a bearer token (default audience: the service's DID from /health)",
    run: _token,
  },
  did: {
    usage: "did (--passphrase=<p> | --key-file=<pem>) [--derive=<name>]",
    help: "print an identity's DID (a space is named by its owner's DID)",
    run: _did,
  },
  keygen: {
    usage: "keygen > space.pem",
    help: "print a new PKCS#8 Ed25519 key file (its DID goes to stderr)",
    run: _keygen,
  },
  delegates: {
    usage: "delegates <space> [--add=<did> | --remove=<did>]",
    help: "list, add or remove a space's delegates (space owner or operator)",
    run: _delegates,
  },
  "dead-letters": {
    usage: "dead-letters [--limit=<n>]",
    help: "list dead letters (operator)",
    run: _deadLetters,
  },
  replay: {
    usage: "replay <dead-letter-id>",
    help: "re-enqueue a dead letter's message (operator)",
    run: _replay,
  },
};

/** The `--help` text. */
function _usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    "Background Charm Service CLI",
    "",
    "Usage: deno task charms <command> [options]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) =>
      `  ${name.padEnd(width)}  ${c.help}\n  ${"".padEnd(width)}  ${c.usage}`
    ),
    "",
    "Options for every command:",
    `  --url=<url>          the service (default $BCS_URL or ${DEFAULT_URL})`,
    `  --timeout=<s>        give up on a request after this long (default`,
    `                       $BCS_TIMEOUT_MS in ms, else ${
      DEFAULT_TIMEOUT_MS / 1000
    } s)`,
    "  --token=<token>      bearer token: ADMIN_TOKEN or a minted one",
    "                       (default $BCS_TOKEN)",
    "  --passphrase=<p>     or --key-file=<pem>: mint a token for this identity",
    "                       instead (default $BCS_PASSPHRASE)",
    "  --json               print the service's JSON",
    "  -h, --help           this help",
  ].join("\n");
}

/**
 * Runs the CLI with `args`; returns the exit code. Errors are printed to
 * stderr as one line starting `error: `.
 */
export async function runCli(args: string[], io: CliIo): Promise<number> {
  try {
    let parsed: ReturnType<typeof _parse>;
    try {
      parsed = _parse(args);
    } catch (error) {
      throw usageError(describeParseArgsError(error));
    }
    const { values, positionals } = parsed;
    const [command, ...rest] = positionals;
    if (values.help || command === undefined || command === "help") {
      (command === undefined && !values.help ? io.stderr : io.stdout)(
        _usage(),
      );
      return command === undefined && !values.help ? 2 : 0;
    }
    const spec = COMMANDS[command];
    if (spec === undefined) {
      throw usageError(
        `"${command}" is not a command; use one of ${
          Object.keys(COMMANDS).join(", ")
        } (see --help)`,
      );
    }
    const { url, timeoutMs } = _checkFlags(values, io);
    let cached: Promise<string | null> | null = null;
    const ctx: Context = {
      io,
      values,
      args: rest,
      json: values.json === true,
      client: createClient({
        url,
        timeoutMs,
        ...(io.fetch ? { fetch: io.fetch } : {}),
        token: () => (cached ??= _bearer(ctx)),
      }),
    };
    await spec.run(ctx);
    return 0;
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`error: ${error.message}`);
      return error.exitCode;
    }
    io.stderr(
      `error: ${error instanceof Error ? error.message : String(error)}`,
    );
    return 1;
  }
}

function _parse(args: string[]) {
  return parseArgs({
    args,
    options: FLAGS,
    strict: true,
    allowPositionals: true,
  });
}

/**
 * Checks the flags every command shares, and their variables, before any
 * request: each problem is a usage error naming the flag or variable.
 */
function _checkFlags(
  values: Values,
  io: CliIo,
): { url: string; timeoutMs: number } {
  // An empty value is never meant: `--passphrase=` would sign with the
  // identity of the empty passphrase.
  for (const [name, value] of Object.entries(values)) {
    if (value === "") {
      // Most often "$VAR" with the variable unset.
      throw usageError(
        `--${name}: must not be empty (is the shell variable you passed unset?)`,
      );
    }
  }
  const urlSource = values.url !== undefined
    ? { name: "--url", value: values.url }
    : { name: "BCS_URL", value: _env(io, "BCS_URL") ?? DEFAULT_URL };
  let parsed: URL;
  try {
    parsed = new URL(urlSource.value);
  } catch {
    throw usageError(`${urlSource.name}: "${urlSource.value}" is not a URL`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw usageError(
      `${urlSource.name}: "${urlSource.value}" is not an http:// or https:// URL`,
    );
  }
  const timeoutMs = _option(() => {
    if (values.timeout !== undefined) {
      const seconds = parseIntegerOption(
        "--timeout",
        values.timeout,
        1,
        MAX_TIMEOUT_SECONDS,
      );
      return seconds * 1000;
    }
    const ms = _env(io, "BCS_TIMEOUT_MS");
    return ms === undefined
      ? DEFAULT_TIMEOUT_MS
      : parseIntegerOption("BCS_TIMEOUT_MS", ms, 1, MAX_TIMEOUT_SECONDS * 1000);
  });
  const { limit, status } = values;
  if (limit !== undefined) {
    _option(() => parseIntegerOption("--limit", limit, 1, MAX_PAGE_LIMIT));
  }
  if (status !== undefined) {
    _option(() => parseChoiceOption("--status", status, CHARM_STATUSES));
  }
  return { url: urlSource.value, timeoutMs };
}

/** `parse()`, its `RangeError` turned into a usage error. */
function _option<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof RangeError) throw usageError(error.message);
    throw error;
  }
}

function _env(io: CliIo, name: string): string | undefined {
  const value = io.env[name];
  return value === undefined || value === "" ? undefined : value;
}

/** The bearer token: --token, else one minted for --passphrase/--key-file. */
async function _bearer(ctx: Context): Promise<string | null> {
  const token = ctx.values.token ?? _env(ctx.io, "BCS_TOKEN");
  if (token !== undefined) return token;
  const identity = await _identity(ctx, false);
  if (identity === null) return null;
  const audience = await _serviceDid(ctx);
  return (await mintToken(identity, {
    audience,
    ttlSeconds: 300,
    ...(ctx.io.now ? { nowMs: ctx.io.now() } : {}),
  })).token;
}

/** The identity named by --passphrase / --key-file (and --derive). */
async function _identity(
  ctx: Context,
  required: boolean,
): Promise<Identity | null> {
  const { values, io } = ctx;
  const passphrase = values.passphrase ?? _env(io, "BCS_PASSPHRASE");
  const keyFile = values["key-file"];
  if (values.passphrase !== undefined && keyFile !== undefined) {
    throw usageError("--passphrase and --key-file: give one, not both");
  }
  let identity: Identity;
  if (keyFile !== undefined) {
    let pem: string;
    try {
      pem = await io.readTextFile(keyFile);
    } catch (error) {
      throw usageError(
        `--key-file: cannot read "${keyFile}": ${
          error instanceof Error ? error.message.split("\n")[0] : error
        }`,
      );
    }
    try {
      identity = await Identity.fromPkcs8Pem(pem);
    } catch (error) {
      throw usageError(
        `--key-file: "${keyFile}" is ${(error as Error).message}`,
      );
    }
  } else if (passphrase !== undefined) {
    identity = await Identity.fromPassphrase(passphrase);
  } else if (required) {
    throw usageError("give --passphrase=<p> or --key-file=<pem>");
  } else {
    return null;
  }
  return values.derive === undefined
    ? identity
    : await identity.derive(values.derive);
}

/** The service's DID, from `/health` (which answers even when unhealthy). */
async function _serviceDid(ctx: Context): Promise<string> {
  let body: unknown;
  try {
    body = await ctx.client.health();
  } catch (error) {
    throw new CliError(
      `cannot read the service's DID from ${ctx.client.url}/health: ${
        (error as Error).message
      } (give --audience, or set --url)`,
      1,
      { cause: error },
    );
  }
  const did = (body as { did?: unknown } | null)?.did;
  if (typeof did !== "string") {
    throw new CliError(
      `${ctx.client.url}/health does not name the service's DID; give --audience`,
      1,
    );
  }
  return did;
}

function _print(ctx: Context, json: unknown, human: () => string): void {
  ctx.io.stdout(ctx.json ? JSON.stringify(json, null, 2) : human());
}

function _onePositional(ctx: Context, what: string): string {
  if (ctx.args.length !== 1) {
    throw usageError(
      `expected ${what}, got ${
        ctx.args.length === 0
          ? "nothing"
          : ctx.args.map((a) => `"${a}"`).join(" ")
      }`,
    );
  }
  return ctx.args[0]!;
}

function _ref(ctx: Context): string {
  const entry = _onePositional(ctx, "<space>/<charmId>");
  try {
    const ref = parseCharmRef(entry);
    return `${encodeURIComponent(ref.space)}/${
      encodeURIComponent(ref.charmId)
    }`;
  } catch (error) {
    throw usageError((error as Error).message);
  }
}

function _didFlag(flag: string, value: string): string {
  try {
    return parseDidKey(value);
  } catch (error) {
    throw usageError(`${flag}: ${(error as Error).message}`);
  }
}

function _time(ms: unknown): string {
  return typeof ms === "number"
    ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z")
    : "never";
}

interface _CharmRow {
  space: string;
  charmId: string;
  recipe: string;
  status: string;
  state: {
    lastExecuted: number | null;
    consecutiveFailures: number;
    lastError: string | null;
  };
}

function _charmTable(charms: _CharmRow[]): string {
  if (charms.length === 0) return "(no charms)";
  return formatTable(
    [
      { heading: "STATUS" },
      { heading: "SPACE/CHARM" },
      { heading: "RECIPE" },
      { heading: "LAST RUN" },
      { heading: "FAILS" },
      { heading: "LAST ERROR", maxWidth: 60 },
    ],
    charms.map((c) => [
      c.status,
      `${c.space}/${c.charmId}`,
      c.recipe,
      _time(c.state.lastExecuted),
      String(c.state.consecutiveFailures),
      c.state.lastError ?? "",
    ]),
  );
}

async function _status(ctx: Context): Promise<void> {
  const { client } = ctx;
  const status = await client.request("GET", "/api/status");
  // The counters are worth showing even when /health does not answer.
  let healthError = "";
  const health = await client.health().catch((error: Error) => {
    healthError = error.message;
    return null;
  }) as { ok?: unknown; reason?: unknown } | null;
  let charms: _CharmRow[] | null = null;
  if ("queue" in status) {
    // The operator: the charms that need attention first.
    charms = [];
    for (const s of ["failing", "needs-reauth", "disabled", "ok"]) {
      const page = await client.request(
        "GET",
        `/api/charms?status=${s}&limit=50`,
      );
      charms.push(...page.charms);
    }
  }
  _print(ctx, { health, status, charms }, () => {
    const c = status.charms;
    const pairs: [string, string][] = [
      ["service", `${client.url} (version ${status.version})`],
      ["did", String(status.did)],
      [
        "health",
        health === null
          ? `unknown: ${healthError}`
          : health.ok
          ? "ok"
          : `NOT OK: ${health.reason}`,
      ],
      [
        "charms",
        `${c.total} total, ${c.enabled} enabled, ${c.disabled} disabled`,
      ],
      ["cycles", String(status.cyclesCompleted)],
      [
        "runs",
        `${status.totalCharmsProcessed} processed, ${status.totalSuccesses} succeeded, ${status.totalFailures} failed`,
      ],
    ];
    if ("queue" in status) {
      pairs.push(
        ["last tick", _time(status.lastTickAt)],
        ["dead letters", String(status.deadLetters)],
        [
          "queue",
          `${status.queue.driver}, ${status.queue.runsInProcess} running`,
        ],
        ["integrations", status.integrations.join(", ") || "(none)"],
      );
    }
    const out = formatPairs(pairs);
    return charms === null
      ? `${out}\n\n(charms: operator only; use list --space=<did>)`
      : `${out}\n\n${_charmTable(charms)}`;
  });
}

async function _list(ctx: Context): Promise<void> {
  const { values } = ctx;
  if (ctx.args.length > 0) throw usageError(`list takes no arguments`);
  const query = new URLSearchParams();
  if (values.space !== undefined) {
    query.set("space", _didFlag("--space", values.space));
  }
  // --status and --limit were checked with the other flags.
  if (values.status !== undefined) query.set("status", values.status);
  if (values.integration !== undefined) {
    query.set("integration", values.integration);
  }
  if (values.limit !== undefined) query.set("limit", values.limit.trim());
  const charms: _CharmRow[] = [];
  let cursor: string | null = null;
  do {
    if (cursor !== null) query.set("cursor", cursor);
    const page: { charms: _CharmRow[]; cursor: string | null } = await ctx
      .client.request("GET", `/api/charms${query.size ? `?${query}` : ""}`);
    charms.push(...page.charms);
    cursor = page.cursor;
  } while (cursor !== null && values.all === true);
  _print(ctx, { charms, cursor }, () =>
    _charmTable(charms) +
    (cursor !== null ? "\n(more: add --all, or --limit)" : ""));
}

async function _show(ctx: Context): Promise<void> {
  const path = `/api/charms/${_ref(ctx)}`;
  const detail = await ctx.client.request("GET", path);
  _print(ctx, detail, () => {
    const s = detail.state;
    return formatPairs([
      ["charm", `${detail.space}/${detail.charmId}`],
      [
        "recipe",
        `${detail.recipe}${
          detail.recipeDescription ? ` (${detail.recipeDescription})` : ""
        }`,
      ],
      [
        "status",
        detail.status + (s.disabledReason ? `: ${s.disabledReason}` : ""),
      ],
      ["created", _time(detail.createdAt)],
      ["last run", _time(s.lastExecuted)],
      [
        "failures",
        `${s.consecutiveFailures} consecutive, ${s.totalFailures} total`,
      ],
      ["successes", String(s.totalSuccesses)],
      ["last error", s.lastError ?? "-"],
      ["integrations", detail.integrations.join(", ") || "(none)"],
      ["argument", JSON.stringify(detail.cells.argument)],
      ["result", JSON.stringify(detail.cells.result)],
    ]);
  });
}

async function _create(ctx: Context): Promise<void> {
  const { values } = ctx;
  if (values.space === undefined) throw usageError("--space: required");
  if (values.recipe === undefined) throw usageError("--recipe: required");
  let argument: unknown;
  if (values.argument !== undefined) {
    try {
      argument = JSON.parse(values.argument);
    } catch {
      throw usageError(`--argument: not JSON: ${values.argument.slice(0, 60)}`);
    }
  }
  const body = {
    space: _didFlag("--space", values.space),
    recipe: values.recipe,
    ...(argument !== undefined ? { argument } : {}),
    ...(values["charm-id"] !== undefined
      ? { charmId: values["charm-id"] }
      : {}),
  };
  const created = await ctx.client.request("POST", "/api/charms", body);
  _print(ctx, created, () => `created ${created.space}/${created.charmId}`);
}

async function _register(ctx: Context): Promise<void> {
  if (ctx.args.length !== 2) {
    throw usageError("expected <integration> <space>/<charmId>");
  }
  const [integration, entry] = ctx.args as [string, string];
  let ref;
  try {
    ref = parseCharmRef(entry);
  } catch (error) {
    throw usageError((error as Error).message);
  }
  const result = await ctx.client.request(
    "POST",
    `/api/integrations/${encodeURIComponent(integration)}/charms`,
    ref,
  );
  _print(
    ctx,
    result,
    () =>
      `${
        result.added ? "registered" : "already registered"
      } ${ref.space}/${ref.charmId} with ${integration}${
        result.reenabled ? " (re-enabled)" : ""
      }`,
  );
}

async function _runNow(ctx: Context): Promise<void> {
  const path = `/api/charms/${_ref(ctx)}/run`;
  const result = await ctx.client.request("POST", path);
  _print(ctx, result, () => `enqueued run ${result.runId}`);
}

async function _setDisabled(
  ctx: Context,
  action: "enable" | "disable",
): Promise<void> {
  const path = `/api/charms/${_ref(ctx)}/${action}`;
  const result = await ctx.client.request("POST", path);
  _print(ctx, result, () => `${action}d: status ${result.status}`);
}

async function _token(ctx: Context): Promise<void> {
  const identity = (await _identity(ctx, true))!;
  const audience = ctx.values.audience !== undefined
    ? _didFlag("--audience", ctx.values.audience)
    : await _serviceDid(ctx);
  let ttlSeconds = MAX_TOKEN_TTL_SECONDS;
  if (ctx.values.ttl !== undefined) {
    ttlSeconds = Number(ctx.values.ttl);
    if (
      !/^\d+$/.test(ctx.values.ttl) || ttlSeconds < 1 ||
      ttlSeconds > MAX_TOKEN_TTL_SECONDS
    ) {
      throw usageError(
        `--ttl: "${ctx.values.ttl}" is not a whole number of seconds from 1 to ${MAX_TOKEN_TTL_SECONDS}`,
      );
    }
  }
  const minted = await mintToken(identity, {
    audience,
    ttlSeconds,
    ...(ctx.io.now ? { nowMs: ctx.io.now() } : {}),
  });
  _print(ctx, minted, () => minted.token);
}

async function _did(ctx: Context): Promise<void> {
  const identity = (await _identity(ctx, true))!;
  _print(ctx, { did: identity.did }, () => identity.did);
}

async function _keygen(ctx: Context): Promise<void> {
  const identity = await Identity.generate();
  ctx.io.stdout(identity.toPkcs8Pem().trimEnd());
  ctx.io.stderr(`did: ${identity.did}`);
}

async function _delegates(ctx: Context): Promise<void> {
  const space = _didFlag("space", _onePositional(ctx, "<space>"));
  const base = `/api/spaces/${encodeURIComponent(space)}/delegates`;
  const { add, remove } = ctx.values;
  if (add !== undefined && remove !== undefined) {
    throw usageError("--add and --remove: give one, not both");
  }
  if (add !== undefined) {
    const result = await ctx.client.request("POST", base, {
      did: _didFlag("--add", add),
    });
    _print(
      ctx,
      result,
      () => `${result.added ? "added" : "already a delegate:"} ${result.did}`,
    );
    return;
  }
  if (remove !== undefined) {
    const did = _didFlag("--remove", remove);
    const result = await ctx.client.request(
      "DELETE",
      `${base}/${encodeURIComponent(did)}`,
    );
    _print(
      ctx,
      result,
      () => `${result.removed ? "removed" : "was not a delegate:"} ${did}`,
    );
    return;
  }
  const result = await ctx.client.request("GET", base);
  _print(
    ctx,
    result,
    () =>
      result.delegates.length === 0 ? "(no delegates)" : formatTable(
        [{ heading: "DID" }, { heading: "ADDED" }, { heading: "BY" }],
        result.delegates.map((
          d: { did: string; addedAt: number; addedBy: string },
        ) => [d.did, _time(d.addedAt), d.addedBy]),
      ),
  );
}

async function _deadLetters(ctx: Context): Promise<void> {
  const limit = ctx.values.limit?.trim() ?? "50";
  const result = await ctx.client.request(
    "GET",
    `/api/dead-letters?limit=${limit}`,
  );
  _print(
    ctx,
    result,
    () =>
      result.deadLetters.length === 0 ? "(no dead letters)" : formatTable(
        [
          { heading: "ID" },
          { heading: "AT" },
          { heading: "REASON", maxWidth: 70 },
        ],
        result.deadLetters.map((
          l: { id: string; at: number; reason: string },
        ) => [l.id, _time(l.at), l.reason]),
      ),
  );
}

async function _replay(ctx: Context): Promise<void> {
  const id = _onePositional(ctx, "<dead-letter-id>");
  const result = await ctx.client.request(
    "POST",
    `/api/dead-letters/${encodeURIComponent(id)}/replay`,
  );
  _print(
    ctx,
    result,
    () => `replayed ${id}: ${result.message.space}/${result.message.charmId}`,
  );
}

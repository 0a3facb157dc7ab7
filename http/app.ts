/**
 * The HTTP API: health, status, charms, integration registries, manual runs,
 * fan-outs by hand and dead letters, as JSON over hono.
 *
 * Every error leaves as `{"error": "<field>: <problem>"}`; the mapping from
 * thrown errors to statuses lives in one place ({@linkcode createApp}'s
 * `onError`): `TypeError` / `RangeError` / `ZodError` are 400,
 * `NotFoundError` 404, `ConflictError` 409, anything else 500 with no detail
 * (it is logged instead).
 *
 * When an admin token is configured, every non-GET `/api/*` request needs
 * `Authorization: Bearer <token>`; reads stay open.
 *
 * @module
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { z } from "zod";
import {
  CHARM_STATUSES,
  type CharmRef,
  type CharmStatus,
  charmStatus,
  formatCharmRef,
  newCharmId,
  parseCharmId,
} from "../charm/charm.ts";
import { isDidKey, parseDidKey } from "../charm/did.ts";
import { runKeyOf, type RunMessage } from "../handlers/messages.ts";
import { tick } from "../handlers/tick.ts";
import { ConflictError, NotFoundError, toError } from "../lib/errors.ts";
import { logger } from "../lib/log.ts";
import type { ServiceDeps } from "../service/deps.ts";
import {
  createCharm,
  getCharmDetail,
  getCharmSummary,
  listCharms,
  registerCharm,
  setCharmDisabled,
  unregisterCharm,
} from "../store/charms.ts";
import { listDeadLetters } from "../store/dead_letters.ts";
import { undeliveredKey } from "../store/keys.ts";
import { readServiceState } from "../store/service_state.ts";

/** Options for {@linkcode createApp}. */
export interface AppOptions {
  /** Bearer token required for non-GET `/api/*` requests; `null` for none. */
  adminToken: string | null;
  /** Service version, shown by `/health` and `/api/status`. */
  version: string;
  /** When this process started, epoch ms. */
  startedAt: number;
  /** `/health` fails when the last cron tick is older than this. */
  healthMaxTickAgeMs: number;
}

/** Largest request body accepted, bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/** Page size when `?limit=` is absent. */
export const DEFAULT_PAGE_LIMIT = 50;

/** Largest `?limit=` accepted. */
export const MAX_PAGE_LIMIT = 1000;

const CHARM_ID_MESSAGE =
  "must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit";

const spaceSchema = _requiredString().refine(isDidKey, {
  error: "must be an Ed25519 did:key",
});

const charmIdSchema = _requiredString().refine(_isCharmId, {
  error: CHARM_ID_MESSAGE,
});

const createCharmBodySchema = z.object({
  space: spaceSchema,
  recipe: _requiredString().min(1, { error: "must not be empty" }),
  argument: z.unknown().optional(),
  charmId: charmIdSchema.optional(),
}).strict();

const charmRefBodySchema = z.object({
  space: spaceSchema,
  charmId: charmIdSchema,
}).strict();

const fanoutBodySchema = z.object({
  integration: _requiredString().optional(),
}).strict();

/**
 * Builds the HTTP API over `deps`.
 *
 * @example
 * ```ts ignore
 * const app = createApp(deps, {
 *   adminToken: null,
 *   version: "1.0.0",
 *   startedAt: Date.now(),
 *   healthMaxTickAgeMs: 180_000,
 * });
 * Deno.serve(app.fetch);
 * ```
 */
export function createApp(deps: ServiceDeps, options: AppOptions): Hono {
  const { kv } = deps;
  const log = logger("http");
  const app = new Hono();

  app.use("*", _requestLog());
  app.use("/api/*", _bearerAuth(options.adminToken));
  app.use(
    "*",
    bodyLimit({
      maxSize: MAX_BODY_BYTES,
      onError: (c) =>
        c.json({ error: `body: must be at most ${MAX_BODY_BYTES} bytes` }, 413),
    }),
  );

  app.get("/health", async (c) => {
    let lastTickAt: number | null;
    try {
      ({ lastTickAt } = await readServiceState(kv));
    } catch (error) {
      log.warn("Health check cannot read KV: {error}", { error });
      return c.json({
        ok: false,
        kv: "error",
        reason: `KV unreachable: ${toError(error).message}`,
        version: options.version,
      }, 503);
    }
    const now = deps.now();
    // Before the first tick, the process's own age stands in for the tick's.
    const age = now - (lastTickAt ?? options.startedAt);
    const fresh = lastTickAt === null
      ? age < options.healthMaxTickAgeMs
      : age <= options.healthMaxTickAgeMs;
    if (!fresh) {
      return c.json({
        ok: false,
        kv: "ok",
        reason: `no cron tick for ${Math.round(age / 1000)} s` +
          (lastTickAt === null ? " (none since start)" : ""),
        lastTickAt,
        version: options.version,
      }, 503);
    }
    return c.json({ ok: true, kv: "ok", lastTickAt, version: options.version });
  });

  app.get("/api/status", async (c) => {
    const state = await readServiceState(kv);
    return c.json({
      ...state,
      version: options.version,
      startTime: options.startedAt,
      queue: {
        driver: deps.queue.name,
        runsInProcess: deps.semaphore.inUse,
        waiting: deps.semaphore.waiting,
      },
      integrations: [...deps.integrations.keys()],
    });
  });

  app.get("/api/charms", async (c) => {
    const limit = _limitParam(c.req.query("limit"));
    const status = _statusParam(c.req.query("status"));
    const integration = _nonEmpty(c.req.query("integration"));
    if (integration !== undefined && !deps.allIntegrations.has(integration)) {
      throw new TypeError(
        `integration: unknown integration "${_clip(integration)}"; known: ${
          [...deps.allIntegrations.keys()].join(", ")
        }`,
      );
    }
    const cursor = _nonEmpty(c.req.query("cursor"));
    const page = await listCharms(kv, {
      limit,
      ...(status !== undefined ? { status } : {}),
      ...(integration !== undefined ? { integration } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
    });
    return c.json(page);
  });

  app.post("/api/charms", async (c) => {
    const body = createCharmBodySchema.parse(await _jsonBody(c, false));
    const recipe = deps.recipes.get(body.recipe);
    if (recipe === undefined) {
      throw new TypeError(
        `recipe: unknown recipe "${_clip(body.recipe)}"; known recipes: ${
          [...deps.recipes.keys()].join(", ")
        }`,
      );
    }
    const ref: CharmRef = {
      space: parseDidKey(body.space),
      charmId: body.charmId ?? newCharmId(),
    };
    await createCharm(kv, ref, recipe, body.argument, deps.now());
    log.info("Created charm {charm} with recipe {recipe}", {
      charm: formatCharmRef(ref),
      recipe: recipe.name,
    });
    return c.json({ space: ref.space, charmId: ref.charmId }, 201);
  });

  app.get("/api/charms/:space/:charmId", async (c) => {
    const ref = _refParams(c);
    const detail = await getCharmDetail(kv, ref);
    if (detail === null) throw _charmNotFound(ref);
    return c.json({
      ...detail,
      recipeDescription: deps.recipes.get(detail.recipe)?.description ?? null,
    });
  });

  app.post("/api/charms/:space/:charmId/run", async (c) => {
    const ref = _refParams(c);
    const charm = await getCharmSummary(kv, ref);
    if (charm === null) throw _charmNotFound(ref);
    if (charm.state.disabled) {
      throw new ConflictError(
        `Cannot run charm ${
          formatCharmRef(ref)
        }: it is disabled; enable it first`,
      );
    }
    // A charm disabled between this check and the delivery is skipped by the
    // run handler, which reads the state again.
    const now = deps.now();
    const message: RunMessage = {
      type: "run",
      v: 1,
      space: ref.space,
      charmId: ref.charmId,
      integration: null,
      kind: "manual",
      slot: now,
      runId: crypto.randomUUID(),
      attempt: 1,
      enqueuedAt: now,
    };
    const { ok } = await deps.queue.enqueue(kv.atomic(), message, {
      delayMs: 0,
      undeliveredKey: undeliveredKey(ref, runKeyOf(message), 1),
    }).commit();
    if (!ok) {
      throw new Error(
        `Cannot enqueue a run of ${formatCharmRef(ref)}: commit failed`,
      );
    }
    log.info("Enqueued manual run {runId} of {charm}", {
      runId: message.runId,
      charm: formatCharmRef(ref),
    });
    return c.json({ runId: message.runId }, 202);
  });

  for (const action of ["enable", "disable"] as const) {
    app.post(`/api/charms/:space/:charmId/${action}`, async (c) => {
      const ref = _refParams(c);
      const state = await setCharmDisabled(
        kv,
        ref,
        action === "disable",
        "disabled by operator",
      );
      log.info("Operator {action}d charm {charm}", {
        action,
        charm: formatCharmRef(ref),
      });
      return c.json({ status: charmStatus(state), state });
    });
  }

  app.post("/api/integrations/:id/charms", async (c) => {
    const integration = _knownIntegration(deps, c.req.param("id"));
    const body = charmRefBodySchema.parse(await _jsonBody(c, false));
    const ref: CharmRef = {
      space: parseDidKey(body.space),
      charmId: body.charmId,
    };
    const summary = await getCharmSummary(kv, ref);
    if (summary === null) {
      throw new NotFoundError(`Charm ${formatCharmRef(ref)} does not exist`);
    }
    const recipe = deps.recipes.get(summary.recipe);
    const validity = recipe === undefined
      ? {
        ok: false as const,
        reason: `recipe "${summary.recipe}" is not registered`,
      }
      : deps.allIntegrations.get(integration)!.getIntegrationConfig()
        .isValidIntegrationCharm(summary, recipe);
    if (!validity.ok) {
      throw new TypeError(
        `charmId: cannot run under ${integration}: ${validity.reason}`,
      );
    }
    const result = await registerCharm(kv, integration, ref, deps.now());
    log.info("Registered {charm} with {integration}: {result}", {
      charm: formatCharmRef(ref),
      integration,
      result,
    });
    return c.json(result);
  });

  app.delete("/api/integrations/:id/charms/:space/:charmId", async (c) => {
    const integration = _knownIntegration(deps, c.req.param("id"));
    const ref = _refParams(c);
    const removed = await unregisterCharm(kv, integration, ref);
    log.info("Unregistered {charm} from {integration}: {removed}", {
      charm: formatCharmRef(ref),
      integration,
      removed,
    });
    return c.json({ removed });
  });

  app.post("/api/fanout", async (c) => {
    const body = fanoutBodySchema.parse(await _jsonBody(c, true));
    if (
      body.integration !== undefined && !deps.integrations.has(body.integration)
    ) {
      throw new TypeError(
        `integration: "${_clip(body.integration)}" is not enabled; enabled: ${
          [...deps.integrations.keys()].join(", ") || "(none)"
        }`,
      );
    }
    const results = await tick(deps, {
      mode: "now",
      ...(body.integration !== undefined
        ? { integration: body.integration }
        : {}),
    });
    return c.json({ results });
  });

  app.get("/api/dead-letters", async (c) => {
    const limit = _limitParam(c.req.query("limit"));
    const cursor = _nonEmpty(c.req.query("cursor"));
    return c.json(
      await listDeadLetters(kv, {
        limit,
        ...(cursor !== undefined ? { cursor } : {}),
      }),
    );
  });

  app.notFound((c) =>
    c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404)
  );

  app.onError((error, c) => {
    if (error instanceof z.ZodError) {
      return c.json({ error: _formatZodError(error) }, 400);
    }
    if (error instanceof TypeError || error instanceof RangeError) {
      return c.json({ error: error.message }, 400);
    }
    if (error instanceof NotFoundError) {
      return c.json({ error: error.message }, 404);
    }
    if (error instanceof ConflictError) {
      return c.json({ error: error.message }, 409);
    }
    if (error instanceof HTTPException) {
      return c.json({ error: error.message || "request failed" }, error.status);
    }
    log.error("{method} {path} failed: {error}", {
      method: c.req.method,
      path: c.req.path,
      error,
    });
    return c.json({ error: "internal error" }, 500);
  });

  return app;
}

/** Logs every request at debug: method, path, status, duration. */
function _requestLog(): MiddlewareHandler {
  const log = logger("http");
  return async (c, next) => {
    const start = performance.now();
    await next();
    log.debug("{method} {path} {status} {ms} ms", {
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round(performance.now() - start),
    });
  };
}

/** Requires the bearer token on writes when one is configured. */
function _bearerAuth(token: string | null): MiddlewareHandler {
  return async (c, next) => {
    if (token === null || c.req.method === "GET" || c.req.method === "HEAD") {
      return await next();
    }
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(header);
    const challenge = { "WWW-Authenticate": 'Bearer realm="bcs"' };
    if (match === null) {
      return c.json({ error: "missing bearer token" }, 401, challenge);
    }
    if (!(await _timingSafeEqual(match[1]!.trim(), token))) {
      return c.json({ error: "invalid bearer token" }, 401, challenge);
    }
    return await next();
  };
}

/**
 * Compares two strings in time independent of where they differ: both are
 * hashed first, so the comparison runs over equal-length digests.
 */
async function _timingSafeEqual(a: string, b: string): Promise<boolean> {
  const encoder = new TextEncoder();
  const [da, db] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(a)),
    crypto.subtle.digest("SHA-256", encoder.encode(b)),
  ]);
  const x = new Uint8Array(da);
  const y = new Uint8Array(db);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ y[i]!;
  return diff === 0;
}

/**
 * Reads the body as a JSON object. An empty body is `{}` when `optional`.
 *
 * @throws {TypeError} when the body is not a JSON object.
 */
async function _jsonBody(
  c: Context,
  optional: boolean,
): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (optional && text.trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new TypeError("body: must be a JSON object", { cause: error });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError("body: must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** The charm named by the `:space` and `:charmId` path parameters. */
function _refParams(c: Context): CharmRef {
  return {
    space: _field("space", parseDidKey, c.req.param("space") ?? ""),
    charmId: _field("charmId", parseCharmId, c.req.param("charmId") ?? ""),
  };
}

/** Runs `parse`, prefixing a failure's message with the field name. */
function _field<T>(
  name: string,
  parse: (value: string) => T,
  value: string,
): T {
  try {
    return parse(value);
  } catch (error) {
    throw new TypeError(`${name}: ${toError(error).message}`, { cause: error });
  }
}

/** The integration id from the path, if it exists (enabled or not). */
function _knownIntegration(deps: ServiceDeps, id: string | undefined): string {
  if (id === undefined || !deps.allIntegrations.has(id)) {
    throw new NotFoundError(
      `integration: unknown integration "${_clip(id ?? "")}"; known: ${
        [...deps.allIntegrations.keys()].join(", ")
      }`,
    );
  }
  return id;
}

function _charmNotFound(ref: CharmRef): NotFoundError {
  return new NotFoundError(`Charm ${formatCharmRef(ref)} does not exist`);
}

function _limitParam(value: string | undefined): number {
  if (value === undefined || value === "") return DEFAULT_PAGE_LIMIT;
  const limit = Number(value);
  if (!/^\d+$/.test(value) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw new TypeError(
      `limit: must be an integer from 1 to ${MAX_PAGE_LIMIT}, got "${
        _clip(value)
      }"`,
    );
  }
  return limit;
}

function _statusParam(value: string | undefined): CharmStatus | undefined {
  if (value === undefined || value === "") return undefined;
  const status = CHARM_STATUSES.find((s) => s === value);
  if (status === undefined) {
    throw new TypeError(
      `status: must be one of ${CHARM_STATUSES.join(", ")}, got "${
        _clip(value)
      }"`,
    );
  }
  return status;
}

function _nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function _isCharmId(value: string): boolean {
  try {
    parseCharmId(value);
    return true;
  } catch {
    return false;
  }
}

/** A string schema whose type error says "is required" when absent. */
function _requiredString() {
  return z.string({
    error: (issue) =>
      issue.input === undefined ? "is required" : "must be a string",
  });
}

/** `field: problem` for each issue, `body` for issues on the whole object. */
function _formatZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) =>
      `${issue.path.length ? issue.path.join(".") : "body"}: ${issue.message}`
    )
    .join("; ");
}

function _clip(value: string): string {
  return value.length > 60 ? `${value.slice(0, 57)}...` : value;
}

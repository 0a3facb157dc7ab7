/**
 * The HTTP API: health, status, charms, integration registries, manual runs,
 * fan-outs by hand, space delegates and dead letters, as JSON over hono; and
 * the operator's dashboard at `/`.
 *
 * Every error leaves as `{"error": "<field>: <problem>"}`; the mapping from
 * thrown errors to statuses lives in one place ({@linkcode createApp}'s
 * `onError`): `TypeError` / `RangeError` / `ZodError` are 400,
 * `UnauthenticatedError` 401 and `ForbiddenError` 403 (both with a `reason`),
 * `NotFoundError` 404, `ConflictError` 409, anything else 500 with no detail
 * (it is logged instead).
 *
 * Who may do what (`http/auth.ts` says who is asking): `/health` and the
 * aggregate counts of `/api/status` are public; a space's charms, cells,
 * state and registrations need the operator, the space's own identity or
 * one of its delegates; a space's delegates need the operator or the space's
 * owner; listings across spaces, fan-outs and dead letters need the
 * operator. With no `ADMIN_TOKEN` and not exposed, anonymous requests are
 * the operator (local development).
 *
 * @module
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
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
import { type DidKey, isDidKey, parseDidKey } from "../charm/did.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
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
  shownState,
  unregisterCharm,
} from "../store/charms.ts";
import { redactCell } from "../store/cell_codec.ts";
import { replayDeadLetter } from "../store/dead_letter_replay.ts";
import { listDeadLetters } from "../store/dead_letters.ts";
import {
  addDelegate,
  listDelegates,
  removeDelegate,
} from "../store/delegates.ts";
import { replaceCharmArgument } from "../store/charm_argument.ts";
import { readServiceState } from "../store/service_state.ts";
import {
  authenticate,
  ForbiddenError,
  isLocalRequest,
  missingToken,
  namesThisMachine,
  type Principal,
  principalName,
  requireOperator,
  requireSpace,
  UnauthenticatedError,
} from "./auth.ts";
import { bodyLimit } from "./body_limit.ts";
import { enqueueManualRun, setDisabledByHand } from "./charm_actions.ts";
import { registerDashboard } from "./dashboard.ts";
import { readHealth } from "./health.ts";
import { DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT } from "./page_limit.ts";

/** Options for {@linkcode createApp}. */
export interface AppOptions {
  /** The operator's bearer token (`ADMIN_TOKEN`); `null` for none. */
  adminToken: string | null;
  /** The service's DID: identity tokens name it as their audience. */
  serviceDid: DidKey;
  /**
   * Reachable from other machines (on Deno Deploy, or listening beyond
   * loopback: `isExposed`): anonymous requests are never the operator, even
   * without an admin token.
   */
  exposed: boolean;
  /** Service version, shown by `/health` and `/api/status`. */
  version: string;
  /** When this process started, epoch ms. */
  startedAt: number;
  /** `/health` fails when the last cron tick is older than this. */
  healthMaxTickAgeMs: number;
}

/** Largest request body accepted, bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

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

const delegateBodySchema = z.object({
  did: spaceSchema,
}).strict();

/** The hono environment of the app: the principal of each request. */
export type AppEnv = { Variables: { principal: Principal } };

/**
 * Builds the HTTP API over `deps`.
 *
 * @example
 * ```ts ignore
 * const app = createApp(deps, {
 *   adminToken: null,
 *   serviceDid: identity.did,
 *   exposed: false,
 *   version: "1.0.0",
 *   startedAt: Date.now(),
 *   healthMaxTickAgeMs: 180_000,
 * });
 * Deno.serve(app.fetch);
 * ```
 */
export function createApp(
  deps: ServiceDeps,
  options: AppOptions,
): Hono<AppEnv> {
  const { kv } = deps;
  const log = logger("http");
  const app = new Hono<AppEnv>();
  const authOptions = {
    adminToken: options.adminToken,
    serviceDid: options.serviceDid,
    openAccess: options.adminToken === null && !options.exposed,
    now: deps.now,
  };

  app.use("*", _requestLog());
  if (authOptions.openAccess) {
    // Local development answers only to this machine's names: a page whose
    // DNS name was rebound to 127.0.0.1 could otherwise send anything, a
    // token signed with the public development identity included.
    app.use("*", async (c, next) => {
      const host = c.req.header("host") ?? new URL(c.req.url).host;
      if (c.req.path !== "/health" && !namesThisMachine(host)) {
        return c.json({
          error: `host: "${
            host.slice(0, 100)
          }" is not this machine; without ADMIN_TOKEN the service answers only to localhost and loopback addresses (set ADMIN_TOKEN to serve other names)`,
          reason: "forbidden",
        }, 403);
      }
      await next();
    });
  }
  app.use("*", async (c, next) => {
    // `/health` answers probes whatever they send; everything else needs a
    // presented token to be valid.
    // Open access is for the person at this machine: not for a page they
    // visit that posts to localhost, nor for a name rebound to 127.0.0.1.
    const openAccess = authOptions.openAccess && isLocalRequest({
      method: c.req.method,
      url: c.req.url,
      host: c.req.header("host"),
      origin: c.req.header("origin"),
      secFetchSite: c.req.header("sec-fetch-site"),
      forwarded: c.req.header("forwarded") !== undefined ||
        c.req.header("x-forwarded-for") !== undefined,
    });
    c.set(
      "principal",
      c.req.path === "/health"
        ? { kind: "anonymous" }
        : await authenticate(c.req.header("authorization"), {
          ...authOptions,
          openAccess,
        }),
    );
    await next();
  });
  // The API is for callers who say who they are; only the status is public.
  app.use("/api/*", async (c, next) => {
    const isPublic = c.req.method === "GET" && c.req.path === "/api/status";
    if (!isPublic && c.get("principal").kind === "anonymous") {
      throw missingToken();
    }
    await next();
  });
  app.use(
    "*",
    bodyLimit(
      MAX_BODY_BYTES,
      (c) =>
        c.json({ error: `body: must be at most ${MAX_BODY_BYTES} bytes` }, 413),
    ),
  );

  app.get("/health", async (c) => {
    const health = await readHealth(kv, deps.now(), options);
    return c.json({
      ...health,
      version: options.version,
      did: options.serviceDid,
    }, health.ok ? 200 : 503);
  });

  app.get("/api/status", async (c) => {
    const state = await readServiceState(kv);
    if (c.get("principal").kind !== "operator") {
      // The public sees aggregate counts only.
      return c.json({
        version: options.version,
        did: options.serviceDid,
        charms: state.charms,
        cyclesCompleted: state.cyclesCompleted,
        totalCharmsProcessed: state.totalCharmsProcessed,
        totalSuccesses: state.totalSuccesses,
        totalFailures: state.totalFailures,
      });
    }
    return c.json({
      ...state,
      version: options.version,
      did: options.serviceDid,
      startTime: options.startedAt,
      queue: {
        driver: deps.queue.name,
        runsInProcess: deps.semaphore.inUse,
        waiting: deps.semaphore.waiting,
        // Only the kv driver can see its backlog; the native queue cannot.
        depth: deps.queue.depth ? await deps.queue.depth() : null,
      },
      integrations: [...deps.integrations.keys()],
      // The settings in effect (flags and variables as parsed), so an
      // operator need not read the process's command line.
      policy: {
        intervalMs: deps.policy.intervalMs,
        maxConsecutiveFailures: deps.policy.maxConsecutiveFailures,
        maxRetries: deps.policy.maxRetries,
        maxConcurrent: deps.semaphore.limit,
        charmExecutionTimeoutMs: deps.policy.charmExecutionTimeoutMs,
        retryBaseDelayMs: deps.policy.retryBaseDelayMs,
        retryMaxDelayMs: deps.policy.retryMaxDelayMs,
      },
    });
  });

  app.get("/api/charms", async (c) => {
    const spaceParam = _nonEmpty(c.req.query("space"));
    const space = spaceParam === undefined
      ? undefined
      : _field("space", parseDidKey, spaceParam);
    if (space === undefined) {
      requireOperator(
        c.get("principal"),
        "list charms across spaces (add ?space=<did>)",
      );
    } else {
      await requireSpace(
        kv,
        c.get("principal"),
        space,
        `list the charms of space ${space}`,
      );
    }
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
      ...(space !== undefined ? { space } : {}),
      ...(status !== undefined ? { status } : {}),
      ...(integration !== undefined ? { integration } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
    });
    return c.json(page);
  });

  app.post("/api/charms", async (c) => {
    const body = createCharmBodySchema.parse(await _jsonBody(c, false));
    const space = parseDidKey(body.space);
    await requireSpace(
      kv,
      c.get("principal"),
      space,
      `create a charm in space ${space}`,
    );
    const recipe = deps.recipes.get(body.recipe);
    if (recipe === undefined) {
      throw new TypeError(
        `recipe: unknown recipe "${_clip(body.recipe)}"; known recipes: ${
          [...deps.recipes.keys()].join(", ")
        }`,
      );
    }
    const ref: CharmRef = { space, charmId: body.charmId ?? newCharmId() };
    await createCharm(
      kv,
      ref,
      recipe,
      body.argument,
      deps.now(),
      deps.secrets,
      _checkArgument,
    );
    log.info("Created charm {charm} with recipe {recipe}", {
      charm: formatCharmRef(ref),
      recipe: recipe.name,
    });
    return c.json({ space: ref.space, charmId: ref.charmId }, 201);
  });

  app.get("/api/charms/:space/:charmId", async (c) => {
    const ref = await _authorizedRef(c, "read charm");
    const detail = await getCharmDetail(kv, ref);
    if (detail === null) throw _charmNotFound(ref);
    // The recipe's secret fields (sealed in KV) are never shown.
    const recipe = deps.recipes.get(detail.recipe);
    return c.json({
      ...detail,
      cells: {
        argument: redactCell(recipe, "argument", detail.cells.argument),
        result: redactCell(recipe, "result", detail.cells.result),
      },
      recipeDescription: recipe?.description ?? null,
    });
  });

  app.put("/api/charms/:space/:charmId/argument", async (c) => {
    const ref = await _authorizedRef(c, "replace the argument of charm");
    const body = await _jsonBody(c, false);
    const state = await replaceCharmArgument(
      kv,
      deps.recipes,
      ref,
      body,
      deps.secrets,
      _checkArgument,
    );
    // The argument may hold tokens: log that it changed, never its value.
    log.info("Replaced the argument of {charm}", {
      charm: formatCharmRef(ref),
    });
    return c.json({ status: charmStatus(state), state: shownState(state) });
  });

  app.post("/api/charms/:space/:charmId/run", async (c) => {
    const ref = await _authorizedRef(c, "run charm");
    return c.json(await enqueueManualRun(deps, ref), 202);
  });

  for (const action of ["enable", "disable"] as const) {
    app.post(`/api/charms/:space/:charmId/${action}`, async (c) => {
      const ref = await _authorizedRef(c, `${action} charm`);
      return c.json(
        await setDisabledByHand(
          deps,
          ref,
          action === "disable",
          principalName(c.get("principal")),
        ),
      );
    });
  }

  app.post("/api/integrations/:id/charms", async (c) => {
    const integration = _knownIntegration(deps, c.req.param("id"));
    const body = charmRefBodySchema.parse(await _jsonBody(c, false));
    const ref: CharmRef = {
      space: parseDidKey(body.space),
      charmId: body.charmId,
    };
    await requireSpace(
      kv,
      c.get("principal"),
      ref.space,
      `register charm ${formatCharmRef(ref)} with ${integration}`,
    );
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
    const ref = await _authorizedRef(c, `unregister charm from ${integration}`);
    const removed = await unregisterCharm(kv, integration, ref);
    log.info("Unregistered {charm} from {integration}: {removed}", {
      charm: formatCharmRef(ref),
      integration,
      removed,
    });
    return c.json({ removed });
  });

  app.post("/api/fanout", async (c) => {
    requireOperator(c.get("principal"), "start a fan-out");
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
    requireOperator(c.get("principal"), "list dead letters");
    const limit = _limitParam(c.req.query("limit"));
    const cursor = _nonEmpty(c.req.query("cursor"));
    return c.json(
      await listDeadLetters(kv, {
        limit,
        ...(cursor !== undefined ? { cursor } : {}),
      }),
    );
  });

  app.post("/api/dead-letters/:id/replay", async (c) => {
    requireOperator(c.get("principal"), "replay a dead letter");
    const id = c.req.param("id");
    const { message } = await replayDeadLetter(kv, deps.queue, id);
    log.info("Replayed dead letter {id}: {charm}", {
      id,
      charm: `${message.space}/${message.charmId}`,
    });
    return c.json({ replayed: true, message }, 202);
  });

  app.get("/api/spaces/:space/delegates", async (c) => {
    const space = await _delegatesSpace(c, "list the delegates of");
    return c.json({ delegates: await listDelegates(kv, space) });
  });

  app.post("/api/spaces/:space/delegates", async (c) => {
    const space = await _delegatesSpace(c, "add a delegate to");
    const { did } = delegateBodySchema.parse(await _jsonBody(c, false));
    const delegate = parseDidKey(did);
    if (delegate === space) {
      throw new TypeError(
        `did: ${did} is the space itself; its owner needs no grant`,
      );
    }
    const principal = c.get("principal");
    const result = await addDelegate(
      kv,
      space,
      delegate,
      principalName(principal),
      deps.now(),
    );
    log.info("Space {space} delegated to {did}: {result}", {
      space,
      did: delegate,
      result,
    });
    return c.json({ did: delegate, ...result }, result.added ? 201 : 200);
  });

  app.delete("/api/spaces/:space/delegates/:did", async (c) => {
    const space = await _delegatesSpace(c, "remove a delegate from");
    const did = _field("did", parseDidKey, c.req.param("did") ?? "");
    const removed = await removeDelegate(kv, space, did);
    log.info("Space {space} revoked {did}: {removed}", {
      space,
      did,
      removed,
    });
    return c.json({ removed });
  });

  registerDashboard(app, deps, options);

  app.notFound((c) =>
    c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404)
  );

  app.onError((error, c) => {
    if (error instanceof UnauthenticatedError) {
      return c.json({ error: error.message, reason: error.reason }, 401, {
        "WWW-Authenticate": `Bearer realm="bcs", error="invalid_token"`,
      });
    }
    if (error instanceof ForbiddenError) {
      return c.json({ error: error.message, reason: "forbidden" }, 403);
    }
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

  /**
   * Runs the recipe's own argument checks (a webhook URL's host, say) on an
   * argument the store parsed with the recipe's schema, before it writes.
   *
   * @throws {TypeError} naming the field when the recipe refuses it.
   */
  async function _checkArgument(
    recipe: AnyRecipe,
    argument: unknown,
  ): Promise<void> {
    if (recipe.checkArgument === undefined) return;
    await recipe.checkArgument(argument, {
      egress: deps.egress,
      // Not the request's signal: reading it switches Deno.serve to legacy
      // abort behaviour. A DNS check gets ten seconds.
      signal: AbortSignal.timeout(10_000),
    });
  }

  /** The charm named by the path, once the principal may act on its space. */
  async function _authorizedRef(c: Context<AppEnv>, action: string) {
    const ref = _refParams(c);
    await requireSpace(
      kv,
      c.get("principal"),
      ref.space,
      `${action} ${formatCharmRef(ref)}`,
    );
    return ref;
  }

  /** The `:space` of a delegates route, once the principal owns it. */
  async function _delegatesSpace(
    c: Context<AppEnv>,
    action: string,
  ): Promise<DidKey> {
    const space = _field("space", parseDidKey, c.req.param("space") ?? "");
    await requireSpace(
      kv,
      c.get("principal"),
      space,
      `${action} space ${space}`,
      false,
    );
    return space;
  }

  return app;
}

/** How logs and disabled reasons name who acted. */

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
  // Only JSON, as JSON: a cross-site form can send text/plain or form data
  // without a preflight, never application/json.
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/(?:[\w.+-]+\+)?json\b/i.test(type.trim())) {
    throw new HTTPException(415, {
      message: `content-type: must be application/json, got "${
        type.slice(0, 60) || "none"
      }"`,
    });
  }
  if (text.trim() === "") {
    throw new TypeError("body: must be a JSON object; the body is empty");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // The parser's own words (position and all) help find the typo.
    throw new TypeError(
      `body: not valid JSON (${toError(error).message.slice(0, 200)})`,
      { cause: error },
    );
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

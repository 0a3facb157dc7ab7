/**
 * Test fixtures for the HTTP layer: the app over real in-memory KV with an
 * injected clock, the test identities, and request helpers.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Hono } from "hono";
import type { AnyRecipe } from "../charm/recipe.ts";
import { Identity } from "../identity/identity.ts";
import { mintToken } from "../identity/token.ts";
import type { QueueDriver } from "../queue/queue.ts";
import type { ServiceDeps } from "../service/deps.ts";
import {
  makeTestDeps,
  recordingQueue,
  type SentMessage,
  SPACE,
} from "../test/test_deps.ts";
import { type AppEnv, createApp } from "./app.ts";

/** The harness clock's start. */
export const T0 = Date.UTC(2025, 0, 1, 12, 0, 30);

/** `healthMaxTickAgeMs` of the harness app. */
export const MAX_TICK_AGE_MS = 180_000;

/** The admin token of harnesses that set one. */
export const ADMIN_TOKEN = "s3cret-admin-token";

/** The service's operator identity in tests. */
export function operatorIdentity(): Promise<Identity> {
  return Identity.fromPassphrase("bcs test operator");
}

/** The owner of `SPACE` ("common user"). */
export function spaceIdentity(): Promise<Identity> {
  return Identity.fromPassphrase("common user");
}

/** The owner of `OTHER_SPACE` ("common user" derived "toolshed-system"). */
export async function otherSpaceIdentity(): Promise<Identity> {
  return await (await spaceIdentity()).derive("toolshed-system");
}

/** An identity that owns no space used in tests. */
export function strangerIdentity(): Promise<Identity> {
  return Identity.fromPassphrase("a stranger");
}

/** A test app. */
export interface Harness extends AsyncDisposable {
  deps: ServiceDeps;
  app: Hono<AppEnv>;
  /** The service's DID (tokens' audience). */
  serviceDid: string;
  /** The injected clock: set `clock.t` to move time. */
  clock: { t: number };
  /** Every message enqueued through the (real, recording) queue driver. */
  sent: SentMessage[];
  /** Sends a request; `body` is JSON-encoded unless it is a string. */
  call(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Response>;
  /** Sends a request with `Authorization: Bearer <token>`. */
  callAs(
    token: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<Response>;
  /** A token for `identity`, valid now by the harness clock. */
  tokenFor(identity: Identity, ttlSeconds?: number): Promise<string>;
}

/** Options for {@linkcode harness}. */
export interface HarnessOptions {
  adminToken?: string;
  exposed?: boolean;
  integrationIds?: string[];
  queue?: (kv: Deno.Kv) => QueueDriver;
  /** The recipe registry (default: the service's `RECIPES`). */
  recipes?: ReadonlyMap<string, AnyRecipe>;
  startedAt?: number;
}

/** Builds a test app over a fresh in-memory KV; dispose to close it. */
export async function harness(options: HarnessOptions = {}): Promise<Harness> {
  const clock = { t: T0 };
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const deps = await makeTestDeps({
    kv,
    queue: options.queue?.(kv) ?? queue,
    now: () => clock.t,
    ...(options.integrationIds
      ? { integrationIds: options.integrationIds }
      : {}),
    ...(options.recipes ? { recipes: options.recipes } : {}),
  });
  const serviceDid = (await operatorIdentity()).did;
  const app = createApp(deps, {
    adminToken: options.adminToken ?? null,
    serviceDid,
    exposed: options.exposed ?? false,
    version: "1.2.3-test",
    startedAt: options.startedAt ?? T0,
    healthMaxTickAgeMs: MAX_TICK_AGE_MS,
  });
  const call: Harness["call"] = (method, path, body, headers = {}) => {
    const init: RequestInit = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.body = typeof body === "string" ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)["content-type"] =
        "application/json";
    }
    return Promise.resolve(app.request(path, init));
  };
  return {
    deps,
    app,
    serviceDid,
    clock,
    sent: queue.sent,
    call,
    callAs: (token, method, path, body) =>
      call(method, path, body, { authorization: `Bearer ${token}` }),
    async tokenFor(identity, ttlSeconds) {
      const minted = await mintToken(identity, {
        audience: serviceDid,
        nowMs: clock.t,
        ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
      });
      return minted.token;
    },
    [Symbol.asyncDispose]: () => deps[Symbol.asyncDispose](),
  };
}

/** The JSON body of a response, checking its content type. */
export async function json(
  response: Response,
): Promise<Record<string, unknown>> {
  assert.match(response.headers.get("content-type") ?? "", /application\/json/);
  return await response.json();
}

/** Sends a request and checks its status, returning the JSON body. */
export async function expectStatus(
  status: number,
  response: Promise<Response>,
): Promise<Record<string, unknown>> {
  const res = await response;
  const body = await json(res);
  assert.equal(
    res.status,
    status,
    `expected ${status}, got ${res.status}: ${JSON.stringify(body)}`,
  );
  return body;
}

/** Creates a counter charm (as the operator, or with `headers`). */
export async function createCounter(
  h: Harness,
  charmId: string,
  space: string = SPACE,
  headers: Record<string, string> = {},
): Promise<void> {
  await expectStatus(
    201,
    h.call(
      "POST",
      "/api/charms",
      { space, recipe: "counter", charmId },
      headers,
    ),
  );
}

/** `/api/charms/<space>/<charmId><suffix>`. */
export function charmPath(
  charmId: string,
  suffix = "",
  space: string = SPACE,
): string {
  return `/api/charms/${space}/${charmId}${suffix}`;
}

import assert from "node:assert/strict";
import { configure, reset } from "@logtape/logtape";
import { z } from "zod";
import type { Charm, CharmState } from "../charm/charm.ts";
import { defineRecipe } from "../charm/recipe.ts";
import { parseMessage } from "../handlers/messages.ts";
import { memorySink } from "../lib/log.ts";
import { writeCharmState } from "../store/charms.ts";
import { writeDeadLetter } from "../store/dead_letters.ts";
import { charmKey, charmStateKey } from "../store/keys.ts";
import { updateServiceTimes } from "../store/service_state.ts";
import { OTHER_SPACE, recordingQueue, SPACE } from "../test/test_deps.ts";
import { MAX_BODY_BYTES } from "./app.ts";
import {
  ADMIN_TOKEN as TOKEN,
  charmPath as _charmPath,
  createCounter as _createCounter,
  expectStatus as _expect,
  harness as _harness,
  json as _json,
  MAX_TICK_AGE_MS,
  T0,
} from "./test_harness.ts";

Deno.test("GET /health is 200 right after start, before any tick", async () => {
  await using h = await _harness();
  h.clock.t = T0 + MAX_TICK_AGE_MS - 1;
  const body = await _expect(200, h.call("GET", "/health"));
  assert.deepEqual(body, {
    ok: true,
    kv: "ok",
    lastTickAt: null,
    version: "1.2.3-test",
    did: h.serviceDid,
  });
});

Deno.test("GET /health is 200 after a recent tick and 503 once it is stale", async () => {
  await using h = await _harness();
  await updateServiceTimes(h.deps.kv, { lastTickAt: T0 });
  h.clock.t = T0 + MAX_TICK_AGE_MS;
  const ok = await _expect(200, h.call("GET", "/health"));
  assert.equal(ok.lastTickAt, T0);

  h.clock.t = T0 + MAX_TICK_AGE_MS + 20_000;
  const stale = await _expect(503, h.call("GET", "/health"));
  assert.equal(stale.ok, false);
  assert.equal(stale.reason, "no cron tick for 200 s");
});

Deno.test("GET /health is 503 when no tick ever came and the process is old", async () => {
  await using h = await _harness({ startedAt: T0 - MAX_TICK_AGE_MS });
  const body = await _expect(503, h.call("GET", "/health"));
  assert.equal(body.ok, false);
  assert.match(String(body.reason), /^no cron tick for 180 s/);
});

Deno.test("GET /health is 503 naming KV when KV is unreachable", async () => {
  await using h = await _harness();
  h.deps.kv.close();
  const body = await _expect(503, h.call("GET", "/health"));
  assert.equal(body.ok, false);
  assert.match(String(body.reason), /^KV unreachable/);
});

Deno.test("GET /api/status counts charms and shows the queue and integrations", async () => {
  await using h = await _harness({ integrationIds: ["manual"] });
  await _createCounter(h, "a");
  await _createCounter(h, "b");
  await _createCounter(h, "c");
  await _expect(200, h.call("POST", _charmPath("b", "/disable")));

  const body = await _expect(200, h.call("GET", "/api/status"));
  assert.deepEqual(body.charms, { total: 3, enabled: 2, disabled: 1 });
  assert.equal(body.version, "1.2.3-test");
  assert.equal(body.startTime, T0);
  assert.deepEqual(body.queue, {
    driver: "native",
    runsInProcess: 0,
    depth: null,
    waiting: 0,
  });
  assert.deepEqual(body.integrations, ["manual"]);
  assert.equal(body.cyclesCompleted, 0);
  assert.equal(body.deadLetters, 0);
  // The settings in effect: the test policy, 5 runs at once.
  assert.deepEqual(body.policy, {
    intervalMs: 60_000,
    maxConsecutiveFailures: 5,
    maxRetries: 3,
    maxConcurrent: 5,
    charmExecutionTimeoutMs: 30_000,
    retryBaseDelayMs: 1_000,
    retryMaxDelayMs: 60_000,
  });
});

Deno.test("POST /api/charms creates a charm, and a duplicate is 409", async () => {
  await using h = await _harness();
  const created = await _expect(
    201,
    h.call("POST", "/api/charms", {
      space: SPACE,
      recipe: "counter",
      charmId: "c1",
      argument: { step: 2 },
    }),
  );
  assert.deepEqual(created, { space: SPACE, charmId: "c1" });

  const detail = await _expect(200, h.call("GET", _charmPath("c1")));
  assert.equal(detail.recipe, "counter");
  assert.equal(detail.status, "ok");
  assert.equal(detail.createdAt, T0);
  assert.equal(
    detail.recipeDescription,
    "Demo: counts its runs in result.count",
  );
  assert.deepEqual(detail.cells, {
    argument: { step: 2 },
    result: { count: 0, lastRunAt: null, lastSlot: null },
  });
  assert.deepEqual(detail.integrations, []);

  const duplicate = await _expect(
    409,
    h.call("POST", "/api/charms", {
      space: SPACE,
      recipe: "counter",
      charmId: "c1",
    }),
  );
  assert.match(String(duplicate.error), /already exists/);
});

Deno.test("POST /api/charms without charmId picks a fresh id", async () => {
  await using h = await _harness();
  const a = await _expect(
    201,
    h.call("POST", "/api/charms", { space: SPACE, recipe: "counter" }),
  );
  const b = await _expect(
    201,
    h.call("POST", "/api/charms", { space: SPACE, recipe: "counter" }),
  );
  assert.equal(typeof a.charmId, "string");
  assert.notEqual(a.charmId, b.charmId);
  await _expect(200, h.call("GET", _charmPath(String(a.charmId))));
});

Deno.test("POST /api/charms rejects bad input with 400 naming the field", async (t) => {
  await using h = await _harness();
  const cases: [string, unknown, RegExp][] = [
    [
      "bad space",
      { space: "did:key:nope", recipe: "counter" },
      /^space: must be an Ed25519 did:key/,
    ],
    ["missing space", { recipe: "counter" }, /^space: is required/],
    [
      "bad charmId",
      { space: SPACE, recipe: "counter", charmId: "-x" },
      /^charmId: /,
    ],
    [
      "unknown recipe",
      { space: SPACE, recipe: "nope" },
      /^recipe: .*"nope".*counter, webhook/,
    ],
    [
      "bad argument",
      { space: SPACE, recipe: "webhook", argument: { url: "ftp://x" } },
      /argument\.url/,
    ],
    [
      "unknown field",
      { space: SPACE, recipe: "counter", colour: "red" },
      /^body: .*colour/,
    ],
    ["malformed JSON", "{not json", /^body: not valid JSON \(.+\)$/],
    ["JSON array", "[1, 2]", /^body: must be a JSON object$/],
    ["empty body", "", /^body: must be a JSON object; the body is empty$/],
  ];
  for (const [name, body, error] of cases) {
    await t.step(name, async () => {
      const res = await _expect(400, h.call("POST", "/api/charms", body));
      assert.match(String(res.error), error);
    });
  }
  const status = await _expect(200, h.call("GET", "/api/status"));
  assert.deepEqual(status.charms, { total: 0, enabled: 0, disabled: 0 });
});

Deno.test("POST /api/charms with a body over 64 KiB is 413", async () => {
  await using h = await _harness();
  const big = JSON.stringify({
    space: SPACE,
    recipe: "counter",
    charmId: "big",
    argument: { padding: "x".repeat(MAX_BODY_BYTES) },
  });
  const res = await _expect(413, h.call("POST", "/api/charms", big));
  assert.match(String(res.error), /^body: /);
  // Also without a content-length: a streamed body is counted as it arrives.
  const stream = ReadableStream.from([new TextEncoder().encode(big)]);
  const streamed = await _expect(
    413,
    Promise.resolve(
      h.app.request("/api/charms", { method: "POST", body: stream }),
    ),
  );
  assert.match(String(streamed.error), /^body: /);
  await _expect(404, h.call("GET", _charmPath("big")));
});

Deno.test("a streamed body within the limit is passed on, and so is an empty one", async () => {
  // Counted as it arrives (no content-length), then handed on buffered
  // (http/body_limit.ts; that it leaves the request's signal alone is
  // checked through Deno.serve in test/main_startup_test.ts).
  await using h = await _harness();
  const body = JSON.stringify({
    space: SPACE,
    recipe: "counter",
    charmId: "s",
  });
  const created = await h.app.request("/api/charms", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: ReadableStream.from([new TextEncoder().encode(body)]),
  });
  assert.equal(created.status, 201, await created.clone().text());
  assert.deepEqual(await created.json(), { space: SPACE, charmId: "s" });
  // A POST with no body at all (curl -X POST …/run).
  const run = await h.app.request(`${_charmPath("s")}/run`, {
    method: "POST",
    body: new ReadableStream({ start: (c) => c.close() }),
  });
  assert.equal(run.status, 202, await run.text());
});

Deno.test("GET /api/charms/:space/:charmId is 404 when absent and 400 on bad params", async () => {
  await using h = await _harness();
  const absent = await _expect(404, h.call("GET", _charmPath("nope")));
  assert.match(String(absent.error), /does not exist/);
  const badSpace = await _expect(
    400,
    h.call("GET", "/api/charms/did:key:zzz/c1"),
  );
  assert.match(String(badSpace.error), /^space: /);
  const badId = await _expect(400, h.call("GET", _charmPath("-bad")));
  assert.match(String(badId.error), /^charmId: /);
});

Deno.test("GET /api/charms pages with a cursor", async () => {
  await using h = await _harness();
  for (const id of ["c1", "c2", "c3", "c4", "c5"]) await _createCounter(h, id);
  const seen: string[] = [];
  let cursor: string | null = null;
  const sizes: number[] = [];
  do {
    const query: string = cursor === null
      ? ""
      : `&cursor=${encodeURIComponent(cursor)}`;
    const page = await _expect(
      200,
      h.call("GET", `/api/charms?limit=2${query}`),
    );
    const charms = page.charms as { charmId: string; status: string }[];
    sizes.push(charms.length);
    seen.push(...charms.map((c) => c.charmId));
    cursor = page.cursor as string | null;
  } while (cursor !== null);
  assert.deepEqual(sizes, [2, 2, 1]);
  assert.deepEqual(seen, ["c1", "c2", "c3", "c4", "c5"]);

  const all = await _expect(200, h.call("GET", "/api/charms"));
  assert.equal((all.charms as unknown[]).length, 5);
  assert.equal(all.cursor, null);
});

Deno.test("GET /api/charms filters by status and by integration", async () => {
  await using h = await _harness();
  for (const id of ["c1", "c2", "c3"]) await _createCounter(h, id);
  await _expect(200, h.call("POST", _charmPath("c2", "/disable")));
  await _expect(
    200,
    h.call("POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "c1",
    }),
  );
  await _expect(
    200,
    h.call("POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "c3",
    }),
  );

  const ids = (body: Record<string, unknown>) =>
    (body.charms as { charmId: string }[]).map((c) => c.charmId);
  assert.deepEqual(
    ids(await _expect(200, h.call("GET", "/api/charms?status=disabled"))),
    ["c2"],
  );
  assert.deepEqual(
    ids(await _expect(200, h.call("GET", "/api/charms?status=ok"))),
    ["c1", "c3"],
  );
  assert.deepEqual(
    ids(await _expect(200, h.call("GET", "/api/charms?integration=manual"))),
    [
      "c1",
      "c3",
    ],
  );
  assert.deepEqual(
    ids(await _expect(200, h.call("GET", "/api/charms?integration=gmail"))),
    [],
  );
  assert.deepEqual(
    ids(
      await _expect(
        200,
        h.call("GET", "/api/charms?integration=manual&status=ok"),
      ),
    ),
    ["c1", "c3"],
  );
});

Deno.test("GET /api/charms rejects bad query parameters with 400 naming them", async (t) => {
  await using h = await _harness();
  const cases: [string, RegExp][] = [
    ["limit=0", /^limit: /],
    ["limit=1001", /^limit: /],
    ["limit=abc", /^limit: /],
    ["limit=2.5", /^limit: /],
    ["status=broken", /^status: must be one of ok, failing, disabled/],
    ["integration=nope", /^integration: unknown integration "nope"/],
    ["cursor=garbage", /cursor/],
  ];
  for (const [query, error] of cases) {
    await t.step(query, async () => {
      const res = await _expect(400, h.call("GET", `/api/charms?${query}`));
      assert.match(String(res.error), error);
    });
  }
});

Deno.test("POST /api/integrations/:id/charms registers once and re-enables a disabled charm", async () => {
  await using h = await _harness();
  await _createCounter(h, "c1");
  const path = "/api/integrations/manual/charms";
  const ref = { space: SPACE, charmId: "c1" };
  assert.deepEqual(await _expect(200, h.call("POST", path, ref)), {
    added: true,
    reenabled: false,
  });
  assert.deepEqual(await _expect(200, h.call("POST", path, ref)), {
    added: false,
    reenabled: false,
  });

  await _expect(200, h.call("POST", _charmPath("c1", "/disable")));
  assert.deepEqual(await _expect(200, h.call("POST", path, ref)), {
    added: false,
    reenabled: true,
  });
  const detail = await _expect(200, h.call("GET", _charmPath("c1")));
  assert.equal(detail.status, "ok");
  assert.deepEqual(detail.integrations, ["manual"]);
});

Deno.test("POST /api/integrations/:id/charms refuses unknown integrations, charms and unfit recipes", async () => {
  await using h = await _harness({ integrationIds: ["gcal"] });
  await _createCounter(h, "c1");
  const unknown = await _expect(
    404,
    h.call("POST", "/api/integrations/nope/charms", {
      space: SPACE,
      charmId: "c1",
    }),
  );
  assert.match(
    String(unknown.error),
    /^integration: unknown integration "nope"/,
  );
  await _expect(
    404,
    h.call("POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "c2",
    }),
  );
  // A charm whose recipe lacks the integration's stream is refused.
  const invalid = await _expect(
    400,
    h.call("POST", "/api/integrations/gmail/charms", {
      space: SPACE,
      charmId: "c1",
    }),
  );
  assert.match(
    String(invalid.error),
    /^charmId: cannot run under gmail: recipe "counter" has no "googleUpdater" stream/,
  );
  const bad = await _expect(
    400,
    h.call("POST", "/api/integrations/manual/charms", { space: OTHER_SPACE }),
  );
  assert.match(String(bad.error), /^charmId: is required/);
});

Deno.test("DELETE /api/integrations/:id/charms/:space/:charmId unregisters", async () => {
  await using h = await _harness();
  await _createCounter(h, "c1");
  await _expect(
    200,
    h.call("POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "c1",
    }),
  );
  const path = `/api/integrations/manual/charms/${SPACE}/c1`;
  assert.deepEqual(await _expect(200, h.call("DELETE", path)), {
    removed: true,
  });
  assert.deepEqual(await _expect(200, h.call("DELETE", path)), {
    removed: false,
  });
  const detail = await _expect(200, h.call("GET", _charmPath("c1")));
  assert.deepEqual(detail.integrations, []);
  await _expect(
    404,
    h.call("DELETE", `/api/integrations/nope/charms/${SPACE}/c1`),
  );
});

Deno.test("POST /api/charms/:space/:charmId/run enqueues a manual run", async () => {
  await using h = await _harness();
  await _createCounter(h, "c1");
  const body = await _expect(202, h.call("POST", _charmPath("c1", "/run")));
  assert.equal(typeof body.runId, "string");
  assert.equal(h.sent.length, 1);
  const [sent] = h.sent;
  assert.deepEqual(sent, {
    delayMs: 0,
    message: {
      type: "run",
      v: 1,
      space: SPACE,
      charmId: "c1",
      integration: null,
      kind: "manual",
      slot: T0,
      runId: body.runId,
      attempt: 1,
      enqueuedAt: T0,
    },
  });
  assert.ok(
    parseMessage(sent!.message).ok,
    "the message passes the queue's own validation",
  );
});

Deno.test("POST /api/charms/:space/:charmId/run is 404 when absent and 409 when disabled", async () => {
  await using h = await _harness();
  await _expect(404, h.call("POST", _charmPath("nope", "/run")));
  await _createCounter(h, "c1");
  await _expect(200, h.call("POST", _charmPath("c1", "/disable")));
  const res = await _expect(409, h.call("POST", _charmPath("c1", "/run")));
  assert.match(String(res.error), /enable it first/);
  assert.equal(h.sent.length, 0);
});

Deno.test("POST .../disable and .../enable change the charm's state", async () => {
  await using h = await _harness();
  await _createCounter(h, "c1");
  const disabled = await _expect(
    200,
    h.call("POST", _charmPath("c1", "/disable")),
  );
  assert.equal(disabled.status, "disabled");
  const state = disabled.state as Record<string, unknown>;
  assert.equal(state.disabled, true);
  assert.equal(state.disabledReason, "disabled by operator");

  const enabled = await _expect(
    200,
    h.call("POST", _charmPath("c1", "/enable")),
  );
  assert.equal(enabled.status, "ok");
  assert.equal((enabled.state as Record<string, unknown>).disabled, false);
  assert.equal((enabled.state as Record<string, unknown>).disabledReason, null);
  // The state's internal copy of the record is not part of what is shown.
  const detail = await _expect(200, h.call("GET", _charmPath("c1", "")));
  const list = await _expect(200, h.call("GET", "/api/charms"));
  const listed = (list.charms as { state: object }[])[0]!.state;
  for (const shown of [state, enabled.state, detail.state, listed]) {
    assert.equal(Object.hasOwn(shown as object, "record"), false);
  }

  await _expect(404, h.call("POST", _charmPath("nope", "/enable")));
  await _expect(404, h.call("POST", _charmPath("nope", "/disable")));
});

Deno.test("POST /api/fanout runs a cycle and returns each integration's result", async () => {
  await using h = await _harness({ integrationIds: ["manual", "gmail"] });
  await _createCounter(h, "c1");
  await _createCounter(h, "c2");
  await _expect(
    200,
    h.call("POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "c1",
    }),
  );
  await _expect(
    200,
    h.call("POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "c2",
    }),
  );

  const all = await _expect(200, h.call("POST", "/api/fanout"));
  const results = all.results as {
    integration: string;
    enqueued: number;
    claimed: boolean;
  }[];
  assert.deepEqual(
    results.map((r) => [r.integration, r.claimed, r.enqueued]).sort(),
    [["gmail", true, 0], ["manual", true, 2]],
  );
  assert.deepEqual(
    h.sent.map((s) => s.message.charmId).sort(),
    ["c1", "c2"],
  );

  const one = await _expect(
    200,
    h.call("POST", "/api/fanout", { integration: "manual" }),
  );
  assert.deepEqual(
    (one.results as { integration: string }[]).map((r) => r.integration),
    ["manual"],
  );
  const status = await _expect(200, h.call("GET", "/api/status"));
  assert.equal(status.lastCycleStart, T0);
  // A fan-out by hand is not a cron tick: it must not keep /health green.
  assert.equal(status.lastTickAt, null);
});

Deno.test("POST /api/fanout is 400 for an integration that is not enabled", async () => {
  await using h = await _harness({ integrationIds: ["manual"] });
  const unknown = await _expect(
    400,
    h.call("POST", "/api/fanout", { integration: "nope" }),
  );
  assert.match(String(unknown.error), /^integration: "nope" is not enabled/);
  await _expect(400, h.call("POST", "/api/fanout", { integration: "gmail" }));
  await _expect(400, h.call("POST", "/api/fanout", "{oops"));
  assert.equal(h.sent.length, 0);
});

Deno.test("GET /api/dead-letters lists dead letters, newest first", async () => {
  await using h = await _harness();
  await writeDeadLetter(h.deps.kv, { type: "bogus" }, "type: invalid", T0);
  await writeDeadLetter(h.deps.kv, { type: "other" }, "charm gone", T0 + 1000);
  const body = await _expect(200, h.call("GET", "/api/dead-letters"));
  const letters = body.deadLetters as {
    reason: string;
    message: unknown;
    at: number;
  }[];
  assert.deepEqual(letters.map((l) => [l.reason, l.message, l.at]), [
    ["charm gone", { type: "other" }, T0 + 1000],
    ["type: invalid", { type: "bogus" }, T0],
  ]);
  assert.equal(body.cursor, null);

  const first = await _expect(200, h.call("GET", "/api/dead-letters?limit=1"));
  assert.equal((first.deadLetters as unknown[]).length, 1);
  assert.equal(typeof first.cursor, "string");
  await _expect(400, h.call("GET", "/api/dead-letters?limit=0"));
  // A cursor the API never returned is refused, naming it.
  const bad = await _expect(
    400,
    h.call("GET", "/api/dead-letters?cursor=!!!"),
  );
  assert.match(String(bad.error), /^cursor: /);
});

Deno.test("with an admin token, the API needs a bearer token; /health and /api/status stay public", async () => {
  await using h = await _harness({ adminToken: TOKEN });
  const create = { space: SPACE, recipe: "counter", charmId: "c1" };

  const missing = await h.call("POST", "/api/charms", create);
  assert.equal(missing.status, 401);
  assert.deepEqual(await _json(missing), {
    error: "missing bearer token: send Authorization: Bearer <token>",
    reason: "missing_token",
  });
  assert.match(missing.headers.get("www-authenticate") ?? "", /^Bearer/);

  const wrong = await _expect(
    401,
    h.call("POST", "/api/charms", create, {
      authorization: `Bearer ${TOKEN}x`,
    }),
  );
  assert.equal(wrong.reason, "invalid_token");
  const malformed = await _expect(
    401,
    h.call("POST", "/api/charms", create, { authorization: TOKEN }),
  );
  assert.equal(malformed.reason, "malformed_header");
  await _expect(
    401,
    h.call("DELETE", `/api/integrations/manual/charms/${SPACE}/c1`),
  );
  // Reads of charms need the token too now.
  await _expect(401, h.call("GET", _charmPath("c1")));
  await _expect(401, h.call("GET", "/api/charms"));

  await _expect(
    201,
    h.call("POST", "/api/charms", create, { authorization: `Bearer ${TOKEN}` }),
  );
  await _expect(
    200,
    h.call("GET", _charmPath("c1"), undefined, {
      authorization: `Bearer ${TOKEN}`,
    }),
  );
  await _expect(200, h.call("GET", "/api/status"));
  await _expect(200, h.call("GET", "/health"));
});

Deno.test("without an admin token, writes need no authorization", async () => {
  await using h = await _harness();
  await _expect(
    201,
    h.call("POST", "/api/charms", {
      space: SPACE,
      recipe: "counter",
      charmId: "c1",
    }),
  );
});

Deno.test("an unknown route is a JSON 404", async () => {
  await using h = await _harness();
  const body = await _expect(404, h.call("GET", "/api/nope"));
  assert.equal(body.error, "No route for GET /api/nope");
  await _expect(404, h.call("GET", "/nope"));
});

Deno.test("an unexpected error is a 500 without details", async () => {
  await using h = await _harness({
    queue: (kv) => {
      const queue = recordingQueue(kv);
      return {
        ...queue,
        enqueue() {
          throw new Error("queue exploded: secret detail");
        },
      };
    },
  });
  await _createCounter(h, "c1");
  const sink = memorySink();
  await configure({
    reset: true,
    sinks: { memory: sink },
    loggers: [
      { category: ["bcs", "http"], lowestLevel: "debug", sinks: ["memory"] },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["memory"],
      },
    ],
  });
  try {
    const res = await h.call("POST", _charmPath("c1", "/run"));
    assert.equal(res.status, 500);
    const text = await res.text();
    assert.deepEqual(JSON.parse(text), { error: "internal error" });
    assert.doesNotMatch(text, /secret|exploded/);
  } finally {
    await reset();
  }
  const http = sink.records.filter((r) => r.category.join(".") === "bcs.http");
  const failure = http.find((r) => r.level === "error");
  assert.ok(failure, "the error is logged");
  assert.match(String(failure.properties.error), /queue exploded/);
  const access = http.find((r) => r.level === "debug");
  assert.deepEqual(
    { ...access?.properties, ms: 0 },
    { method: "POST", path: `/api/charms/${SPACE}/c1/run`, status: 500, ms: 0 },
  );
});

Deno.test("POST /api/dead-letters/:id/replay re-enqueues the message and deletes the letter", async () => {
  await using h = await _harness();
  await _createCounter(h, "c1");
  const message = {
    type: "run",
    v: 1,
    space: SPACE,
    charmId: "c1",
    integration: "manual",
    kind: "scheduled",
    slot: T0 - 60_000,
    attempt: 2,
    enqueuedAt: T0 - 60_000,
  };
  const letter = await writeDeadLetter(
    h.deps.kv,
    message,
    "undelivered: the queue gave up",
    T0,
  );
  const other = await writeDeadLetter(h.deps.kv, { x: 1 }, "junk", T0 + 1);
  const body = await _expect(
    202,
    h.call("POST", `/api/dead-letters/${letter.id}/replay`),
  );
  assert.deepEqual(body, { replayed: true, message });
  assert.deepEqual(h.sent, [{ message, delayMs: 0 }]);
  const left = await _expect(200, h.call("GET", "/api/dead-letters"));
  assert.deepEqual(
    (left.deadLetters as { id: string }[]).map((l) => l.id),
    [other.id],
  );
  // Replaying it again: it is gone.
  await _expect(404, h.call("POST", `/api/dead-letters/${letter.id}/replay`));
  assert.equal(h.sent.length, 1);
});

Deno.test("POST /api/dead-letters/:id/replay is 404 for an unknown id and 400 naming why a message is malformed", async () => {
  await using h = await _harness();
  const unknown = await _expect(
    404,
    h.call("POST", "/api/dead-letters/nope/replay"),
  );
  assert.match(String(unknown.error), /^Dead letter "nope" does not exist/);
  const letter = await writeDeadLetter(
    h.deps.kv,
    { type: "run", v: 1, space: "did:key:bogus" },
    "space: must be an Ed25519 did:key",
    T0,
  );
  const bad = await _expect(
    400,
    h.call("POST", `/api/dead-letters/${letter.id}/replay`),
  );
  assert.match(
    String(bad.error),
    /^Cannot replay dead letter ".*": its message is malformed \(space: must be an Ed25519 did:key\)$/,
  );
  assert.equal(h.sent.length, 0);
  // The malformed letter stays for the operator to look at.
  const left = await _expect(200, h.call("GET", "/api/dead-letters"));
  assert.equal((left.deadLetters as unknown[]).length, 1);
});

Deno.test("GET /api/charms?space= lists one space, with status, integration and cursors", async () => {
  await using h = await _harness();
  for (const id of ["a1", "a2", "a3"]) await _createCounter(h, id);
  await _createCounter(h, "b1", OTHER_SPACE);
  await _expect(200, h.call("POST", _charmPath("a2", "/disable")));
  await _expect(
    200,
    h.call("POST", "/api/integrations/manual/charms", {
      space: OTHER_SPACE,
      charmId: "b1",
    }),
  );
  const ids = (body: Record<string, unknown>) =>
    (body.charms as { charmId: string }[]).map((c) => c.charmId);
  const q = (query: string) =>
    _expect(200, h.call("GET", `/api/charms?${query}`));
  assert.deepEqual(ids(await q(`space=${SPACE}`)), ["a1", "a2", "a3"]);
  assert.deepEqual(ids(await q(`space=${OTHER_SPACE}`)), ["b1"]);
  assert.deepEqual(ids(await q(`space=${SPACE}&status=ok`)), ["a1", "a3"]);
  assert.deepEqual(ids(await q(`space=${SPACE}&integration=manual`)), []);
  assert.deepEqual(
    ids(await q(`space=${OTHER_SPACE}&integration=manual&status=ok`)),
    ["b1"],
  );
  const first = await q(`space=${SPACE}&limit=2`);
  assert.deepEqual(ids(first), ["a1", "a2"]);
  const cursor = encodeURIComponent(String(first.cursor));
  const second = await q(`space=${SPACE}&limit=2&cursor=${cursor}`);
  assert.deepEqual(ids(second), ["a3"]);
  assert.equal(second.cursor, null);
  // A cursor from one space's listing is refused in another's.
  const wrong = await _expect(
    400,
    h.call("GET", `/api/charms?space=${OTHER_SPACE}&cursor=${cursor}`),
  );
  assert.match(String(wrong.error), /^cursor: /);
});

Deno.test("PUT /api/charms/:space/:charmId/argument replaces the argument, checked against the recipe", async () => {
  await using h = await _harness();
  await _createCounter(h, "c1");
  const path = _charmPath("c1", "/argument");
  const put = await _expect(200, h.call("PUT", path, { step: 3 }));
  assert.equal(put.status, "ok");
  const detail = await _expect(200, h.call("GET", _charmPath("c1")));
  assert.deepEqual((detail.cells as Record<string, unknown>).argument, {
    step: 3,
  });

  const bad = await _expect(400, h.call("PUT", path, { step: "three" }));
  assert.match(String(bad.error), /^argument\.step: /);
  const unknown = await _expect(400, h.call("PUT", path, { stride: 2 }));
  assert.match(String(unknown.error), /^argument: .*stride/);
  await _expect(400, h.call("PUT", path, "[1]"));
  await _expect(404, h.call("PUT", _charmPath("nope", "/argument"), {}));
  const after = await _expect(200, h.call("GET", _charmPath("c1")));
  assert.deepEqual((after.cells as Record<string, unknown>).argument, {
    step: 3,
  });
});

Deno.test("POST /api/charms and PUT .../argument parse the argument once and check what the schema made of it", async () => {
  let parses = 0;
  const checked: unknown[] = [];
  const recipe = defineRecipe({
    name: "checked",
    description: "counts its argument's parses",
    argumentSchema: z.object({ n: z.number().default(1) }).strict()
      .refine(() => ++parses > 0),
    resultSchema: z.object({}),
    initialResult: () => ({}),
    handlers: {},
    checkArgument(argument) {
      checked.push(argument);
      return argument.n < 0
        ? Promise.reject(new TypeError("argument.n: must not be negative"))
        : Promise.resolve();
    },
  });
  await using h = await _harness({ recipes: new Map([["checked", recipe]]) });
  const cells = async (charmId: string) =>
    (await _expect(200, h.call("GET", _charmPath(charmId))))
      .cells as Record<string, unknown>;

  await _expect(
    201,
    h.call("POST", "/api/charms", {
      space: SPACE,
      recipe: "checked",
      charmId: "c1",
    }),
  );
  assert.equal(parses, 1);
  assert.deepEqual(checked, [{ n: 1 }], "the check sees the parsed default");
  const refused = await _expect(
    400,
    h.call("POST", "/api/charms", {
      space: SPACE,
      recipe: "checked",
      charmId: "c2",
      argument: { n: -1 },
    }),
  );
  assert.equal(refused.error, "argument.n: must not be negative");
  assert.equal(parses, 2);
  await _expect(404, h.call("GET", _charmPath("c2")));

  const path = _charmPath("c1", "/argument");
  await _expect(200, h.call("PUT", path, { n: 5 }));
  assert.equal(parses, 3);
  assert.deepEqual((await cells("c1")).argument, { n: 5 });
  const bad = await _expect(400, h.call("PUT", path, { n: -2 }));
  assert.equal(bad.error, "argument.n: must not be negative");
  assert.deepEqual((await cells("c1")).argument, { n: 5 });
  // A schema failure stops before the check.
  await _expect(400, h.call("PUT", path, { n: "five" }));
  assert.deepEqual(checked, [{ n: 1 }, { n: -1 }, { n: 5 }, { n: -2 }]);
});

Deno.test("PUT .../argument un-parks a charm that needs re-authentication; GET redacts its tokens", async () => {
  await using h = await _harness();
  const auth = {
    token: "ya29.secret-access",
    refreshToken: "1//secret-refresh",
    expiresAt: T0 + 3600_000,
  };
  await _expect(
    201,
    h.call("POST", "/api/charms", {
      space: SPACE,
      recipe: "gmail-importer",
      charmId: "mail",
      argument: { auth },
    }),
  );
  // Park it as the run handler does after `invalid_grant`.
  const ref = { space: SPACE, charmId: "mail" };
  const before = (await h.deps.kv.get<CharmState>(charmStateKey(ref))).value!;
  const parked = {
    ...before,
    needsReauth: true,
    needsReauthReason: "invalid_grant",
  };
  assert.ok(
    (await writeCharmState(
      h.deps.kv.atomic(),
      (await h.deps.kv.get<Charm>(charmKey(ref))).value!,
      before,
      parked,
    ).commit()).ok,
  );
  const listed = await _expect(
    200,
    h.call("GET", "/api/charms?status=needs-reauth"),
  );
  assert.deepEqual(
    (listed.charms as { charmId: string }[]).map((c) => c.charmId),
    ["mail"],
  );

  const detail = await _expect(200, h.call("GET", _charmPath("mail")));
  assert.equal(detail.status, "needs-reauth");
  const shown = JSON.stringify(detail);
  assert.ok(!shown.includes("secret"), shown);
  assert.match(shown, /"token":"\[redacted\]"/);

  const put = await _expect(
    200,
    h.call("PUT", _charmPath("mail", "/argument"), {
      auth: { ...auth, refreshToken: "1//new-refresh" },
    }),
  );
  assert.equal(put.status, "ok");
  assert.equal((put.state as Record<string, unknown>).needsReauth, false);
  const none = await _expect(
    200,
    h.call("GET", "/api/charms?status=needs-reauth"),
  );
  assert.deepEqual(none.charms, []);
  const bad = await _expect(
    400,
    h.call("PUT", _charmPath("mail", "/argument"), {
      auth: { expiresAt: "soon" },
    }),
  );
  assert.match(String(bad.error), /^argument\.auth\.expiresAt: /);
});

Deno.test("POST bodies must be application/json: a cross-site text/plain form gets 415", async () => {
  await using h = await _harness();
  const response = await h.app.request("/api/charms", {
    method: "POST",
    headers: { "content-type": "text/plain" },
    body: JSON.stringify({ space: SPACE, recipe: "counter", charmId: "csrf" }),
  });
  assert.equal(response.status, 415);
  assert.match(
    (await response.json()).error,
    /^content-type: must be application\/json/,
  );
  assert.equal((await h.call("GET", `/api/charms/${SPACE}/csrf`)).status, 404);
});

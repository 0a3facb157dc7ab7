import assert from "node:assert/strict";
import { configure, reset } from "@logtape/logtape";
import { z } from "zod";
import type { Charm } from "../charm/charm.ts";
import { defineRecipe } from "../charm/recipe.ts";
import { fanout } from "../handlers/fanout.ts";
import { createApp } from "../http/app.ts";
import { operatorIdentity } from "../http/test_harness.ts";
import { memorySink } from "../lib/log.ts";
import {
  type AuthRefreshLease,
  REFRESH_LEASE_MS,
} from "../google/auth_refresh.ts";
import { GoogleSession } from "../google/session.ts";
import { getCharmSummary } from "../store/charms.ts";
import { authRefreshLeaseKey, charmKey } from "../store/keys.ts";
import {
  googleHarness,
  REFRESH_TOKEN,
  T0,
} from "../test/fake_google_harness.ts";
import type { Integration, PrepareDeps } from "./integration.ts";

const MINUTE = 60_000;

function prepareDeps(
  h: Awaited<ReturnType<typeof googleHarness>>,
  signal = new AbortController().signal,
): PrepareDeps {
  return {
    kv: h.deps.kv,
    env: h.deps.env,
    now: h.deps.now,
    fetch: h.deps.fetch,
    signal,
    secrets: h.deps.secrets,
    recipe: h.deps.recipes.get("gmail-importer")!,
  };
}

function gmail(h: Awaited<ReturnType<typeof googleHarness>>): Integration {
  return h.deps.allIntegrations.get("gmail")!;
}

Deno.test("gmail refreshes a token expiring within 10 minutes before the run and writes it back", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const old = h.fake.issueAccessToken();
  const ref = await h.charm({
    recipe: "gmail-importer",
    auth: {
      token: old,
      tokenType: "Bearer",
      scope: ["https://www.googleapis.com/auth/gmail.readonly"],
      expiresIn: 3600,
      expiresAt: T0 + 9 * MINUTE,
      refreshToken: REFRESH_TOKEN,
      user: { email: "user@example.com", name: "User", picture: "" },
    },
  });

  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.equal(h.fake.count("token"), 1);
  const grant = h.fake.calls.find((c) => c.route === "token")!;
  assert.equal(grant.body!.grant_type, "refresh_token");
  assert.equal(grant.body!.refresh_token, REFRESH_TOKEN);
  assert.equal(grant.body!.client_id, h.fake.clientId);
  const auth = (await h.argument(ref)).auth;
  assert.notEqual(auth.token, old);
  assert.equal(auth.token, h.fake.issuedTokens.at(-1));
  assert.equal(auth.expiresIn, 3599);
  assert.equal(auth.expiresAt, T0 + 3599_000);
  assert.equal(auth.tokenType, "Bearer");
  assert.equal(auth.refreshToken, REFRESH_TOKEN);
  // The scope keeps the list form the charm used.
  assert.deepEqual(auth.scope, [
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/calendar.readonly",
  ]);
  assert.deepEqual(auth.user, {
    email: "user@example.com",
    name: "User",
    picture: "",
  });
  // Every API call of the run used the new token.
  const apiCalls = h.fake.calls.filter((c) => c.route.startsWith("gmail."));
  assert.ok(apiCalls.length > 0);
  assert.ok(apiCalls.every((c) => c.token === auth.token));
  assert.equal((await h.deps.kv.get(authRefreshLeaseKey(ref))).value, null);

  // Ten minutes on it is still fresh for the next run: no refresh.
  h.clock.t += 10 * MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.equal(h.fake.count("token"), 1);
});

Deno.test("gcal fetches a missing token and keeps a rotated refresh token", async () => {
  await using h = await googleHarness();
  h.fake.rotateRefreshTokenTo = "1//rotated";
  const ref = await h.charm({
    recipe: "gcal-importer",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  const auth = (await h.argument(ref)).auth;
  assert.equal(auth.token, h.fake.issuedTokens.at(-1));
  assert.equal(auth.refreshToken, "1//rotated");
  assert.equal(typeof auth.scope, "object");
  assert.equal(h.fake.count("calendar.events.list"), 1);
});

Deno.test("concurrent refreshes of one charm call the token endpoint once", async () => {
  await using h = await googleHarness();
  const ref = await h.charm({
    recipe: "gmail-importer",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  const charm = (await h.deps.kv.get<Charm>(charmKey(ref))).value!;
  const held = h.fake.hold("token");
  // The first caller takes the lease and is held at the token endpoint...
  const first = gmail(h).prepare!(prepareDeps(h), charm);
  await held.arrived;
  const lease = await h.deps.kv.get<AuthRefreshLease>(authRefreshLeaseKey(ref));
  assert.equal(lease.value?.expiresAt, T0 + REFRESH_LEASE_MS);
  // ...so these, as other processes' runs would, find it held and wait.
  const others = [
    gmail(h).prepare!(prepareDeps(h), charm),
    h.deps.allIntegrations.get("gcal")!.prepare!(prepareDeps(h), charm),
  ];
  held.release();
  const sessions = await Promise.all([first, ...others]);
  assert.equal(h.fake.count("token"), 1);
  const token = (await h.argument(ref)).auth.token;
  assert.equal(token, h.fake.issuedTokens.at(-1));
  for (const session of sessions) assert.ok(session instanceof GoogleSession);
  assert.equal((await h.deps.kv.get(authRefreshLeaseKey(ref))).value, null);
});

Deno.test("a waiting refresh gives up with the run's signal; a lapsed lease is taken over", async () => {
  await using h = await googleHarness();
  const ref = await h.charm({
    recipe: "gmail-importer",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  const charm = (await h.deps.kv.get<Charm>(charmKey(ref))).value!;
  // A process took the lease and died.
  await h.deps.kv.set(
    authRefreshLeaseKey(ref),
    {
      owner: "crashed",
      expiresAt: T0 + REFRESH_LEASE_MS,
    } satisfies AuthRefreshLease,
  );
  const controller = new AbortController();
  const waiting = gmail(h).prepare!(prepareDeps(h, controller.signal), charm);
  controller.abort(new Error("run timed out"));
  await assert.rejects(waiting, /run timed out/);
  assert.equal(h.fake.count("token"), 0);

  h.clock.t += REFRESH_LEASE_MS;
  await gmail(h).prepare!(prepareDeps(h), charm);
  assert.equal(h.fake.count("token"), 1);
});

Deno.test("invalid_grant parks the charm without retries, and the fan-out skips it until its argument is replaced", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const ref = await h.charm({
    recipe: "gmail-importer",
    auth: { refreshToken: "1//revoked" },
  });
  h.fake.revoke("1//revoked");

  assert.equal(await h.run(ref, "gmail"), "failed");
  assert.equal(h.sent.length, 0, "no retry enqueued");
  let state = await h.state(ref);
  assert.equal(state.needsReauth, true);
  assert.match(
    state.needsReauthReason!,
    /Cannot refresh the Google token of charm .*\/gmail-importer: the token endpoint returned 400 invalid_grant/,
  );
  assert.match(state.lastError!, /^NeedsReauthError: /);
  assert.equal(state.consecutiveFailures, 0);
  assert.equal(state.disabled, false);
  assert.equal((await getCharmSummary(h.deps.kv, ref))!.status, "needs-reauth");

  // A run enqueued before it was parked is skipped without calling Google.
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "skipped");
  assert.equal(h.fake.count("token"), 1);

  const tick = Math.floor(h.clock.t / MINUTE) * MINUTE;
  const skipped = await fanout(h.deps, {
    integration: "gmail",
    tickMs: tick,
    fromMs: tick,
    id: "cron",
  });
  assert.deepEqual([skipped.enqueued, skipped.skipped], [0, 1]);

  // The user signs in again: the new auth goes in through the API.
  h.fake.grant("1//new");
  const app = createApp(h.deps, {
    adminToken: null,
    serviceDid: (await operatorIdentity()).did,
    exposed: false,
    version: "test",
    startedAt: T0,
    healthMaxTickAgeMs: 180_000,
  });
  const put = await app.request(
    `/api/charms/${ref.space}/${ref.charmId}/argument`,
    {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ auth: { refreshToken: "1//new" } }),
    },
  );
  assert.equal(put.status, 200, await put.clone().text());
  assert.equal((await put.json()).status, "ok");

  const next = tick + MINUTE;
  h.clock.t = next;
  const resumed = await fanout(h.deps, {
    integration: "gmail",
    tickMs: next,
    fromMs: next,
    id: "cron",
  });
  assert.deepEqual([resumed.enqueued, resumed.skipped], [1, 0]);
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  state = await h.state(ref);
  assert.equal(state.needsReauth, false);
  assert.equal((await h.result(ref)).emails.length, 1);
});

Deno.test("the token endpoint's 5xx and 429 are retriable; a refused client is final", async () => {
  await using h = await googleHarness();
  const ref = await h.charm({
    recipe: "gmail-importer",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  h.fake.failNext("token", {
    status: 503,
    headers: { "retry-after": "30" },
    body: { error: "temporarily_unavailable" },
  });
  assert.equal(await h.run(ref, "gmail"), "retrying");
  assert.equal(h.sent.at(-1)!.delayMs, 30_000);
  h.fake.failNext("token", { status: 429, body: {} });
  h.clock.t += 30_000;
  assert.equal(await h.run(ref, "gmail", { attempt: 2 }), "retrying");
  assert.equal((await h.state(ref)).needsReauth, false);

  await using wrong = await googleHarness({
    env: { GOOGLE_CLIENT_SECRET: "wrong" },
  });
  const badRef = await wrong.charm({
    recipe: "gmail-importer",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  assert.equal(await wrong.run(badRef, "gmail"), "failed");
  const state = await wrong.state(badRef);
  assert.match(
    state.lastError!,
    /^NonRetriableError: .*the token endpoint returned 401 invalid_client/,
  );
  assert.equal(state.needsReauth, false);
  assert.equal(state.consecutiveFailures, 1);
});

Deno.test("with TOOLSHED_API_URL, tokens are refreshed through the toolshed", async () => {
  await using h = await googleHarness({
    env: { GOOGLE_CLIENT_ID: "", GOOGLE_CLIENT_SECRET: "" },
  });
  h.deps.env.TOOLSHED_API_URL = h.fake.url;
  const ref = await h.charm({
    recipe: "gcal-importer",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  assert.equal(h.fake.count("toolshed"), 1);
  assert.equal(h.fake.count("token"), 0);
  const call = h.fake.calls.find((c) => c.route === "toolshed")!;
  assert.deepEqual(call.body, { refreshToken: REFRESH_TOKEN });
  const auth = (await h.argument(ref)).auth;
  assert.equal(auth.token, h.fake.issuedTokens.at(-1));
  assert.equal(auth.expiresAt, T0 + 3599_000);

  h.fake.revoke(REFRESH_TOKEN);
  const other = await h.charm({
    recipe: "gcal-importer",
    charmId: "other",
    auth: { refreshToken: REFRESH_TOKEN },
  });
  assert.equal(await h.run(other, "gcal"), "failed");
  assert.equal((await h.state(other)).needsReauth, true);
});

Deno.test("no token or refresh token reaches the logs", async () => {
  const sink = memorySink();
  await configure({
    reset: true,
    sinks: { memory: sink },
    loggers: [
      { category: ["bcs"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await using h = await googleHarness();
    h.fake.mailbox.add({ id: "m1" });
    const ref = await h.charm({
      recipe: "gmail-importer",
      auth: { refreshToken: REFRESH_TOKEN },
    });
    assert.equal(await h.run(ref, "gmail"), "succeeded");
    // A 401 mid-run, a refresh, a rate limit, then a revoked grant.
    h.fake.invalidateAccessTokens();
    h.clock.t += MINUTE;
    assert.equal(await h.run(ref, "gmail"), "succeeded");
    h.fake.failNext("gmail.history.list", {
      status: 429,
      headers: { "retry-after": "1" },
    });
    h.clock.t += MINUTE;
    assert.equal(await h.run(ref, "gmail"), "retrying");
    h.fake.revoke(REFRESH_TOKEN);
    h.fake.invalidateAccessTokens();
    h.clock.t += MINUTE;
    assert.equal(await h.run(ref, "gmail"), "failed");
    assert.equal((await h.state(ref)).needsReauth, true);

    const secrets = [...h.fake.issuedTokens, REFRESH_TOKEN];
    assert.ok(secrets.length >= 3);
    assert.ok(sink.records.length > 5);
    for (const record of sink.records) {
      const text = JSON.stringify({
        message: record.message.map(String),
        properties: record.properties,
      }, (_key, value) => value instanceof Error ? String(value) : value);
      for (const secret of secrets) {
        assert.ok(
          !text.includes(secret),
          `a log record holds a token: ${text}`,
        );
      }
    }
  } finally {
    await reset();
  }
});

Deno.test("gmail and gcal accept only recipes with their stream and an auth field", async () => {
  await using h = await googleHarness();
  const charm = (recipe: string): Charm => ({
    space: "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY",
    charmId: "x",
    recipe,
    createdAt: T0,
  });
  const check = (id: string, recipeName: string) => {
    const recipe = h.deps.recipes.get(recipeName)!;
    return h.deps.allIntegrations.get(id)!.getIntegrationConfig()
      .isValidIntegrationCharm(charm(recipeName), recipe);
  };
  assert.deepEqual(check("gmail", "gmail-importer"), { ok: true });
  assert.deepEqual(check("gcal", "gcal-importer"), { ok: true });
  assert.match(
    (check("gmail", "gcal-importer") as { reason: string }).reason,
    /no "googleUpdater" stream/,
  );
  assert.match(
    (check("gcal", "counter") as { reason: string }).reason,
    /no "calendarUpdater" stream/,
  );
  const noAuth = defineRecipe({
    name: "no-auth",
    description: "has the stream but keeps no tokens",
    argumentSchema: z.object({}),
    resultSchema: z.object({}),
    initialResult: () => ({}),
    handlers: { googleUpdater: () => Promise.resolve() },
  });
  assert.deepEqual(
    h.deps.allIntegrations.get("gmail")!.getIntegrationConfig()
      .isValidIntegrationCharm(charm("no-auth"), noAuth),
    {
      ok: false,
      reason:
        'recipe "no-auth" keeps no Google tokens (its argument has no "auth" field)',
    },
  );
});

Deno.test("a refresh whose reply carries an ID token keeps the rotated refresh token, whatever issuer form Google uses", async (t) => {
  for (const issuer of ["https://accounts.google.com", "accounts.google.com"]) {
    await t.step(issuer, async () => {
      await using h = await googleHarness();
      h.fake.rotateRefreshTokenTo = "1//rotated";
      h.fake.idTokenIssuer = issuer;
      const ref = await h.charm({
        recipe: "gcal-importer",
        auth: { refreshToken: REFRESH_TOKEN },
      });
      const outcome = await h.run(ref, "gcal");
      assert.equal(outcome, "succeeded", (await h.state(ref)).lastError ?? "");
      assert.equal((await h.argument(ref)).auth.refreshToken, "1//rotated");
    });
  }
});

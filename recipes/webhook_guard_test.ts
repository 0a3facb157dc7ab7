import assert from "node:assert/strict";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import { loadConfig } from "../config/config.ts";
import type { RunMessage } from "../handlers/messages.ts";
import { runCharm } from "../handlers/run_charm.ts";
import { createApp } from "../http/app.ts";
import { operatorIdentity } from "../http/test_harness.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import { ConfigError } from "../lib/errors.ts";
import { egressPolicy, parseHostList } from "../lib/net_guard.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { createService } from "../service/service.ts";
import { createCharm } from "../store/charms.ts";
import { charmStateKey } from "../store/keys.ts";
import {
  makeTestDeps,
  manualRunMessageFor,
  recordingQueue,
  SPACE,
  type TestDepsOptions,
} from "../test/test_deps.ts";
import { startWebhookReceiver } from "../test/webhook_receiver.ts";
import { RECIPES } from "./mod.ts";

const ADMIN = "admin-token-for-guard-tests";
const NOW = Date.UTC(2026, 5, 1, 12, 0);

/** DNS the test controls: name → addresses (A and AAAA alike). */
function fakeDns(table: Record<string, string[]>) {
  return (name: string, type: "A" | "AAAA") => {
    const answer = (table[name] ?? []).filter((a) =>
      type === "A" ? !a.includes(":") : a.includes(":")
    );
    return answer.length === 0
      ? Promise.reject(new Deno.errors.NotFound(`no ${type} for ${name}`))
      : Promise.resolve(answer);
  };
}

/** Deps as deployed: egress restricted, DNS from `dns`. */
async function deployedDeps(
  dns: Record<string, string[]>,
  allowedHosts = "",
  options: TestDepsOptions = {},
) {
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const deps = await makeTestDeps({
    kv,
    queue,
    now: () => NOW,
    egress: egressPolicy({
      restricted: true,
      allowedHosts: parseHostList(allowedHosts),
      resolveDns: fakeDns(dns),
    }),
    ...options,
  });
  return Object.assign(deps, { sent: queue.sent });
}

function manualRun(ref: CharmRef): RunMessage {
  return manualRunMessageFor(ref, NOW);
}

async function runHook(
  deps: Awaited<ReturnType<typeof deployedDeps>>,
  url: string,
) {
  const ref: CharmRef = { space: SPACE, charmId: crypto.randomUUID() };
  // Straight into the store: the create-time check is tested separately.
  await createCharm(deps.kv, ref, RECIPES.get("webhook")!, { url }, NOW);
  const outcome = await runCharm(deps, manualRun(ref));
  const state = (await deps.kv.get<CharmState>(charmStateKey(ref))).value!;
  return { outcome, state, ref };
}

Deno.test("deployed: POST /api/charms refuses a webhook at a private host with 400 naming argument.url", async () => {
  await using deps = await deployedDeps({
    "hooks.example": ["93.184.216.34"],
    "internal.example": ["93.184.216.34", "10.0.0.7"],
  });
  const app = createApp(deps, {
    adminToken: ADMIN,
    serviceDid: (await operatorIdentity()).did,
    exposed: true,
    version: "test",
    startedAt: NOW,
    healthMaxTickAgeMs: 180_000,
  });
  const create = async (charmId: string, url: string) => {
    const response = await app.request("/api/charms", {
      method: "POST",
      headers: {
        authorization: `Bearer ${ADMIN}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({
        space: SPACE,
        recipe: "webhook",
        charmId,
        argument: { url },
      }),
    });
    return { status: response.status, body: await response.json() };
  };
  const refused: [string, RegExp][] = [
    [
      "http://127.0.0.1:9000/run",
      /^argument\.url: host 127\.0\.0\.1 is a loopback address; .*WEBHOOK_ALLOWED_HOSTS/,
    ],
    ["http://[::ffff:169.254.169.254]/", /is a link-local address/],
    ["http://0x0a000001/", /^argument\.url: host 10\.0\.0\.1 is a private/],
    ["http://localhost:8000/", /loopback/],
    [
      "https://internal.example/hook?secret=1",
      /^argument\.url: host internal\.example resolves to a private address;/,
    ],
    [
      "https://nowhere.example/",
      /^argument\.url: host nowhere\.example does not resolve$/,
    ],
  ];
  for (const [url, pattern] of refused) {
    const { status, body } = await create("hook", url);
    assert.equal(status, 400, url);
    assert.match(body.error, pattern);
    assert.ok(!body.error.includes("secret=1"), "no query in the message");
    assert.ok(!body.error.includes("10.0.0.7"), "no resolved address");
  }
  assert.equal((await deps.kv.get(["charms", SPACE, "hook"])).value, null);

  assert.equal((await create("ok", "https://hooks.example/run")).status, 201);
  // Replacing the argument is checked the same way.
  const put = await app.request(`/api/charms/${SPACE}/ok/argument`, {
    method: "PUT",
    headers: {
      authorization: `Bearer ${ADMIN}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ url: "http://192.168.1.1/" }),
  });
  assert.equal(put.status, 400);
  assert.match(
    (await put.json()).error,
    /^argument\.url: host 192\.168\.1\.1 is a private address/,
  );
});

Deno.test("deployed: a webhook whose name now resolves to a private address fails at run time without retries, calling nothing", async () => {
  await using receiver = startWebhookReceiver();
  const port = new URL(receiver.url).port;
  const dns: Record<string, string[]> = { "hook.example": ["93.184.216.34"] };
  await using deps = await deployedDeps(dns);
  dns["hook.example"] = ["::ffff:127.0.0.1"];
  const { outcome, state } = await runHook(
    deps,
    `http://hook.example:${port}/run`,
  );
  assert.equal(outcome, "failed");
  assert.equal(
    state.lastError,
    `NonRetriableError: Cannot call webhook http://hook.example:${port}: host hook.example resolves to a loopback address; private, loopback and link-local hosts are refused outside local development`,
  );
  assert.equal(deps.sent.length, 0, "not retried");
  assert.equal(receiver.calls.length, 0);

  // A literal loopback URL stored before the guard existed is refused too.
  const literal = await runHook(deps, `${receiver.url}/run`);
  assert.equal(literal.outcome, "failed");
  assert.match(literal.state.lastError!, /host 127\.0\.0\.1 is a loopback/);
  assert.equal(receiver.calls.length, 0);
});

Deno.test("deployed: a webhook whose name does not resolve is retried", async () => {
  await using deps = await deployedDeps({});
  const { outcome, state } = await runHook(deps, "https://gone.example/run");
  assert.equal(outcome, "retrying");
  assert.match(
    state.lastError!,
    /^Error: .*host gone\.example does not resolve/,
  );
  assert.equal(deps.sent.length, 1);
});

Deno.test("deployed: WEBHOOK_ALLOWED_HOSTS lets a private host through, but not its redirects", async () => {
  await using receiver = startWebhookReceiver();
  await using deps = await deployedDeps({}, "127.0.0.1");
  const ok = await runHook(deps, `${receiver.url}/run`);
  assert.equal(ok.outcome, "succeeded");
  assert.equal(receiver.callsTo("/run").length, 1);

  receiver.reply("/moved", {
    status: 302,
    headers: { location: "http://169.254.169.254/latest/meta-data/" },
  });
  const moved = await runHook(deps, `${receiver.url}/moved`);
  assert.equal(moved.outcome, "failed");
  assert.match(
    moved.state.lastError!,
    /^NonRetriableError: Webhook http:\/\/127\.0\.0\.1:\d+ replied 302; redirects are not followed outside local development$/,
  );
});

Deno.test("locally, webhooks may call loopback and follow redirects", async () => {
  await using receiver = startWebhookReceiver();
  await using deps = await makeTestDeps({ now: () => NOW });
  receiver.reply("/moved", {
    status: 307,
    headers: { location: `${receiver.url}/run` },
  });
  const ref: CharmRef = { space: SPACE, charmId: "local" };
  await createCharm(
    deps.kv,
    ref,
    RECIPES.get("webhook")!,
    { url: `${receiver.url}/moved` },
    NOW,
  );
  assert.equal(await runCharm(deps, manualRun(ref)), "succeeded");
  assert.equal(receiver.callsTo("/run").length, 1);
});

Deno.test("the service restricts webhooks when DENO_DEPLOYMENT_ID is set, and WEBHOOK_ALLOWED_HOSTS is validated at startup", async () => {
  const ids = INTEGRATIONS.map((i) => i.id);
  const config = loadConfig([], {
    WEBHOOK_ALLOWED_HOSTS: "Hooks.Internal, [fd00::5]",
  }, ids);
  assert.deepEqual(config.webhookAllowedHosts, ["hooks.internal", "fd00::5"]);
  assert.throws(
    () => loadConfig([], { WEBHOOK_ALLOWED_HOSTS: "ok.example,bad:99" }, ids),
    (error: Error) =>
      error instanceof ConfigError &&
      /^WEBHOOK_ALLOWED_HOSTS: "bad:99" is not a host/.test(error.message),
  );
  await using kv = await Deno.openKv(":memory:");
  const build = (env: Record<string, string>) =>
    createService(config, {
      kv,
      queue: nativeQueue(kv),
      allIntegrations: INTEGRATIONS,
      recipes: RECIPES,
      env,
    }).deps.egress;
  assert.equal(build({}).restricted, false);
  const deployed = build({ DENO_DEPLOYMENT_ID: "abc" });
  assert.equal(deployed.restricted, true);
  assert.deepEqual(deployed.allowedHosts, ["hooks.internal", "fd00::5"]);
});

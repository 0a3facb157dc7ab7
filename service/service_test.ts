import assert from "node:assert/strict";
import { z } from "zod";
import { defineRecipe } from "../charm/recipe.ts";
import { loadConfig } from "../config/config.ts";
import type { RunRecord } from "../handlers/run_charm.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import { memorySink, resetLogging, setupLogging } from "../lib/log.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { RECIPES } from "../recipes/mod.ts";
import {
  createCharm,
  getCharmSummary,
  setCharmDisabled,
} from "../store/charms.ts";
import { listDeadLetters } from "../store/dead_letters.ts";
import { charmLeaseKey, runKey, undeliveredKey } from "../store/keys.ts";
import {
  deferred,
  manualRunMessageFor,
  SPACE,
  waitFor,
} from "../test/test_deps.ts";
import {
  createService,
  DEMO_CHARMS,
  logStatus,
  sweepAndReport,
} from "./service.ts";

const IDS = INTEGRATIONS.map((i) => i.id);

function config(args: string[], env: Record<string, string> = {}) {
  return loadConfig(["--integration=manual", ...args], {
    KV_PATH: ":memory:",
    ...env,
  }, IDS);
}

Deno.test({
  name:
    "shutdown() aborts a run past the grace period without counting a failure",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const started = deferred();
    const hang = defineRecipe({
      name: "test-hang",
      description: "waits until aborted",
      argumentSchema: z.object({}),
      resultSchema: z.object({}),
      initialResult: () => ({}),
      handlers: {
        bgUpdater(ctx) {
          started.resolve();
          return new Promise((_, reject) => {
            ctx.signal.addEventListener(
              "abort",
              () => reject(ctx.signal.reason),
            );
          });
        },
      },
    });
    const kv = await Deno.openKv(":memory:");
    try {
      const service = createService(config([], { SHUTDOWN_TIMEOUT_MS: "0" }), {
        kv,
        queue: nativeQueue(kv),
        allIntegrations: INTEGRATIONS,
        recipes: new Map([...RECIPES, [hang.name, hang]]),
        env: {},
      });
      const ref = { space: SPACE, charmId: "h1" } as const;
      await createCharm(kv, ref, hang, {}, Date.now());
      await service.start();
      await kv.enqueue(manualRunMessageFor(ref, 1, "r1"));
      await started.promise;
      await service.shutdown();
      await waitFor(
        "the lease to be released",
        async () => (await kv.get(charmLeaseKey(ref))).value === null,
      );
      const summary = await getCharmSummary(kv, ref);
      assert.equal(summary?.state.totalFailures, 0);
      assert.equal(summary?.state.consecutiveFailures, 0);
      assert.equal(summary?.state.lastError, null);
      // The run is still open, so the redelivered message runs it.
      const record = (await kv.get<RunRecord>(runKey(ref, "manual:r1"))).value;
      assert.equal(record?.state, "running");
    } finally {
      kv.close();
    }
  },
});

Deno.test({
  name: "start() seeds the demo charms once and registers --charms",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const kv = await Deno.openKv(":memory:");
    try {
      const other = { space: SPACE, charmId: "mine" };
      await createCharm(kv, other, RECIPES.get("counter")!, {}, 0);
      for (let i = 0; i < 2; i++) {
        const service = createService(
          config([
            "--demo",
            `--charms=${SPACE}/mine,${SPACE}/missing`,
            "--interval=60",
          ]),
          {
            kv,
            queue: nativeQueue(kv),
            allIntegrations: INTEGRATIONS,
            recipes: RECIPES,
            env: {},
          },
        );
        await service.start();
        await service.shutdown();
      }
      const { listCharms } = await import("../store/charms.ts");
      const page = await listCharms(kv, { integration: "manual", limit: 10 });
      assert.deepEqual(
        page.charms.map((c) => c.charmId).sort(),
        [...DEMO_CHARMS.map((c) => c.charmId), "mine"].sort(),
      );
    } finally {
      kv.close();
    }
  },
});

Deno.test("logStatus() logs counts and the top failing charms", async () => {
  const sink = memorySink();
  await setupLogging("info", sink);
  const kv = await Deno.openKv(":memory:");
  try {
    const service = createService(config([]), {
      kv,
      queue: nativeQueue(kv),
      allIntegrations: INTEGRATIONS,
      recipes: RECIPES,
      env: {},
    });
    const ref = { space: SPACE, charmId: "f1" };
    await createCharm(kv, ref, RECIPES.get("counter")!, {}, 0);
    await setCharmDisabled(kv, ref, true, "test");
    await logStatus(service.deps);
    const line = sink.records.find((r) =>
      r.category.join(".") === "bcs.status"
    );
    assert.ok(line, "a status record");
    assert.equal(line.properties.disabled, 1);
    assert.equal(line.properties.cycles, 0);
    assert.equal(line.properties.top, "none");
  } finally {
    kv.close();
    await resetLogging();
  }
});

Deno.test("sweepAndReport() moves undelivered messages into the dead letters", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const service = createService(config([]), {
      kv,
      queue: nativeQueue(kv),
      allIntegrations: INTEGRATIONS,
      recipes: RECIPES,
      env: {},
    });
    const ref = { space: SPACE, charmId: "u1" };
    await kv.set(undeliveredKey(ref, "manual:1", 1), {
      type: "run",
      charmId: "u1",
    });
    assert.equal(await sweepAndReport(service.deps), 1);
    assert.equal(await sweepAndReport(service.deps), 0);
    const { deadLetters } = await listDeadLetters(kv, { limit: 10 });
    assert.equal(deadLetters.length, 1);
    assert.match(deadLetters[0]!.reason, /^undelivered/);
    assert.deepEqual(deadLetters[0]!.message, { type: "run", charmId: "u1" });
  } finally {
    kv.close();
  }
});

Deno.test("createService() restricts webhooks' egress outside local development: Deno Deploy, a HOST beyond loopback, an ADMIN_TOKEN", async () => {
  using kv = await Deno.openKv(":memory:");
  const egressWith = (env: Record<string, string>) =>
    createService(config(["--integration=manual"]), {
      kv,
      queue: nativeQueue(kv),
      allIntegrations: INTEGRATIONS,
      recipes: RECIPES,
      env,
    }).deps.egress.restricted;
  assert.equal(egressWith({}), false);
  assert.equal(egressWith({ HOST: "127.0.0.1" }), false);
  // Behind a proxy on loopback, an ADMIN_TOKEN says strangers reach it.
  assert.equal(egressWith({ HOST: "127.0.0.1", ADMIN_TOKEN: "t" }), true);
  assert.equal(egressWith({ HOST: "0.0.0.0" }), true);
  assert.equal(egressWith({ HOST: "10.1.2.3" }), true);
  assert.equal(egressWith({ DENO_DEPLOYMENT_ID: "abc" }), true);
});

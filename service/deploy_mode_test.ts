/**
 * Deno Deploy mode: KV and cron but no queues. The service must run charms on
 * schedule with the `kv` driver drained inside cron ticks, never touching
 * `enqueue` or `listenQueue`.
 */
import assert from "node:assert/strict";
import { loadConfig } from "../config/config.ts";
import { offsetMs } from "../handlers/fanout.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import { chooseQueue, createQueue } from "../queue/select_driver.ts";
import { RECIPES } from "../recipes/mod.ts";
import { createCharm, getCharmDetail, registerCharm } from "../store/charms.ts";
import { SPACE } from "../test/test_deps.ts";
import { createService } from "./service.ts";

/**
 * A KV whose queue methods fail, as on the new Deno Deploy, and which refuses
 * an atomic operation of more than 10 checks, as KV Connect does: off a local
 * KV the service keeps to that.
 */
function kvWithoutQueues(kv: Deno.Kv): Deno.Kv {
  const refuse = () => {
    throw new Error("This platform has no KV queues");
  };
  return new Proxy(kv, {
    get(target, property) {
      if (property === "enqueue" || property === "listenQueue") return refuse;
      if (property === "atomic") {
        return () => {
          const op = target.atomic();
          let checks = 0;
          const proxy: Deno.AtomicOperation = new Proxy(op, {
            get(opTarget, opProperty) {
              if (opProperty === "enqueue") return refuse;
              if (opProperty === "check") {
                return (...args: Deno.AtomicCheck[]) => {
                  checks += args.length;
                  opTarget.check(...args);
                  return proxy;
                };
              }
              if (opProperty === "commit" && checks > 10) {
                return () =>
                  Promise.reject(
                    new TypeError(`Too many checks (${checks}, max 10)`),
                  );
              }
              const value = Reflect.get(opTarget, opProperty, opTarget);
              return typeof value === "function"
                ? (...args: unknown[]) => {
                  const result = value.apply(opTarget, args);
                  return result === opTarget ? proxy : result;
                }
                : value;
            },
          });
          return proxy;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("chooseQueue() picks the kv driver and cron draining on Deno Deploy", () => {
  const config = {
    queueDriver: "auto",
    queueWorker: "auto",
    kvPath: ":memory:",
  } as const;
  assert.deepEqual(
    chooseQueue(config, { DENO_DEPLOYMENT_ID: "abc" }),
    {
      driver: "kv",
      worker: "cron",
      reason: "Deno Deploy has no KV queues",
      localKv: false,
    },
  );
  assert.equal(chooseQueue(config, {}).driver, "native");
  assert.equal(chooseQueue(config, {}).localKv, true);
  const remote = chooseQueue(
    { ...config, kvPath: "https://kv.example.com/db" },
    {},
  );
  assert.equal(remote.worker, "loop");
  assert.equal(remote.localKv, false);
  assert.equal(chooseQueue({ ...config, queueDriver: "kv" }, {}).driver, "kv");
});

Deno.test({
  name:
    "Deploy mode: charms run on schedule from cron ticks alone, without queues",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const raw = await Deno.openKv(":memory:");
    const kv = kvWithoutQueues(raw);
    try {
      const env = { DENO_DEPLOYMENT_ID: "test-deployment" };
      const config = loadConfig(
        ["--integration=manual", "--interval=1"],
        {
          KV_PATH: ":memory:",
          // Runs start only while one could still finish (timeout + 5 s)
          // within the drain: 2.5 s of starting here.
          DRAIN_BUDGET_MS: "8500",
          CHARM_EXECUTION_TIMEOUT_MS: "1000",
          QUEUE_POLL_MS: "20",
        },
        INTEGRATIONS.map((i) => i.id),
      );
      // The service's clock starts a minute, as a cron tick does, so the
      // drain is not cut short by the next minute's tick (it ends 2 s
      // before it); the queue keeps the real clock, offsets stay relative.
      const shift = Math.ceil(Date.now() / 60_000) * 60_000 + 100 -
        Date.now();
      const now = () => Date.now() + shift;
      const choice = chooseQueue(config, env);
      const queue = createQueue(kv, choice, config, "deploy-test");
      const service = createService(config, {
        kv,
        queue,
        worker: choice.worker,
        allIntegrations: INTEGRATIONS,
        recipes: RECIPES,
        env,
        now,
      });
      const refs = ["d1", "d2", "d3"].map((charmId) => ({
        space: SPACE,
        charmId,
      }));
      for (const ref of refs) {
        await createCharm(kv, ref, RECIPES.get("counter")!, {}, Date.now());
        await registerCharm(kv, "manual", ref, Date.now());
      }
      await service.start();
      // Starting an isolate fans nothing out: the cron tick does.
      const depth = await queue.depth!();
      assert.equal(depth.dueNow + depth.delayed + depth.leased, 0);
      // One cron tick: it fans out this minute's 1 s slots and drains what
      // comes due while runs can still start.
      const tickStart = now();
      await service.onCron();
      const tickEnd = now();
      for (const ref of refs) {
        const detail = await getCharmDetail(kv, ref);
        const result = detail?.cells.result as {
          count: number;
          lastRunAt: number;
          lastSlot: number;
        };
        assert.ok(result.count >= 1, `${ref.charmId} ran`);
        // It ran no earlier than its slot's scheduled time, inside the tick.
        assert.ok(
          result.lastRunAt >= result.lastSlot + offsetMs(ref, "manual", 1_000),
        );
        assert.ok(result.lastRunAt >= tickStart && result.lastRunAt <= tickEnd);
        assert.equal(detail?.state.totalFailures, 0);
      }
      await service.shutdown();
    } finally {
      raw.close();
    }
  },
});

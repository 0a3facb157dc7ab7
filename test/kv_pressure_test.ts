/**
 * KV pressure: many runs committing at once to the same service counters
 * and to the same charm's state, through each queue driver with a real
 * listener. No increment may be lost (counters use `sum`, per-charm state is
 * checked and retried on conflict), each run's effect lands exactly once,
 * and no lease or `running` record is left behind.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import { defineRecipe } from "../charm/recipe.ts";
import { dispatch, listenOptions } from "../handlers/dispatch.ts";
import { runKeyOf, type RunMessage } from "../handlers/messages.ts";
import { runCharm, type RunRecord } from "../handlers/run_charm.ts";
import { Semaphore } from "../lib/semaphore.ts";
import { kvQueue } from "../queue/kv_queue.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import type { QueueDriver } from "../queue/queue.ts";
import { RECIPES } from "../recipes/mod.ts";
import type { ServiceDeps } from "../service/deps.ts";
import { createCharm } from "../store/charms.ts";
import {
  cellKey,
  charmLeaseKey,
  charmStateKey,
  undeliveredKey,
} from "../store/keys.ts";
import { LOCAL_MAX_CHECKS } from "../store/kv_util.ts";
import { readServiceState } from "../store/service_state.ts";
import {
  makeTestDeps,
  manualRunMessageFor,
  recordingQueue,
  runMessageFor,
  SPACE,
  waitFor,
} from "./test_deps.ts";

const CHARMS = 200;
const MANUAL_RUNS = 30;
const SLOT = Date.UTC(2026, 10, 28, 12, 0);

const DRIVERS: { name: string; make(kv: Deno.Kv): QueueDriver }[] = [
  { name: "native", make: (kv) => nativeQueue(kv) },
  {
    name: "kv",
    make: (kv) =>
      kvQueue(kv, {
        owner: "pressure",
        leaseMs: 10_000,
        maxInFlight: 50,
        pollMs: 20,
        maxChecks: LOCAL_MAX_CHECKS,
      }),
  },
];

function scheduled(ref: CharmRef): RunMessage {
  return runMessageFor(ref, SLOT);
}

function manual(ref: CharmRef, n: number): RunMessage {
  return manualRunMessageFor(ref, SLOT + n, `run-${n}`);
}

async function createCounters(
  deps: ServiceDeps,
  count: number,
): Promise<CharmRef[]> {
  const refs: CharmRef[] = [];
  for (let i = 0; i < count; i++) {
    const ref = { space: SPACE, charmId: `p${i}` };
    await createCharm(deps.kv, ref, RECIPES.get("counter")!, {}, SLOT);
    refs.push(ref);
  }
  return refs;
}

/** Enqueues every message at once (100 per commit, KV's limit). */
async function enqueueAll(
  deps: ServiceDeps,
  messages: RunMessage[],
): Promise<void> {
  for (let i = 0; i < messages.length; i += 100) {
    const op = deps.kv.atomic();
    for (const message of messages.slice(i, i + 100)) {
      deps.queue.enqueue(op, message, {
        delayMs: 0,
        undeliveredKey: undeliveredKey(message, runKeyOf(message), 1),
      });
    }
    assert.ok((await op.commit()).ok);
  }
}

/** Every run record of `ref`, by run key. */
async function runRecords(
  kv: Deno.Kv,
  ref: CharmRef,
): Promise<Map<string, RunRecord>> {
  const records = new Map<string, RunRecord>();
  for await (
    const entry of kv.list<RunRecord>({
      prefix: ["runs", ref.space, ref.charmId],
    })
  ) {
    records.set(String(entry.key[3]), entry.value);
  }
  return records;
}

async function counterState(kv: Deno.Kv, ref: CharmRef) {
  const [state, result, lease] = await kv.getMany<
    [CharmState, { count: number }, unknown]
  >([charmStateKey(ref), cellKey(ref, "result"), charmLeaseKey(ref)]);
  return {
    state: state.value!,
    count: result.value!.count,
    lease: lease.value,
  };
}

Deno.test("runCharm() loses no service counter increment across 200 concurrent runs", async () => {
  await using deps = await makeTestDeps({
    semaphore: new Semaphore(CHARMS),
    now: () => SLOT,
  });
  const refs = await createCounters(deps, CHARMS);
  const outcomes = await Promise.all(
    refs.map((ref) => runCharm(deps, scheduled(ref))),
  );
  assert.deepEqual(new Set(outcomes), new Set(["succeeded"]));
  const service = await readServiceState(deps.kv);
  assert.equal(service.totalCharmsProcessed, CHARMS);
  assert.equal(service.totalSuccesses, CHARMS);
  assert.equal(service.totalFailures, 0);
  for (const ref of refs) {
    const { state, count, lease } = await counterState(deps.kv, ref);
    assert.equal(count, 1, ref.charmId);
    assert.equal(state.totalExecutions, 1, ref.charmId);
    assert.equal(lease, null, ref.charmId);
  }
});

/**
 * Through `driver` with a real listener: 200 charms' scheduled runs and a
 * burst of manual runs of one of them, enqueued at once.
 */
async function _pressure(driver: (typeof DRIVERS)[number]): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const queue = driver.make(kv);
  await using deps = await makeTestDeps({
    kv,
    queue,
    semaphore: new Semaphore(5),
  });
  // As the service listens: the kv driver starts a claimed batch's reads at
  // once, so the hot charm's runs start from reads gone stale.
  const listening = queue.listen(
    async (raw, delivery) => void await dispatch(deps, raw, delivery),
    listenOptions(deps),
  );
  try {
    const refs = await createCounters(deps, CHARMS);
    const [hot] = refs as [CharmRef];
    // One charm gets a burst of manual runs on top of its scheduled
    // one: its lease serializes them; the losers defer and come back.
    const burst = Array.from(
      { length: MANUAL_RUNS },
      (_, n) => manual(hot, n),
    );
    await enqueueAll(deps, [...refs.map(scheduled), ...burst]);

    const total = CHARMS + MANUAL_RUNS;
    await waitFor(
      `${total} runs recorded`,
      async () => (await readServiceState(kv)).totalCharmsProcessed === total,
      120_000,
    );

    // Counters exact: nothing lost, nothing counted twice.
    const service = await readServiceState(kv);
    assert.equal(service.totalSuccesses, total);
    assert.equal(service.totalFailures, 0);
    assert.equal(service.deadLetters, 0);

    // The hot charm: every run once, serialized, nothing left held.
    const { state, count, lease } = await counterState(kv, hot);
    assert.equal(count, MANUAL_RUNS + 1);
    assert.equal(state.totalSuccesses, MANUAL_RUNS + 1);
    assert.equal(state.totalAttempts, MANUAL_RUNS + 1);
    assert.equal(lease, null);
    const records = await runRecords(kv, hot);
    assert.equal(records.size, MANUAL_RUNS + 1);
    for (const [run, record] of records) {
      assert.equal(record.state, "succeeded", run);
      assert.equal(record.attempt, 1, run);
    }

    // Every other charm ran once.
    for (const ref of refs.slice(1)) {
      const other = await counterState(kv, ref);
      assert.equal(other.count, 1, ref.charmId);
      assert.equal(other.state.totalExecutions, 1, ref.charmId);
      assert.equal(other.lease, null, ref.charmId);
    }
    // Nothing left open anywhere: no run record short of final, no lease.
    for await (const entry of kv.list<RunRecord>({ prefix: ["runs"] })) {
      assert.equal(entry.value.state, "succeeded", entry.key.join("/"));
    }
    for await (const entry of kv.list({ prefix: ["charm_leases"] })) {
      assert.fail(`lease left behind: ${entry.key.join("/")}`);
    }
    assert.equal(deps.semaphore.inUse, 0);
  } finally {
    queue.stop?.();
    kv.close();
    await listening.catch(() => {});
  }
}

Deno.test({
  name:
    `both queues: 200 charms run at once and ${MANUAL_RUNS} manual runs of one charm each land exactly once`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // The drivers run side by side: the deferrals' waits then overlap.
    await Promise.all(
      DRIVERS.map((driver) =>
        _pressure(driver).catch((error) => {
          throw new Error(`${driver.name} queue: ${error.message}`, {
            cause: error,
          });
        })
      ),
    );
  },
});

Deno.test("runCharm() runs again a run whose lease expired and went to another run", async () => {
  // Run A stalls past its lease (a blocked process); a run of the next slot
  // finds the lease expired, takes it and finishes. A's outcome commit then
  // fails its lease check. A must not be lost: its record must not stay
  // `running` with no message left to finish it.
  let clock = SLOT;
  const gate = Promise.withResolvers<void>();
  const gated = defineRecipe({
    name: "test-gated",
    description: "slot SLOT waits on a gate",
    argumentSchema: z.object({}),
    resultSchema: z.object({ runs: z.number() }),
    initialResult: () => ({ runs: 0 }),
    handlers: {
      async bgUpdater(ctx) {
        if (ctx.slot === SLOT) await gate.promise;
        ctx.result.set({ runs: ctx.result.get().runs + 1 });
      },
    },
  });
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  await using deps = await makeTestDeps({
    kv,
    queue,
    now: () => clock,
    recipes: new Map([...RECIPES, [gated.name, gated]]),
  });
  const ref = { space: SPACE, charmId: "stalled" };
  await createCharm(kv, ref, gated, {}, clock);
  const a = scheduled(ref);
  const b = { ...scheduled(ref), slot: SLOT + 60_000 };

  const runA = runCharm(deps, a);
  await waitFor(
    "A to hold the lease",
    async () => (await kv.get(charmLeaseKey(ref))).value !== null,
  );
  clock += deps.policy.charmExecutionTimeoutMs + 6_000;
  assert.equal(await runCharm(deps, b), "succeeded");
  gate.resolve();
  assert.equal(await runA, "lease-lost");

  // A goes again: delivering what it left in the queue finishes it.
  const again = queue.sent.map((s) => s.message);
  assert.deepEqual(again, [a]);
  assert.equal(await runCharm(deps, again[0]!), "succeeded");
  const records = await runRecords(kv, ref);
  assert.deepEqual(
    [...records.values()].map((r) => r.state),
    ["succeeded", "succeeded"],
  );
  assert.deepEqual((await kv.get(cellKey(ref, "result"))).value, { runs: 2 });
  assert.equal((await kv.get(charmLeaseKey(ref))).value, null);
});

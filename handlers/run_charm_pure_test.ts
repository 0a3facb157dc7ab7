/**
 * Runs of pure recipes: no lease, one commit that checks everything the run
 * read, and a leased re-run after a conflict.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import { type AnyRecipe, defineRecipe } from "../charm/recipe.ts";
import { RECIPES } from "../recipes/mod.ts";
import { createCharm } from "../store/charms.ts";
import {
  cellKey,
  charmLeaseKey,
  charmStateKey,
  runKey,
} from "../store/keys.ts";
import {
  deferred,
  makeTestDeps,
  recordingQueue,
  runMessageFor,
  SPACE,
  waitFor,
} from "../test/test_deps.ts";
import { directDelivery } from "../queue/queue.ts";
import { countingKv } from "../bench/counting_kv.ts";
import { runSnapshot } from "../store/run_snapshot.ts";
import { dispatch, prefetchMessages } from "./dispatch.ts";
import { Prefetched } from "./prefetch.ts";
import { type Lease, runCharm, type RunRecord } from "./run_charm.ts";

const SLOT = Date.UTC(2026, 10, 28, 12, 0);

/** A pure counter whose runs wait on `gates` (one per execution, in order). */
function gatedCounter(gates: Promise<void>[], started: () => void) {
  let executions = 0;
  const recipe = defineRecipe({
    name: "test-pure-gated",
    description: "pure: counts runs, each waits on its gate",
    pure: true,
    argumentSchema: z.object({}),
    resultSchema: z.object({ runs: z.number() }),
    initialResult: () => ({ runs: 0 }),
    handlers: {
      async bgUpdater(ctx) {
        const gate = gates[executions++];
        started();
        await gate;
        ctx.result.set({ runs: ctx.result.get().runs + 1 });
      },
    },
  });
  return { recipe, executions: () => executions };
}

async function setup(...extra: AnyRecipe[]) {
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const recipes = new Map(RECIPES);
  for (const recipe of extra) recipes.set(recipe.name, recipe);
  const deps = await makeTestDeps({ kv, queue, recipes, now: () => SLOT });
  return {
    deps,
    kv,
    queue,
    async create(recipe: string, charmId = "p1"): Promise<CharmRef> {
      const ref = { space: SPACE, charmId };
      await createCharm(kv, ref, recipes.get(recipe)!, {}, SLOT);
      return ref;
    },
    async runs(ref: CharmRef): Promise<number> {
      const result = await kv.get<{ runs: number }>(cellKey(ref, "result"));
      return result.value!.runs;
    },
  };
}

/** A charm of a pure counter whose runs never wait. */
async function openCounter() {
  const counter = gatedCounter(Array(4).fill(Promise.resolve()), () => {});
  const t = await setup(counter.recipe);
  return { t, ref: await t.create(counter.recipe.name), counter };
}

Deno.test("runCharm() runs a pure recipe without a lease or a running record", async () => {
  const gate = deferred();
  let started = 0;
  const counter = gatedCounter([gate.promise], () => started++);
  const t = await setup(counter.recipe);
  await using _deps = t.deps;
  const ref = await t.create(counter.recipe.name);
  const message = runMessageFor(ref, SLOT);

  const running = runCharm(t.deps, message);
  await waitFor("the handler to start", () => started === 1);
  // Mid-run: nothing written yet, nothing held.
  assert.equal((await t.kv.get(charmLeaseKey(ref))).value, null);
  assert.equal((await t.kv.get(runKey(ref, `manual:${SLOT}`))).value, null);
  gate.resolve();
  assert.equal(await running, "succeeded");

  assert.equal(await t.runs(ref), 1);
  const record = await t.kv.get<RunRecord>(runKey(ref, `manual:${SLOT}`));
  assert.equal(record.value?.state, "succeeded");
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.equal(state.value?.totalSuccesses, 1);
  assert.equal((await t.kv.get(charmLeaseKey(ref))).value, null);
});

Deno.test("runCharm() reads a pure first try's recipe from the state, and gives an older state the record's copy", async () => {
  const counter = gatedCounter(Array(2).fill(Promise.resolve()), () => {});
  const t = await setup(counter.recipe);
  await using _deps = t.deps;
  const { kv: counted, counts } = countingKv(t.kv);
  const deps = { ...t.deps, kv: counted };
  const ref = await t.create(counter.recipe.name);
  const stateOf = async () =>
    (await t.kv.get<CharmState>(charmStateKey(ref))).value!;
  assert.deepEqual((await stateOf()).record, {
    recipe: counter.recipe.name,
    createdAt: SLOT,
  });

  // One three-key read: the charm record itself is not read.
  assert.equal(await runCharm(deps, runMessageFor(ref, SLOT)), "succeeded");
  assert.deepEqual([counts.getMany, counts.get], [1, 0]);

  // A state written before states carried the copy: the run reads the
  // record too, and its outcome adds the copy.
  const { record: _record, ...older } = await stateOf();
  await t.kv.set(charmStateKey(ref), older);
  Object.assign(counts, { getMany: 0, get: 0 });
  const next = runMessageFor(ref, SLOT + 60_000);
  assert.equal(await runCharm(deps, next), "succeeded");
  assert.deepEqual([counts.getMany, counts.get], [1, 1]);
  assert.equal(await t.runs(ref), 2);
  assert.deepEqual((await stateOf()).record, {
    recipe: counter.recipe.name,
    createdAt: SLOT,
  });
});

Deno.test("runCharm() records two concurrent deliveries of a pure run once", async () => {
  const gate = deferred();
  let started = 0;
  const counter = gatedCounter([gate.promise, gate.promise], () => started++);
  const t = await setup(counter.recipe);
  await using _deps = t.deps;
  const ref = await t.create(counter.recipe.name);
  const message = runMessageFor(ref, SLOT);

  const both = [runCharm(t.deps, message), runCharm(t.deps, message)];
  // Both execute (neither takes a lease) ...
  await waitFor("both handlers to start", () => started === 2);
  gate.resolve();
  // ... and only one commits; the other finds the run finished.
  assert.deepEqual((await Promise.all(both)).sort(), [
    "duplicate",
    "succeeded",
  ]);
  assert.equal(counter.executions(), 2);
  assert.equal(await t.runs(ref), 1);
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.equal(state.value?.totalExecutions, 1);
});

Deno.test("runCharm() runs a pure run again under a lease when its cells changed meanwhile", async () => {
  const first = deferred();
  const third = deferred();
  let started = 0;
  // Execution 1 (slot A) waits; execution 2 (slot B) runs through; A's commit
  // then fails its checks and A runs again (execution 3) on B's result.
  const counter = gatedCounter(
    [first.promise, Promise.resolve(), third.promise],
    () => started++,
  );
  const t = await setup(counter.recipe);
  await using _deps = t.deps;
  const ref = await t.create(counter.recipe.name);

  const a = runCharm(t.deps, runMessageFor(ref, SLOT));
  await waitFor("run A to start", () => started === 1);
  assert.equal(
    await runCharm(t.deps, runMessageFor(ref, SLOT + 60_000)),
    "succeeded",
  );
  first.resolve();
  await waitFor("run A to start again", () => started === 3);
  // This time under the charm's lease, with a `running` record.
  const lease = await t.kv.get<Lease>(charmLeaseKey(ref));
  assert.equal(lease.value?.run, `manual:${SLOT}`);
  const record = await t.kv.get<RunRecord>(runKey(ref, `manual:${SLOT}`));
  assert.equal(record.value?.state, "running");
  third.resolve();
  assert.equal(await a, "succeeded");

  assert.equal(counter.executions(), 3);
  // No lost update: both runs counted.
  assert.equal(await t.runs(ref), 2);
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.equal(state.value?.totalSuccesses, 2);
  // The re-run took the lease and gave it back.
  assert.equal((await t.kv.get(charmLeaseKey(ref))).value, null);
});

Deno.test("runCharm() fails a pure recipe that calls fetch, naming why", async () => {
  const sneaky = defineRecipe({
    name: "test-pure-fetch",
    description: "pure, but fetches",
    pure: true,
    argumentSchema: z.object({}),
    resultSchema: z.object({}),
    initialResult: () => ({}),
    handlers: {
      async bgUpdater(ctx) {
        await ctx.fetch("http://127.0.0.1:9/");
      },
    },
  });
  const t = await setup(sneaky);
  await using _deps = t.deps;
  const ref = await t.create(sneaky.name);
  assert.equal(await runCharm(t.deps, runMessageFor(ref, SLOT)), "failed");
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.match(
    state.value?.lastError ?? "",
    /NonRetriableError: Recipe "test-pure-fetch" is pure: it cannot call fetch/,
  );
  // Non-retriable: no retry was enqueued.
  assert.equal(t.queue.sent.length, 0);
});

Deno.test("runCharm() leaves nothing behind when shutdown interrupts a pure run", async () => {
  let started = 0;
  const never = new Promise<void>(() => {});
  const counter = gatedCounter([never], () => started++);
  const shutdown = new AbortController();
  const kv = await Deno.openKv(":memory:");
  const recipes = new Map<string, AnyRecipe>(RECIPES);
  recipes.set(counter.recipe.name, counter.recipe);
  await using deps = await makeTestDeps({
    kv,
    queue: recordingQueue(kv),
    recipes,
    now: () => SLOT,
    shutdownSignal: shutdown.signal,
  });
  const ref = { space: SPACE, charmId: "p1" };
  await createCharm(kv, ref, counter.recipe, {}, SLOT);
  const before = await kv.get(charmStateKey(ref));

  const running = runCharm(deps, runMessageFor(ref, SLOT));
  await waitFor("the handler to start", () => started === 1);
  shutdown.abort();
  assert.equal(await running, "interrupted");

  assert.equal((await kv.get(runKey(ref, `manual:${SLOT}`))).value, null);
  assert.equal(
    (await kv.get(charmStateKey(ref))).versionstamp,
    before.versionstamp,
  );
  assert.equal((await kv.get(charmLeaseKey(ref))).value, null);
});

Deno.test("runCharm() refuses a pure recipe's fetch under a lease too", async () => {
  const gate = deferred();
  let started = 0;
  const fetched: string[] = [];
  const sneaky = defineRecipe({
    name: "test-pure-sneaky",
    description: "pure, fetches on its second execution",
    pure: true,
    argumentSchema: z.object({}),
    resultSchema: z.object({ runs: z.number() }),
    initialResult: () => ({ runs: 0 }),
    handlers: {
      async bgUpdater(ctx) {
        const execution = ++started;
        if (execution === 1) await gate.promise;
        if (execution === 3) {
          // The leased re-run after the conflict below.
          await ctx.fetch("https://example.test/effect");
          fetched.push("effect");
        }
        ctx.result.set({ runs: ctx.result.get().runs + 1 });
      },
    },
  });
  const t = await setup(sneaky);
  await using _deps = t.deps;
  const ref = await t.create(sneaky.name);
  const a = runCharm(t.deps, runMessageFor(ref, SLOT));
  await waitFor("run A to start", () => started === 1);
  // Another slot commits meanwhile: A's commit conflicts, A re-runs leased.
  assert.equal(
    await runCharm(t.deps, runMessageFor(ref, SLOT + 60_000)),
    "succeeded",
  );
  gate.resolve();
  assert.equal(await a, "failed");
  assert.deepEqual(fetched, []);
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.match(state.value?.lastError ?? "", /is pure: it cannot call fetch/);
});

Deno.test("runCharm() drops a later redelivery of a finished pure run", async () => {
  const { t, ref } = await openCounter();
  await using _deps = t.deps;
  const message = runMessageFor(ref, SLOT);
  assert.equal(await runCharm(t.deps, message), "succeeded");

  // The first try does not read the run record: the redelivery executes,
  // its commit finds the record, and nothing is counted twice.
  assert.equal(await runCharm(t.deps, message), "duplicate");
  assert.equal(await t.runs(ref), 1);
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.equal(state.value?.totalExecutions, 1);
  assert.equal(state.value?.totalSuccesses, 1);
});

Deno.test("runCharm() defers a pure run while another run holds the charm's lease", async () => {
  const { t, ref } = await openCounter();
  await using _deps = t.deps;
  const held: Lease = {
    run: `manual:${SLOT - 60_000}`,
    attempt: 1,
    owner: "another-process",
    expiresAt: SLOT + 30_000,
  };
  await t.kv.set(charmLeaseKey(ref), held);

  assert.equal(await runCharm(t.deps, runMessageFor(ref, SLOT)), "deferred");
  // Whatever executed on the first try committed nothing.
  assert.equal(await t.runs(ref), 0);
  assert.equal((await t.kv.get(runKey(ref, `manual:${SLOT}`))).value, null);
  assert.deepEqual((await t.kv.get(charmLeaseKey(ref))).value, held);
  assert.equal(t.queue.sent.length, 1);
});

Deno.test("runCharm() runs a pure run over an expired lease left by a crash", async () => {
  const { t, ref } = await openCounter();
  await using _deps = t.deps;
  await t.kv.set(
    charmLeaseKey(ref),
    {
      run: `manual:${SLOT - 60_000}`,
      attempt: 1,
      owner: "crashed-process",
      expiresAt: SLOT - 1,
    } satisfies Lease,
  );

  assert.equal(await runCharm(t.deps, runMessageFor(ref, SLOT)), "succeeded");
  assert.equal(await t.runs(ref), 1);
  assert.equal((await t.kv.get(charmLeaseKey(ref))).value, null);
  const record = await t.kv.get<RunRecord>(runKey(ref, `manual:${SLOT}`));
  assert.equal(record.value?.state, "succeeded");
});

Deno.test("dispatch() runs from the read prefetched when its job was claimed, and reads again once it went stale", async () => {
  const { t, ref, counter } = await openCounter();
  await using _deps = t.deps;
  const a = runMessageFor(ref, SLOT);
  const b = runMessageFor(ref, SLOT + 60_000);
  // Both claimed in one batch: both reads start before either runs.
  const [forA, forB] = prefetchMessages(t.deps, [a, b]);
  assert.ok(forA instanceof Prefetched && forB instanceof Prefetched);
  const direct = directDelivery(t.kv);

  assert.equal(
    await dispatch(t.deps, a, { ...direct, prefetched: forA }),
    "succeeded",
  );
  // B's read predates A's outcome: B runs on it, its commit's checks fail,
  // and it runs again on A's result. Nothing is lost.
  assert.equal(
    await dispatch(t.deps, b, { ...direct, prefetched: forB }),
    "succeeded",
  );
  assert.equal(counter.executions(), 3);
  assert.equal(await t.runs(ref), 2);
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.equal(state.value?.totalSuccesses, 2);
});

Deno.test("dispatch() reads for itself when the prefetched read failed or is another message's", async () => {
  const { t, ref, counter } = await openCounter();
  await using _deps = t.deps;
  const a = runMessageFor(ref, SLOT);
  const b = runMessageFor(ref, SLOT + 60_000);
  const direct = directDelivery(t.kv);
  // A failed prefetch (KV unavailable for a moment) resolves to null.
  const failed = new Prefetched(a, a, Promise.resolve(null));
  assert.equal(
    await dispatch(t.deps, a, { ...direct, prefetched: failed }),
    "succeeded",
  );
  // A read prefetched for slot A's message, handed to B's delivery, is not
  // used for B (it assumes A's run record absent: B would run twice).
  const [forA] = prefetchMessages(t.deps, [runMessageFor(ref, SLOT)]);
  assert.equal(
    await dispatch(t.deps, b, { ...direct, prefetched: forA }),
    "succeeded",
  );
  // Each ran once, on a fresh read: no conflict, no re-run.
  assert.equal(counter.executions(), 2);
  assert.equal(await t.runs(ref), 2);
});

Deno.test("dispatch() runs a pure first try from its fan-out snapshot without a read, and reads again once it went stale", async () => {
  const { t, ref, counter } = await openCounter();
  await using _deps = t.deps;
  const { kv: counted, counts } = countingKv(t.kv);
  const deps = { ...t.deps, kv: counted };
  const direct = directDelivery(counted);
  const snapshotNow = async () => {
    const [state, argument, result] = await t.kv.getMany<
      [CharmState, unknown, unknown]
    >([charmStateKey(ref), cellKey(ref, "argument"), cellKey(ref, "result")]);
    return runSnapshot(state, argument, result);
  };

  const a = runMessageFor(ref, SLOT);
  const [forA] = prefetchMessages(deps, [a], [await snapshotNow()]);
  assert.equal(
    await dispatch(deps, a, { ...direct, prefetched: forA }),
    "succeeded",
  );
  // No read at all: one commit.
  assert.deepEqual(
    [counts.get, counts.getMany, counts.list, counts.commit],
    [0, 0, 0, 1],
  );
  assert.equal(await t.runs(ref), 1);

  // The result changes after the snapshot: the run's commit sees it, and the
  // run reads again and counts on from what is there.
  const b = runMessageFor(ref, SLOT + 60_000);
  const stale = await snapshotNow();
  await t.kv.set(cellKey(ref, "result"), { runs: 10 });
  const [forB] = prefetchMessages(deps, [b], [stale]);
  assert.equal(
    await dispatch(deps, b, { ...direct, prefetched: forB }),
    "succeeded",
  );
  assert.equal(await t.runs(ref), 11);
  assert.equal(counter.executions(), 3);
  const state = await t.kv.get<CharmState>(charmStateKey(ref));
  assert.equal(state.value?.totalSuccesses, 2);
});

Deno.test("dispatch() reads for itself when a snapshot is malformed", async () => {
  const { t, ref, counter } = await openCounter();
  await using _deps = t.deps;
  const { kv: counted, counts } = countingKv(t.kv);
  const deps = { ...t.deps, kv: counted };
  const a = runMessageFor(ref, SLOT);
  const [forA] = prefetchMessages(deps, [a], [{ state: "not an entry" }]);
  assert.equal(
    await dispatch(deps, a, { ...directDelivery(counted), prefetched: forA }),
    "succeeded",
  );
  assert.equal(counts.getMany, 1);
  assert.equal(counter.executions(), 1);
  assert.equal(await t.runs(ref), 1);
});

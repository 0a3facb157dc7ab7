import assert from "node:assert/strict";
import { z } from "zod";
import { defineRecipe } from "../charm/recipe.ts";
import { RECIPES } from "../recipes/mod.ts";
import {
  createCharm,
  registerCharm,
  setCharmDisabled,
} from "../store/charms.ts";
import {
  makeTestDeps,
  recordingQueue,
  SPACE,
  type TestDepsOptions,
} from "../test/test_deps.ts";
import { DEFAULT_SHARDS, type Job, kvQueue } from "../queue/kv_queue.ts";
import { cellKey, charmStateKey, queueShardPrefix } from "../store/keys.ts";
import { runSnapshot } from "../store/run_snapshot.ts";
import { LOCAL_MAX_CHECKS } from "../store/kv_util.ts";
import { countingKv } from "../bench/counting_kv.ts";
import { dispatch, listenOptions } from "./dispatch.ts";
import type { CharmState } from "../charm/charm.ts";
import { fanout, offsetMs, slotsInWindow, TICK_MS, tickOf } from "./fanout.ts";
import type { RunMessage } from "./messages.ts";
import { tick } from "./tick.ts";
import { readServiceState } from "../store/service_state.ts";

const TICK = Date.UTC(2026, 10, 28, 12, 0);

async function setup(options: TestDepsOptions = {}) {
  let clock = TICK;
  const kv = options.kv ?? await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const deps = await makeTestDeps({ kv, queue, now: () => clock, ...options });
  return {
    deps,
    queue,
    setClock: (ms: number) => (clock = ms),
    async addCharms(count: number, integration = "manual", recipe = "counter") {
      const refs = [];
      for (let i = 0; i < count; i++) {
        const ref = { space: SPACE, charmId: `c${String(i).padStart(5, "0")}` };
        await createCharm(kv, ref, RECIPES.get(recipe)!, {}, clock);
        await registerCharm(kv, integration, ref, clock);
        refs.push(ref);
      }
      return refs;
    },
  };
}

Deno.test("slotsInWindow() covers the tick for cron and the slot in progress by hand", () => {
  assert.deepEqual(slotsInWindow(TICK, TICK, 60_000), [TICK]);
  assert.deepEqual(
    slotsInWindow(TICK, TICK, 10_000),
    [0, 1, 2, 3, 4, 5].map((i) => TICK + i * 10_000),
  );
  // 300 s: only ticks on a multiple of five minutes have a slot.
  assert.deepEqual(slotsInWindow(TICK, TICK, 300_000), [TICK]);
  assert.deepEqual(slotsInWindow(TICK + TICK_MS, TICK + TICK_MS, 300_000), []);
  // By hand, 45 s into the minute: the 10 s slot in progress and the next.
  assert.deepEqual(slotsInWindow(TICK, TICK + 45_000, 10_000), [
    TICK + 40_000,
    TICK + 50_000,
  ]);
  // By hand, two minutes into a 5-minute slot: that slot.
  assert.deepEqual(slotsInWindow(TICK + 120_000, TICK + 125_000, 300_000), [
    TICK,
  ]);
});

Deno.test("fanout() enqueues one run per due charm, spread by a stable offset", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const refs = await t.addCharms(3);
  const result = await fanout(t.deps, {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "cron",
  });
  assert.equal(result.claimed, true);
  assert.equal(result.enqueued, 3);
  assert.deepEqual(
    t.queue.sent.map((
      s,
    ) => [s.message.charmId, s.message.slot, s.message.attempt, s.delayMs]),
    refs.map((ref) => [ref.charmId, TICK, 1, offsetMs(ref, "manual", 60_000)]),
  );
});

Deno.test("fanout() of one tick delivered twice enqueues once", async () => {
  const t = await setup();
  await using _deps = t.deps;
  await t.addCharms(5);
  const options = {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "cron",
  };
  const [a, b] = await Promise.all([
    fanout(t.deps, options),
    fanout(t.deps, options),
  ]);
  assert.equal(a.enqueued + b.enqueued, 5);
  assert.equal([a, b].filter((r) => r.claimed).length, 1);
  const again = await fanout(t.deps, options);
  assert.equal(again.claimed, false);
  assert.equal(again.enqueued, 0);
});

Deno.test("fanout() of a many-page tick delivered twice enqueues each charm once", async () => {
  // The kv driver's jobs are KV entries: only committed enqueues count. Each
  // fan-out reads its next page while a page commits; a delivery that loses
  // a commit to the other must not enqueue from a page read ahead of a
  // cursor that has moved on.
  const kv = await Deno.openKv(":memory:");
  const queue = kvQueue(kv, { owner: "test", leaseMs: 60_000, maxInFlight: 1 });
  const t = await setup({ kv, queue });
  await using _deps = t.deps;
  const refs = await t.addCharms(450);
  for (let minute = 0; minute < 6; minute++) {
    const options = {
      integration: "manual",
      tickMs: TICK + minute * TICK_MS,
      fromMs: TICK + minute * TICK_MS,
      id: "cron",
    };
    const [a, b] = await Promise.all([
      fanout(t.deps, options),
      fanout(t.deps, options),
    ]);
    assert.equal(a.enqueued + b.enqueued, refs.length);
  }
  const enqueued = new Map<string, number>();
  for (let shard = 0; shard < DEFAULT_SHARDS; shard++) {
    const jobs = kv.list<Job>({ prefix: queueShardPrefix(shard) });
    for await (const { value } of jobs) {
      const message = value.message as RunMessage;
      const run = `${message.charmId}@${message.slot}`;
      enqueued.set(run, (enqueued.get(run) ?? 0) + 1);
    }
  }
  assert.equal(enqueued.size, 6 * refs.length);
  assert.deepEqual(new Set(enqueued.values()), new Set([1]));
});

Deno.test("fanout() reads the recipe from each state, and the record where an older state has no copy", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const refs = await t.addCharms(4);
  // Two states written before states carried their record's copy.
  for (const ref of refs.slice(1, 3)) {
    const entry = await t.deps.kv.get<CharmState>(charmStateKey(ref));
    const { record: _record, ...older } = entry.value!;
    await t.deps.kv.set(charmStateKey(ref), older);
  }
  await setCharmDisabled(t.deps.kv, refs[2]!, true, "test");
  // Any state write adds the copy (a charm that never runs gets it too).
  const recordOf = async (i: number) =>
    (await t.deps.kv.get<CharmState>(charmStateKey(refs[i]!))).value!.record;
  assert.equal(await recordOf(1), undefined);
  assert.equal((await recordOf(2))?.recipe, "counter");
  const result = await fanout(t.deps, {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "x",
  });
  assert.deepEqual([result.enqueued, result.skipped], [3, 1]);
  assert.deepEqual(
    t.queue.sent.map((s) => s.message.charmId),
    [refs[0], refs[1], refs[3]].map((ref) => ref!.charmId),
  );
});

Deno.test("fanout() skips disabled, missing and invalid charms", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const [a, b] = await t.addCharms(2);
  await setCharmDisabled(t.deps.kv, a!, true, "test");
  // A gmail-registered counter has no googleUpdater stream.
  await registerCharm(t.deps.kv, "gmail", b!, TICK);
  const manual = await fanout(t.deps, {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "x",
  });
  assert.deepEqual([manual.enqueued, manual.skipped], [1, 1]);
  const gmail = await fanout(t.deps, {
    integration: "gmail",
    tickMs: TICK,
    fromMs: TICK,
    id: "x",
  });
  assert.deepEqual([gmail.enqueued, gmail.skipped], [0, 1]);
});

Deno.test("fanout() pages through a large registry without missing or repeating", async () => {
  const t = await setup({ policy: { intervalMs: 10_000 } });
  await using _deps = t.deps;
  await t.addCharms(130);
  const result = await fanout(t.deps, {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "cron",
  });
  // Six 10 s slots per minute: 780 runs, in commits of at most 100.
  assert.equal(result.enqueued, 780);
  const keys = new Set(
    t.queue.sent.map((s) => `${s.message.charmId}@${s.message.slot}`),
  );
  assert.equal(keys.size, 780);
});

Deno.test("fanout() spreads runs evenly across the interval", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const buckets = Array(10).fill(0);
  for (let i = 0; i < 2000; i++) {
    const offset = offsetMs(
      { space: SPACE, charmId: `charm-${i}` },
      "manual",
      60_000,
    );
    buckets[Math.floor(offset / 6_000)]++;
  }
  for (const count of buckets) {
    assert.ok(count > 120 && count < 280, `bucket of ${count}`);
  }
});

Deno.test("tick() counts a cycle and records the tick; by hand covers the slot in progress", async () => {
  const t = await setup({ integrationIds: ["manual"] });
  await using _deps = t.deps;
  const [ref] = await t.addCharms(1);
  const offset = offsetMs(ref!, "manual", 60_000);
  t.setClock(TICK + 59_000);
  const results = await tick(t.deps, { mode: "now" });
  assert.equal(results[0]?.enqueued, 1);
  // The slot began at TICK; its scheduled time may be past: it runs now.
  assert.equal(t.queue.sent[0]?.message.slot, TICK);
  assert.equal(
    t.queue.sent[0]?.delayMs,
    Math.max(0, TICK + offset - (TICK + 59_000)),
  );
  const state = await readServiceState(t.deps.kv);
  assert.equal(state.cyclesCompleted, 1);
  assert.equal(state.lastCycleStart, TICK + 59_000);
  // Only a cron tick proves the cron alive.
  assert.equal(state.lastTickAt, null);
  await tick(t.deps, { mode: "cron" });
  assert.equal((await readServiceState(t.deps.kv)).lastTickAt, TICK + 59_000);
  assert.equal(tickOf(TICK + 59_000), TICK);
});

Deno.test("fanout() continues a tick that failed part-way when the cron retries it", async () => {
  const t = await setup();
  await using _deps = t.deps;
  await t.addCharms(3);
  // A delivery claimed the tick and died before its first page committed.
  const { fanoutKey } = await import("../store/keys.ts");
  await t.deps.kv.set(fanoutKey("manual", TICK, "cron"), {
    state: "running",
    cursor: null,
    enqueued: 0,
    skipped: 0,
    startedAt: TICK,
    finishedAt: null,
  });
  const result = await fanout(t.deps, {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "cron",
  });
  assert.equal(result.claimed, false);
  assert.equal(result.enqueued, 3);
});

Deno.test("tick() counts a cron tick that fires a little early for the coming minute", async () => {
  const t = await setup({ integrationIds: ["manual"] });
  await using _deps = t.deps;
  await t.addCharms(1);
  t.setClock(TICK - 300);
  await tick(t.deps, { mode: "cron" });
  assert.deepEqual(t.queue.sent.map((s) => s.message.slot), [TICK]);
});

Deno.test("resumeInterruptedFanouts() finishes a cron fan-out a crash left running", async () => {
  const t = await setup({ integrationIds: ["manual"] });
  await using _deps = t.deps;
  await t.addCharms(4);
  const { fanoutKey } = await import("../store/keys.ts");
  const { resumeInterruptedFanouts } = await import("./fanout.ts");
  await t.deps.kv.set(fanoutKey("manual", TICK, "cron"), {
    state: "running",
    cursor: null,
    enqueued: 0,
    skipped: 0,
    startedAt: TICK,
    finishedAt: null,
  });
  t.setClock(TICK + 30_000);
  const results = await resumeInterruptedFanouts(t.deps);
  assert.equal(results.length, 1);
  assert.equal(results[0]?.enqueued, 4);
  // The minute's slot, already under way: each charm runs at its offset,
  // at once if that has passed.
  assert.equal(t.queue.sent.length, 4);
  for (const { message, delayMs } of t.queue.sent) {
    assert.equal(message.slot, TICK);
    const offset = offsetMs(message, "manual", 60_000);
    assert.equal(delayMs, Math.max(0, TICK + offset - (TICK + 30_000)));
  }
  assert.deepEqual(await resumeInterruptedFanouts(t.deps), []);
});

Deno.test("fanout() shows why it skips an invalid charm in its state, and clears it", async () => {
  const t = await setup({ integrationIds: ["gmail", "manual"] });
  await using _deps = t.deps;
  const [ref] = await t.addCharms(1);
  // Registered with gmail behind the API's back: its recipe has no
  // googleUpdater stream, so gmail's fan-out passes it over.
  const { integrationCharmKey } = await import("../store/keys.ts");
  await t.deps.kv.set(integrationCharmKey("gmail", ref!), { addedAt: TICK });
  await fanout(t.deps, {
    integration: "gmail",
    tickMs: TICK,
    fromMs: TICK,
    id: "a",
  });
  const { getCharmSummary } = await import("../store/charms.ts");
  let state = (await getCharmSummary(t.deps.kv, ref!))!.state;
  assert.match(state.skipReason ?? "", /has no "googleUpdater" stream/);
  // The manual fan-out runs it: the note goes.
  await fanout(t.deps, {
    integration: "manual",
    tickMs: TICK,
    fromMs: TICK,
    id: "b",
  });
  state = (await getCharmSummary(t.deps.kv, ref!))!.state;
  assert.equal(state.skipReason, null);
});

Deno.test("tick() hands a failed fan-out back to the cron before draining, so its retry meets no next tick", async () => {
  const t = await setup({ integrationIds: ["manual"], drainBudgetMs: 50_000 });
  await using _deps = t.deps;
  let drains = 0;
  t.deps.queue.drain = () => {
    drains++;
    return Promise.resolve({ delivered: 0 });
  };
  // The registry cannot be read: the fan-out fails. (The integration is
  // shared with other tests: put it back whatever happens.)
  const manual = t.deps.integrations.get("manual")!;
  const original = manual.getIntegrationConfig;
  const config = original.call(manual);
  manual.getIntegrationConfig = () => ({
    ...config,
    fetchCharms: () => Promise.reject(new Error("registry unreadable")),
  });
  try {
    await assert.rejects(
      tick(t.deps, { mode: "cron" }),
      /registry unreadable/,
    );
    assert.equal(drains, 0);
  } finally {
    manual.getIntegrationConfig = original;
  }
  // Fan-outs that succeed drain as before.
  t.setClock(TICK + TICK_MS);
  await tick(t.deps, { mode: "cron" });
  assert.equal(drains, 1);
});

Deno.test("fanout() gives each kv job of a first slot a snapshot of its charm's state and cells, if small", async () => {
  const kv = await Deno.openKv(":memory:");
  const queue = kvQueue(kv, { owner: "test", leaseMs: 60_000, maxInFlight: 1 });
  // A recipe with secret fields: no copy of its cells in a job.
  const secretive = defineRecipe({
    name: "test-secretive",
    description: "keeps a token",
    argumentSchema: z.object({ token: z.string().default("t") }),
    resultSchema: z.object({}),
    secretPaths: { argument: [["token"]] },
    initialResult: () => ({}),
    handlers: { bgUpdater: () => Promise.resolve() },
  });
  // Two slots per tick.
  const t = await setup({
    kv,
    queue,
    policy: { intervalMs: 30_000 },
    recipes: new Map([...RECIPES, [secretive.name, secretive]]),
  });
  await using _deps = t.deps;
  const refs = await t.addCharms(3);
  // Too big for a snapshot: its run reads for itself.
  await kv.set(cellKey(refs[2]!, "result"), { big: "x".repeat(5_000) });
  const secret = { space: SPACE, charmId: "c00003" };
  await createCharm(kv, secret, secretive, {}, TICK);
  await registerCharm(kv, "manual", secret, TICK);
  const jobsNow = async () => {
    const all: Job[] = [];
    for (let shard = 0; shard < DEFAULT_SHARDS; shard++) {
      for await (
        const { value } of kv.list<Job>({ prefix: queueShardPrefix(shard) })
      ) {
        all.push(value);
      }
    }
    return all;
  };
  const options = { integration: "manual", fromMs: TICK, id: "cron" };
  assert.equal(
    (await fanout(t.deps, { ...options, tickMs: TICK })).enqueued,
    8,
  );
  for (const job of await jobsNow()) {
    const message = job.message as RunMessage;
    const i = refs.findIndex((ref) => ref.charmId === message.charmId);
    if (message.slot !== TICK || i === 2 || i === -1) {
      assert.equal(
        job.snapshot,
        undefined,
        `${message.charmId}@${message.slot}`,
      );
      continue;
    }
    const [state, argument, result] = await kv.getMany<
      [CharmState, unknown, unknown]
    >([
      charmStateKey(refs[i]!),
      cellKey(refs[i]!, "argument"),
      cellKey(refs[i]!, "result"),
    ]);
    assert.deepEqual(job.snapshot, runSnapshot(state, argument, result));
    assert.ok(state.versionstamp !== null && argument.versionstamp !== null);
  }

  // A charm of another integration between them in key order: its cells lie
  // in the page's range, which is then not read, and no job gets a snapshot.
  const other = { space: SPACE, charmId: "c00000a" };
  await createCharm(kv, other, RECIPES.get("counter")!, {}, TICK);
  const later = TICK + TICK_MS;
  t.setClock(later);
  assert.equal(
    (await fanout(t.deps, { ...options, tickMs: later, fromMs: later }))
      .enqueued,
    8,
  );
  const next = (await jobsNow()).filter((job) =>
    (job.message as RunMessage).slot >= later
  );
  assert.equal(next.length, 8);
  assert.ok(next.every((job) => job.snapshot === undefined));
});

Deno.test("fanout() commits a page whose snapshots are over KV's limits without them", async () => {
  // A snapshot's size is a bound; a Latin-1 string kept at two bytes a
  // character (sliced from one that is not Latin-1, as a recipe's
  // `text.slice()` may) serializes at twice what it counts. A page of 100
  // such snapshots, with long charm ids, goes over KV's 800 KiB per commit.
  const kv = await Deno.openKv(":memory:");
  const queue = kvQueue(kv, { owner: "test", leaseMs: 60_000, maxInFlight: 1 });
  const t = await setup({ kv, queue });
  await using _deps = t.deps;
  const note = ("\u20ac" + "\u00e9".repeat(3_505)).slice(1);
  const refs = [];
  for (let i = 0; i < 100; i++) {
    const ref = { space: SPACE, charmId: `${"q".repeat(54)}${i + 10_000}` };
    await createCharm(kv, ref, RECIPES.get("counter")!, {}, TICK);
    await registerCharm(kv, "manual", ref, TICK);
    await kv.set(cellKey(ref, "result"), { runs: 1, note });
    refs.push(ref);
  }
  const [state, argument, result] = await kv.getMany<
    [CharmState, unknown, unknown]
  >([
    charmStateKey(refs[0]!),
    cellKey(refs[0]!, "argument"),
    cellKey(refs[0]!, "result"),
  ]);
  assert.notEqual(runSnapshot(state, argument, result), null);

  const options = { integration: "manual", fromMs: TICK, id: "cron" };
  const done = await fanout(t.deps, { ...options, tickMs: TICK });
  assert.equal(done.enqueued, 100);
  let jobs = 0;
  for (let shard = 0; shard < DEFAULT_SHARDS; shard++) {
    for await (
      const { value } of kv.list<Job>({ prefix: queueShardPrefix(shard) })
    ) {
      jobs++;
      assert.equal(value.snapshot, undefined);
    }
  }
  assert.equal(jobs, 100);
});

Deno.test("runs fanned out to the kv driver start from their snapshots: no reads but for a stale one", async () => {
  const kv = await Deno.openKv(":memory:");
  const { kv: counted, counts } = countingKv(kv);
  let clock = TICK;
  const queue = kvQueue(counted, {
    owner: "test",
    leaseMs: 60_000,
    maxInFlight: 5,
    maxChecks: LOCAL_MAX_CHECKS,
    now: () => clock,
  });
  const t = await setup({ kv: counted, queue, now: () => clock });
  await using _deps = t.deps;
  const refs = await t.addCharms(6);
  const options = { integration: "manual", fromMs: TICK, id: "cron" };
  assert.equal(
    (await fanout(t.deps, { ...options, tickMs: TICK })).enqueued,
    6,
  );
  // Disabled after its snapshot: its run must see it.
  await setCharmDisabled(kv, refs[5]!, true, "by the test");
  // Every run is due within the interval.
  clock = TICK + 60_000;
  Object.assign(counts, { get: 0, getMany: 0 });
  const outcomes: unknown[] = [];
  await queue.drain!(
    async (raw, delivery) =>
      void outcomes.push(await dispatch(t.deps, raw, delivery)),
    5_000,
    listenOptions(t.deps),
  );
  assert.deepEqual(
    outcomes.toSorted(),
    [
      "skipped",
      "succeeded",
      "succeeded",
      "succeeded",
      "succeeded",
      "succeeded",
    ],
  );
  // One read: the disabled charm's, once its commit's check failed.
  assert.deepEqual([counts.get, counts.getMany], [0, 1]);
  const states = await kv.getMany<CharmState[]>(refs.map(charmStateKey));
  assert.deepEqual(
    states.map((s) => s.value!.totalSuccesses),
    [1, 1, 1, 1, 1, 0],
  );
});

/**
 * The KV's own ceiling for the `kv` driver's work: the KV requests a pure run
 * makes, with no service code around them. N charms seeded as the service
 * stores them and N jobs in the job table; then, in batches of 10 as the
 * driver claims them: one `list` of due jobs, one claim commit, one `getMany`
 * per run of the four keys a pure first try reads, and one group commit of the
 * ten outcomes (the checks and writes of `handlers/run_charm.ts`'s pure path,
 * the job deletes). Two loops on disjoint shards keep the SQLite thread busy.
 *
 * No end-to-end figure can beat this one on the same KV: it says how much of
 * the gap to a target is the service and how much is the data a run touches.
 *
 * @module
 */
import { initialCharmState } from "../charm/charm.ts";
import { runKeyOf, type RunMessage } from "../handlers/messages.ts";
import { DEFAULT_SHARDS, type Job } from "../queue/kv_queue.ts";
import {
  cellKey,
  charmKey,
  charmLeaseKey,
  charmStateKey,
  queueJobKey,
  queueShardPrefix,
  runCountKey,
  runKey,
  serviceCounterKey,
} from "../store/keys.ts";
import { type KvKind, openBenchKv } from "./bench_kv.ts";
import { noopRecipe } from "./recipes.ts";
import { type ThreadBusy, threadBusy, threadCpu } from "./threads.ts";
import { benchCharmRef, seedCharmsBatched } from "./seed.ts";

/** Jobs per claim and per group commit, as the driver does. */
const BATCH = 10;

/** Loops claiming at once (each on its own shards). */
const LOOPS = 2;

/** One repetition's result. */
export interface KvCeilingResult {
  runsPerSecond: number;
  elapsedMs: number;
  /** Busy share of the main and the SQLite thread (`bench/threads.ts`). */
  threadBusy: ThreadBusy | null;
}

/** Runs one repetition on a fresh KV. */
export async function kvCeiling(
  kind: KvKind,
  runs: number,
): Promise<KvCeilingResult> {
  await using store = await openBenchKv(kind);
  const { kv } = store;
  const slot = Date.UTC(2026, 0, 1);
  await seedCharmsBatched(kv, { recipe: noopRecipe, count: runs });
  for (let i = 0; i < runs; i += 100) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(runs, i + 100); j++) {
      const ref = benchCharmRef(j);
      const message: RunMessage = {
        type: "run",
        v: 1,
        ...ref,
        integration: "manual",
        kind: "scheduled",
        slot,
        attempt: 1,
        enqueuedAt: slot,
      };
      const id = `job-${j}`;
      const job: Job = {
        id,
        message,
        deliveries: 0,
        failures: 0,
        undeliveredKey: ["undelivered", id],
        enqueuedAt: slot,
        dueAt: slot,
        leasedBy: null,
      };
      op.set(queueJobKey(j % DEFAULT_SHARDS, slot, id), job);
    }
    await op.commit();
  }

  const state = initialCharmState();
  const threads = threadCpu();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: LOOPS }, (_, loop) => _loop(kv, loop, state)),
  );
  const elapsedMs = performance.now() - started;
  const busy = threadBusy(threads, threadCpu(), elapsedMs);
  // Every job went through: the figure counts what it says.
  const done = await kv.get<Deno.KvU64>(
    serviceCounterKey("totalCharmsProcessed"),
  );
  if (done.value?.value !== BigInt(runs)) {
    throw new Error(
      `The KV ceiling ran ${done.value?.value ?? 0} of ${runs} jobs`,
    );
  }
  return {
    runsPerSecond: runs / (elapsedMs / 1000),
    elapsedMs,
    threadBusy: busy,
  };
}

async function _loop(
  kv: Deno.Kv,
  loop: number,
  state: ReturnType<typeof initialCharmState>,
): Promise<void> {
  while (true) {
    const due: Deno.KvEntry<Job>[] = [];
    for (let s = loop; s < DEFAULT_SHARDS && due.length < BATCH; s += LOOPS) {
      for await (
        const entry of kv.list<Job>({ prefix: queueShardPrefix(s) }, {
          limit: BATCH - due.length,
        })
      ) due.push(entry);
    }
    if (due.length === 0) return;
    const claim = kv.atomic();
    const leased = due.map((entry) => {
      const key = queueJobKey(entry.key[1] as number, 9e15, entry.value.id);
      claim.check(entry).delete(entry.key).set(key, entry.value);
      return key;
    });
    if (!(await claim.commit()).ok) continue;
    const reads = await Promise.all(due.map(({ value: { message } }) => {
      const run = runKeyOf(message);
      return kv.getMany([
        charmKey(message),
        charmStateKey(message),
        cellKey(message, "argument"),
        cellKey(message, "result"),
      ]).then(([charm, state, argument, result]) =>
        [
          charm,
          state,
          // A pure first try checks these absent without reading them.
          { key: charmLeaseKey(message), versionstamp: null },
          { key: runKey(message, run), versionstamp: null },
          argument,
          result,
        ] as const
      );
    }));
    const now = Date.now();
    const outcome = kv.atomic();
    due.forEach(({ value: { message } }, i) => {
      const [, stateEntry, lease, record, argument, result] = reads[i]!;
      outcome.check(lease).check(record).check(stateEntry).check(argument)
        .check(result)
        .set(runKey(message, runKeyOf(message)), {
          state: "succeeded",
          attempt: 1,
          slot: message.slot,
          integration: message.integration,
          startedAt: now,
          finishedAt: now,
          durationMs: 0,
          error: null,
          retryAt: null,
        }, { expireIn: 3_600_000 })
        .set(charmStateKey(message), {
          ...state,
          lastExecuted: now,
          totalAttempts: 1,
          totalExecutions: 1,
          totalSuccesses: 1,
        })
        .sum(serviceCounterKey("totalSuccesses"), 1n)
        .sum(serviceCounterKey("totalCharmsProcessed"), 1n)
        .sum(runCountKey(now - (now % 300_000), "succeeded"), 1n)
        .delete(leased[i]!);
    });
    if (!(await outcome.commit()).ok) {
      throw new Error("The ceiling's outcome commit failed a check");
    }
  }
}

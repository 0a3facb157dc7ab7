/**
 * The KV's own ceilings: the KV requests the work needs, with no service code
 * around them, so a figure says how much of the gap to a target is the
 * service and how much is the data a run touches. Beyond the noise between
 * repetitions, no end-to-end figure beats its ceiling on the same KV.
 *
 * - {@linkcode kvCeiling}: the `kv` driver's requests for pure runs. N charms
 *   seeded as the service stores them and N jobs in the job table, each with
 *   its run's snapshot (`store/run_snapshot.ts`, read before the clock
 *   starts); then, in batches of {@linkcode BATCH}: one `list` of due jobs
 *   (more when a shard runs dry), one claim commit (the jobs written back
 *   without their snapshots), and one commit of the batch's outcomes (the
 *   checks and writes of `handlers/run_charm.ts`'s pure path, the job
 *   deletes). No read per run: a pure first try takes its state and cells
 *   from the snapshot. Two loops on disjoint shards keep the SQLite thread
 *   busy.
 * - With `withFanout`, the jobs are not seeded before the clock starts: they
 *   are enqueued while the loops run, with the KV requests of a fan-out
 *   (`handlers/fanout.ts`), as the end-to-end figures are timed from the
 *   fan-out's start. Per page of 100 registered charms: one registry `list`,
 *   two range `list`s (their states; their cells, for the snapshots), one
 *   commit (the fan-out record checked and set, the jobs, the wake-up
 *   `sum`). This is the ceiling an end-to-end figure compares with; the other
 *   says what the runs alone cost.
 * - {@linkcode nativeCeiling}: the same fan-out enqueueing native messages
 *   (no snapshots: the native driver keeps none), and a `listenQueue`
 *   handler making a pure run's requests: a three-key `getMany` (its state,
 *   which carries the record's recipe, and both cells) and the outcome
 *   commit.
 *
 * @module
 */
import type { CharmRef, CharmState } from "../charm/charm.ts";
import type { DidKey } from "../charm/did.ts";
import { runKeyOf, type RunMessage } from "../handlers/messages.ts";
import { DEFAULT_SHARDS, type Job } from "../queue/kv_queue.ts";
import {
  cellKey,
  charmLeaseKey,
  charmStateKey,
  fanoutKey,
  integrationCharmsPrefix,
  queueJobKey,
  queueShardPrefix,
  queueWakeKey,
  runCountKey,
  runKey,
  serviceCounterKey,
} from "../store/keys.ts";
import { type KvKind, openBenchKv } from "./bench_kv.ts";
import { noopRecipe } from "./recipes.ts";
import { type ThreadBusy, threadBusy, threadCpu } from "./threads.ts";
import { benchCharmRef, seedCharmsBatched } from "./seed.ts";
import { recordOf, writeCharmState } from "../store/charms.ts";
import { getManyByRange } from "../store/kv_util.ts";
import {
  readPageCells,
  runInputsFromSnapshot,
  type RunSnapshot,
  runSnapshot,
} from "../store/run_snapshot.ts";

/**
 * Jobs per claim and per outcome commit: as many as one local commit takes.
 * An outcome checks five keys per run, and a commit takes at most 100
 * checks. (The driver, on a local KV, claims up to 20 at a time too, and
 * its groups take what is waiting, up to 20 parts and 100 checks.)
 */
const BATCH = 20;

/** Loops claiming at once (each on its own shards). */
const LOOPS = 2;

/** Charms per fan-out page (`MAX_ENQUEUES_PER_COMMIT` at one slot). */
const FANOUT_PAGE = 100;

/** One repetition's result. */
export interface KvCeilingResult {
  runsPerSecond: number;
  elapsedMs: number;
  /** Busy share of the main and the SQLite thread (`bench/threads.ts`). */
  threadBusy: ThreadBusy | null;
}

/** Runs one repetition of the `kv` driver's ceiling on a fresh KV. */
export async function kvCeiling(
  kind: KvKind,
  runs: number,
  { withFanout = false }: { withFanout?: boolean } = {},
): Promise<KvCeilingResult> {
  await using store = await openBenchKv(kind);
  const { kv } = store;
  const slot = Date.UTC(2026, 0, 1);
  await seedCharmsBatched(kv, { recipe: noopRecipe, count: runs });
  const feed = new _Feed();
  let n = 0;
  const enqueueJob: _Enqueue = (op, ref, snapshot) => {
    const id = `job-${n}`;
    const job: Job = {
      id,
      message: _message(ref, slot),
      deliveries: 0,
      failures: 0,
      undeliveredKey: ["undelivered", id],
      enqueuedAt: slot,
      dueAt: slot,
      leasedBy: null,
      ...(snapshot === null ? {} : { snapshot }),
    };
    op.set(queueJobKey(n++ % DEFAULT_SHARDS, slot, id), job);
  };
  if (!withFanout) {
    for (let i = 0; i < runs; i += FANOUT_PAGE) {
      const refs = Array.from(
        { length: Math.min(runs, i + FANOUT_PAGE) - i },
        (_, j) => benchCharmRef(i + j),
      );
      const snapshots = await _snapshots(kv, refs);
      const op = kv.atomic();
      refs.forEach((ref, j) => enqueueJob(op, ref, snapshots[j]!));
      await op.commit();
    }
    feed.finish();
  }

  return await _timed(kv, runs, () =>
    Promise.all([
      withFanout
        ? _fanout(kv, slot, feed, enqueueJob, { snapshots: true })
        : null,
      ...Array.from({ length: LOOPS }, (_, loop) => _loop(kv, loop, feed)),
    ]));
}

/**
 * Runs one repetition of the native driver's ceiling on a fresh KV: the
 * fan-out's requests enqueueing a message per charm on the native queue,
 * and a `listenQueue` handler making a pure run's requests (one three-key
 * `getMany`, one outcome commit), as many in flight as the queue delivers.
 * Compare with the native baseline: what is left between the two is the
 * read a run needs and its bigger commit.
 */
export async function nativeCeiling(
  kind: KvKind,
  runs: number,
): Promise<KvCeilingResult> {
  await using store = await openBenchKv(kind);
  const { kv } = store;
  const slot = Date.UTC(2026, 0, 1);
  await seedCharmsBatched(kv, { recipe: noopRecipe, count: runs });
  let handled = 0;
  const { promise: allHandled, resolve, reject } = Promise.withResolvers<
    void
  >();
  const timer = setTimeout(
    () =>
      reject(new Error(`The native ceiling ran ${handled} of ${runs} runs`)),
    60_000 + runs * 20,
  );
  const listening = kv.listenQueue(async (raw) => {
    try {
      const message = raw as RunMessage;
      const op = _outcome(kv.atomic(), message, await _pureRead(kv, message));
      if (!(await op.commit()).ok) {
        throw new Error("The ceiling's outcome commit failed a check");
      }
      if (++handled === runs) resolve();
    } catch (error) {
      reject(error);
    }
  });
  try {
    return await _timed(kv, runs, () =>
      Promise.all([
        _fanout(kv, slot, new _Feed(), (op, ref) =>
          op.enqueue(_message(ref, slot), {
            delay: 0,
            keysIfUndelivered: [["undelivered", ref.charmId]],
          }), { snapshots: false }),
        allHandled,
      ]));
  } finally {
    clearTimeout(timer);
    kv.close();
    await listening.catch(() => {});
  }
}

/** Times `work`, then checks that it ran every one of `runs`. */
async function _timed(
  kv: Deno.Kv,
  runs: number,
  work: () => Promise<unknown>,
): Promise<KvCeilingResult> {
  const threads = threadCpu();
  const started = performance.now();
  await work();
  const elapsedMs = performance.now() - started;
  const busy = threadBusy(threads, threadCpu(), elapsedMs);
  // Every run went through: the figure counts what it says.
  const done = await kv.get<Deno.KvU64>(
    serviceCounterKey("totalCharmsProcessed"),
  );
  if (done.value?.value !== BigInt(runs)) {
    throw new Error(
      `The KV ceiling ran ${done.value?.value ?? 0} of ${runs} runs`,
    );
  }
  return {
    runsPerSecond: runs / (elapsedMs / 1000),
    elapsedMs,
    threadBusy: busy,
  };
}

/** The scheduled run of charm `ref` in `slot`, as the fan-out enqueues it. */
function _message(ref: CharmRef, slot: number): RunMessage {
  return {
    type: "run",
    v: 1,
    ...ref,
    integration: "manual",
    kind: "scheduled",
    slot,
    attempt: 1,
    enqueuedAt: slot,
  };
}

/** Tells the loops that jobs were enqueued, or that all of them were. */
class _Feed {
  finished = false;
  #waiting: (() => void)[] = [];

  /** Resolves at the next enqueue commit, or at once when all are in. */
  next(): Promise<void> {
    if (this.finished) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  notify(): void {
    for (const resolve of this.#waiting.splice(0)) resolve();
  }

  finish(): void {
    this.finished = true;
    this.notify();
  }
}

/** Adds the enqueue of a run of `ref` (with its snapshot, if any) to `op`. */
type _Enqueue = (
  op: Deno.AtomicOperation,
  ref: CharmRef,
  snapshot: RunSnapshot | null,
) => void;

/**
 * A fan-out's KV requests: a run per registered charm, a page at a time.
 * With `snapshots` (the `kv` driver), each page's cells are read too, and
 * the driver's wake-up key summed.
 */
async function _fanout(
  kv: Deno.Kv,
  slot: number,
  feed: _Feed,
  enqueue: _Enqueue,
  { snapshots }: { snapshots: boolean },
): Promise<void> {
  const record = fanoutKey("manual", slot, "bench");
  // The fan-out's claim of its record.
  let entry: Deno.AtomicCheck = await kv.get(record);
  let commit = await kv.atomic().check(entry).set(record, { cursor: null })
    .commit();
  let cursor: string | undefined;
  while (commit.ok) {
    entry = { key: record, versionstamp: commit.versionstamp };
    const iterator = kv.list(
      { prefix: integrationCharmsPrefix("manual") },
      { limit: FANOUT_PAGE, ...(cursor ? { cursor } : {}) },
    );
    const refs: CharmRef[] = [];
    for await (const { key } of iterator) {
      refs.push({ space: key.at(-2) as DidKey, charmId: String(key.at(-1)) });
    }
    if (refs.length === 0) break;
    // The states (each carries its record's recipe) by one range, as the
    // fan-out reads them, and for snapshots the cells by another.
    const read = snapshots
      ? await _snapshots(kv, refs)
      : await getManyByRange<CharmState>(kv, refs.map(charmStateKey))
        .then(() => refs.map(() => null));
    const op = kv.atomic().check(entry);
    refs.forEach((ref, i) => enqueue(op, ref, read[i]!));
    cursor = iterator.cursor;
    // The `kv` driver wakes idle workers once per enqueue commit.
    if (snapshots) op.sum(queueWakeKey(), 1n);
    commit = await op.set(record, { cursor }).commit();
    feed.notify();
    if (refs.length < FANOUT_PAGE) break;
  }
  if (!commit.ok) {
    throw new Error("The ceiling's fan-out commit failed a check");
  }
  feed.finish();
}

/** The snapshots of `refs`' runs, read as the fan-out reads them. */
async function _snapshots(
  kv: Deno.Kv,
  refs: CharmRef[],
): Promise<(RunSnapshot | null)[]> {
  const [states, cells] = await Promise.all([
    getManyByRange<CharmState>(kv, refs.map(charmStateKey)),
    readPageCells(kv, refs),
  ]);
  if (cells === null) throw new Error("The ceiling's charms are contiguous");
  return refs.map((_, i) => runSnapshot(states[i]!, ...cells[i]!));
}

/** What a pure first try reads, and checks absent without reading. */
type _PureRead = readonly [
  Deno.KvEntryMaybe<CharmState>,
  Deno.AtomicCheck,
  Deno.AtomicCheck,
  Deno.KvEntryMaybe<unknown>,
  Deno.KvEntryMaybe<unknown>,
];

/** The state (with its record's recipe) and the cells: three keys. */
async function _pureRead(kv: Deno.Kv, message: RunMessage): Promise<_PureRead> {
  const [state, argument, result] = await kv.getMany<
    [CharmState, unknown, unknown]
  >([
    charmStateKey(message),
    cellKey(message, "argument"),
    cellKey(message, "result"),
  ]);
  return _assumed(message, state, argument, result);
}

/** The same from the job's snapshot, as the run takes it: no read. */
function _snapshotRead(message: RunMessage, snapshot: unknown): _PureRead {
  const inputs = runInputsFromSnapshot(message, snapshot);
  if (inputs === null) throw new Error("The ceiling's job has no snapshot");
  const [, state, argument, result] = inputs;
  return _assumed(message, state, argument, result);
}

/** A pure first try's read, with the lease and run record assumed absent. */
function _assumed(
  message: RunMessage,
  state: Deno.KvEntryMaybe<CharmState>,
  argument: Deno.KvEntryMaybe<unknown>,
  result: Deno.KvEntryMaybe<unknown>,
): _PureRead {
  return [
    state,
    { key: charmLeaseKey(message), versionstamp: null },
    { key: runKey(message, runKeyOf(message)), versionstamp: null },
    argument,
    result,
  ];
}

/** Adds a pure run's outcome to `op`: its checks and writes. */
function _outcome(
  op: Deno.AtomicOperation,
  message: RunMessage,
  [state, lease, record, argument, result]: _PureRead,
): Deno.AtomicOperation {
  const now = Date.now();
  op.check(lease).check(record).check(state).check(argument).check(result)
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
    .sum(serviceCounterKey("totalSuccesses"), 1n)
    .sum(serviceCounterKey("totalCharmsProcessed"), 1n)
    .sum(runCountKey(now - (now % 300_000), "succeeded"), 1n);
  // The state and, as its status changes, the status index: the store's own
  // write, so the ceiling writes what a run writes.
  return writeCharmState(op, recordOf(message, state.value)!, state.value, {
    ...state.value!,
    lastExecuted: now,
    totalAttempts: 1,
    totalExecutions: 1,
    totalSuccesses: 1,
  });
}

async function _loop(kv: Deno.Kv, loop: number, feed: _Feed): Promise<void> {
  const shards = Array.from(
    { length: Math.ceil((DEFAULT_SHARDS - loop) / LOOPS) },
    (_, i) => loop + i * LOOPS,
  );
  // Where the last batch came from: drained shards are not listed again
  // (the driver lists about one shard per claim, too).
  let first = 0;
  while (true) {
    // Read before the lists: a page committed during them wakes this loop,
    // and a fan-out that finished before them means nothing more comes.
    const finished = feed.finished;
    const enqueued = feed.next();
    const due: Deno.KvEntry<Job>[] = [];
    let last = first;
    for (let i = 0; i < shards.length && due.length < BATCH; i++) {
      const at = (first + i) % shards.length;
      const before = due.length;
      for await (
        const entry of kv.list<Job>({ prefix: queueShardPrefix(shards[at]!) }, {
          limit: BATCH - due.length,
        })
      ) due.push(entry);
      if (due.length > before) last = at;
    }
    first = last;
    if (due.length === 0) {
      if (finished) return;
      await enqueued;
      continue;
    }
    const claim = kv.atomic();
    const leased = due.map((entry) => {
      const key = queueJobKey(entry.key[1] as number, 9e15, entry.value.id);
      // The claim drops the snapshot, as the driver's does.
      const { snapshot: _snapshot, ...job } = entry.value;
      claim.check(entry).delete(entry.key).set(key, job);
      return key;
    });
    if (!(await claim.commit()).ok) continue;
    const outcome = kv.atomic();
    due.forEach(({ value: { message, snapshot } }, i) => {
      const read = _snapshotRead(message, snapshot);
      _outcome(outcome, message, read).delete(leased[i]!);
    });
    if (!(await outcome.commit()).ok) {
      throw new Error("The ceiling's outcome commit failed a check");
    }
  }
}

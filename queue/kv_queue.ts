/**
 * The `kv` queue driver: a job table in Deno KV, for where the native queue
 * does not exist (the new Deno Deploy, KV Connect / self-hosted `denokv`) and
 * for spreading work over several processes on one KV file (the native
 * queue's other processes see new messages only after about a minute).
 *
 * - **Jobs** live at `["queue_jobs", shard, dueAtMs, id]`, sharded by a hash
 *   of the id so many workers do not all contend on one key range.
 * - **Claim** is one atomic operation per batch (at most 20 jobs; 10 over KV
 *   Connect, which allows 10 checks per operation) that checks each job,
 *   deletes it, and writes it back keyed at `now + leaseMs` with the
 *   worker's name. A worker that dies leaves the job to come due again when
 *   the lease ends.
 * - **Prefetch**: the listener's `prefetch` starts the claimed batch's reads
 *   at once, before the jobs get a slot, so their runs reach the group
 *   commit together. A job enqueued with a snapshot (what its run would read
 *   first, `store/run_snapshot.ts`) hands it to `prefetch` on its first
 *   claim, and the claim drops it from the job.
 * - **Completion** deletes the leased key: in the handler's own outcome commit
 *   when it commits through `delivery.commit`, else right after the handler
 *   returns.
 * - **Group commit** (`group_commit.ts`): outcome commits that arrive while
 *   one commits go together as the next, one atomic operation for many jobs.
 *   A delivery waiting for its group no longer counts against `maxInFlight`:
 *   a claimed job takes its slot at once, and the worker claims more.
 * - **Wake-up**: a long-running worker sleeps until the next due job, at most
 *   `pollMs`, and wakes early when a local enqueue bumps the wake key
 *   (`kv.watch`). On Deploy, `drain` runs inside each cron tick instead.
 *
 * Written here, not taken from a library: no maintained job queue runs on
 * Deno KV's atomic operations on the edge runtime.
 *
 * @module
 */
import { toError } from "../lib/errors.ts";
import { fnv1a32 } from "../lib/hash.ts";
import { logger } from "../lib/log.ts";
import { queueJobKey, queueShardPrefix, queueWakeKey } from "../store/keys.ts";
import { REMOTE_MAX_CHECKS } from "../store/kv_util.ts";
import type { Message } from "../handlers/messages.ts";
import { groupCommitter, MAX_GROUP } from "./group_commit.ts";
import { QUEUE_BACKOFF_MS } from "./native_queue.ts";
import type {
  Delivery,
  EnqueueOptions,
  MessageHandler,
  Prefetch,
  QueueDepth,
  QueueDriver,
} from "./queue.ts";

/** A stored job. */
export interface Job {
  id: string;
  message: Message;
  /** Deliveries so far (a claim is a delivery). */
  deliveries: number;
  /** Handler failures so far (throws, not crashes). */
  failures: number;
  undeliveredKey: Deno.KvKey;
  enqueuedAt: number;
  /** When it was (last) due: for the oldest-due-age figure. */
  dueAt: number;
  leasedBy: string | null;
  /**
   * The enqueuer's snapshot for the first delivery (`EnqueueOptions`);
   * dropped by the claim, so a redelivery reads for itself.
   */
  snapshot?: unknown;
}

/** Options for {@linkcode kvQueue}. */
export interface KvQueueOptions {
  /** Names this worker in leases. */
  owner: string;
  /** How long a claimed job stays hidden; must outlast a run. */
  leaseMs: number;
  /** Jobs this worker runs at once. */
  maxInFlight: number;
  /**
   * The longest a delivery takes once started (the run's timeout and its
   * commit). A drain starts none it could not finish by its deadline, so a
   * cron tick's drain ends within its budget.
   */
  runMs?: number;
  /**
   * Checks the KV takes in one atomic operation: `LOCAL_MAX_CHECKS` (100) on
   * a local KV, `REMOTE_MAX_CHECKS` (10, the default) over KV Connect. A
   * claim checks each job it takes, and a group commit each run's reads.
   */
  maxChecks?: number;
  /** Number of shards (fixed for a KV store: changing it strands jobs). */
  shards?: number;
  /** Longest idle sleep of the listening worker, ms. */
  pollMs?: number;
  /** Redelivery delays after a handler throws, ms. */
  backoffSchedule?: number[];
  /** Deliveries after which a job is given up (crash loops). */
  maxDeliveries?: number;
  now?: () => number;
}

/**
 * Most jobs one claim takes (fewer when the KV takes fewer checks): as many
 * as one group commit can finish. On a file every commit is an `fsync`, so
 * fewer, bigger claims go faster.
 */
export const MAX_CLAIM_BATCH = MAX_GROUP;

/** Longest a claimed job waits in the worker for a free slot, ms. */
export const MAX_BUFFER_WAIT_MS = 2_000;

/** Default number of shards. */
export const DEFAULT_SHARDS = 8;

/** The `kv` driver. */
export function kvQueue(kv: Deno.Kv, options: KvQueueOptions): QueueDriver {
  const shards = options.shards ?? DEFAULT_SHARDS;
  const pollMs = options.pollMs ?? 1_000;
  const backoff = options.backoffSchedule ?? QUEUE_BACKOFF_MS;
  const maxDeliveries = options.maxDeliveries ?? backoff.length + 5;
  const now = options.now ?? Date.now;
  const maxChecks = options.maxChecks ?? REMOTE_MAX_CHECKS;
  const claimBatch = Math.min(MAX_CLAIM_BATCH, maxChecks);
  const log = logger("queue", "kv");
  let stopped = false;
  let wake: (() => void) | null = null;
  /** Starts buffered jobs in the worker loop's free slots. */
  let startBuffered: (() => void) | null = null;
  let nextShard = 0;
  const woken = new WeakSet<Deno.AtomicOperation>();
  /** Deliveries running a handler, not waiting for a group commit. */
  let busy = 0;
  const group = groupCommitter(kv, {
    coming: () => busy,
    maxChecks,
  });

  function shardOf(id: string): number {
    return fnv1a32(id) % shards;
  }

  /** Lists up to `limit` due, unleased-or-expired jobs, shards round-robin. */
  async function findDue(limit: number): Promise<Deno.KvEntry<Job>[]> {
    const due: Deno.KvEntry<Job>[] = [];
    const t = now();
    for (let i = 0; i < shards && due.length < limit; i++) {
      const shard = (nextShard + i) % shards;
      const prefix = queueShardPrefix(shard);
      const iterator = kv.list<Job>({
        start: [...prefix, 0],
        end: [...prefix, t + 1],
      }, { limit: limit - due.length });
      for await (const entry of iterator) due.push(entry);
    }
    nextShard = (nextShard + 1) % shards;
    return due;
  }

  /** Claims a batch; returns the leased entries this worker now holds. */
  async function claim(
    entries: Deno.KvEntry<Job>[],
  ): Promise<Deno.KvEntry<Job>[]> {
    const claimed: Deno.KvEntry<Job>[] = [];
    for (let i = 0; i < entries.length; i += claimBatch) {
      const batch = entries.slice(i, i + claimBatch);
      const result = await _claimBatch(batch);
      if (result !== null) {
        claimed.push(...result);
        continue;
      }
      // Someone took one of them: claim one by one, losing only the taken.
      for (const entry of batch) {
        const single = await _claimBatch([entry]);
        if (single !== null) claimed.push(...single);
      }
    }
    return claimed;
  }

  async function _claimBatch(
    batch: Deno.KvEntry<Job>[],
  ): Promise<Deno.KvEntry<Job>[] | null> {
    const t = now();
    const leaseUntil = t + options.leaseMs;
    const op = kv.atomic();
    const leased: { key: Deno.KvKey; value: Job }[] = [];
    for (const entry of batch) {
      const job = entry.value;
      op.check(entry).delete(entry.key);
      if (job.deliveries >= maxDeliveries) {
        // It was claimed this often and never finished: its handler kills
        // the worker. Give it up as the native queue would.
        op.set(job.undeliveredKey, job.message);
        log.error("Gave up job {id} after {deliveries} deliveries", {
          id: job.id,
          deliveries: job.deliveries,
        });
        continue;
      }
      const { snapshot: _snapshot, ...kept } = job;
      const value: Job = {
        ...kept,
        deliveries: job.deliveries + 1,
        leasedBy: options.owner,
        dueAt: job.leasedBy === null ? entry.key[2] as number : job.dueAt,
      };
      const key = queueJobKey(shardOf(job.id), leaseUntil, job.id);
      op.set(key, value);
      leased.push({ key, value });
    }
    const commit = await op.commit();
    if (!commit.ok) return null;
    return leased.map(({ key, value }) => ({
      key,
      value,
      versionstamp: commit.versionstamp,
    }));
  }

  /** Runs one claimed job to completion (never throws). */
  async function deliver(
    entry: Deno.KvEntry<Job>,
    handler: MessageHandler,
    prefetched: unknown,
  ): Promise<void> {
    let committed = false;
    let counted = true;
    busy++;
    const uncount = () => {
      if (!counted) return;
      counted = false;
      busy--;
      // A slot is free: a buffered job takes it now, even while the worker
      // loop waits for a claim; and the loop may claim the next jobs.
      startBuffered?.();
      wake?.();
    };
    const delivery: Delivery = {
      prefetched,
      async commit(build) {
        uncount();
        const result = await group.commit((op) => {
          build(op);
          op.delete(entry.key);
        });
        if (result.ok) committed = true;
        return result;
      },
    };
    try {
      await handler(entry.value.message, delivery);
      // A committed delivery's job was deleted in the handler's own commit;
      // if that commit never happened, the lease runs out and a redelivery
      // finds the work done.
      if (!committed) await kv.delete(entry.key);
    } catch (error) {
      await _fail(entry, toError(error)).catch((failError) => {
        // The lease will expire and the job come back: nothing is lost.
        log.error("Cannot reschedule job {id}: {error}", {
          id: entry.value.id,
          error: toError(failError).message,
        });
      });
    } finally {
      uncount();
    }
  }

  async function _fail(entry: Deno.KvEntry<Job>, error: Error): Promise<void> {
    const job = entry.value;
    const failures = job.failures + 1;
    const op = kv.atomic().check(entry).delete(entry.key);
    if (failures > backoff.length) {
      op.set(job.undeliveredKey, job.message);
      log.error("Job {id} failed {failures} times, gave up: {error}", {
        id: job.id,
        failures,
        error: error.message,
      });
    } else {
      const dueAt = now() + backoff[failures - 1]!;
      op.set(queueJobKey(shardOf(job.id), dueAt, job.id), {
        ...job,
        failures,
        leasedBy: null,
        dueAt,
      });
      log.warn("Job {id} failed, redelivering in {ms} ms: {error}", {
        id: job.id,
        ms: backoff[failures - 1],
        error: error.message,
      });
    }
    await op.commit();
  }

  /**
   * The listener's prefetch of the claimed `entries`, with the snapshots the
   * jobs had before the claim (`due`); none if it throws.
   */
  function _prefetch(
    prefetch: Prefetch,
    entries: Deno.KvEntry<Job>[],
    due: Deno.KvEntry<Job>[],
  ): unknown[] {
    try {
      const snapshots = new Map(
        due.map(({ value }) => [value.id, value.snapshot]),
      );
      return prefetch(
        entries.map(({ value }) => value.message),
        entries.map(({ value }) => snapshots.get(value.id)),
      );
    } catch (error) {
      // Only an early start of the handlers' own work: they do without.
      log.warn("Prefetch failed: {error}", { error: toError(error).message });
      return [];
    }
  }

  /** Milliseconds until the next job comes due; `Infinity` if none. */
  async function msUntilNextDue(): Promise<number> {
    let next = Infinity;
    for (let shard = 0; shard < shards; shard++) {
      for await (
        const entry of kv.list<Job>({ prefix: queueShardPrefix(shard) }, {
          limit: 1,
        })
      ) {
        next = Math.min(next, entry.key[2] as number);
      }
    }
    return Math.max(0, next - now());
  }

  /**
   * Gives claimed jobs this worker will not deliver back (due now, the claim
   * not counted as a delivery), so another worker need not wait out the
   * lease. If this fails, the leases run out and the jobs come back anyway.
   */
  async function unclaim(entries: Deno.KvEntry<Job>[]): Promise<void> {
    for (let i = 0; i < entries.length; i += claimBatch) {
      const op = kv.atomic();
      for (const entry of entries.slice(i, i + claimBatch)) {
        const job = entry.value;
        op.check(entry).delete(entry.key).set(
          queueJobKey(shardOf(job.id), now(), job.id),
          { ...job, deliveries: job.deliveries - 1, leasedBy: null },
        );
      }
      await op.commit().catch((error) => {
        log.warn("Cannot give back claimed jobs; their leases will: {error}", {
          error: toError(error).message,
        });
      });
    }
  }

  /**
   * The worker loop shared by `listen` and `drain`: claim what is due ahead
   * of the free slots (batches of claims are cheaper than single ones), run
   * it, sleep until the next due job. A claimed job waits at most
   * `MAX_BUFFER_WAIT_MS` for a slot, well inside its lease; then it is given
   * back.
   */
  async function work(
    handler: MessageHandler,
    deadline: number,
    prefetch: Prefetch | undefined,
  ): Promise<number> {
    const inFlight = new Set<Promise<void>>();
    const buffer: {
      entry: Deno.KvEntry<Job>;
      claimedAt: number;
      prefetched: unknown;
    }[] = [];
    // Deliveries waiting for a group commit leave their slot, up to a bound
    // on how many may wait at once.
    const hasSlot = () =>
      busy < options.maxInFlight &&
      inFlight.size < options.maxInFlight + MAX_GROUP;
    // A drain starts nothing it could not finish by its deadline; the runs
    // in flight then finish within it.
    const startBy = deadline - (options.runMs ?? 0);
    let delivered = 0;
    const start = () => {
      if (stopped || now() >= startBy) return;
      while (buffer.length > 0 && hasSlot()) {
        // One that waited past MAX_BUFFER_WAIT_MS (the lease allows no more)
        // goes back instead, in the worker loop, woken for it.
        if (now() - buffer[0]!.claimedAt > MAX_BUFFER_WAIT_MS) return;
        const { entry, prefetched } = buffer.shift()!;
        const running = deliver(entry, handler, prefetched).finally(() =>
          inFlight.delete(running)
        );
        inFlight.add(running);
        delivered++;
      }
    };
    startBuffered = start;
    try {
      while (!stopped && now() < startBy) {
        const stale = buffer.findIndex(({ claimedAt }) =>
          now() - claimedAt <= MAX_BUFFER_WAIT_MS
        );
        const expired = buffer.splice(0, stale < 0 ? buffer.length : stale);
        if (expired.length > 0) {
          await unclaim(expired.map(({ entry }) => entry));
        }
        // Jobs already claimed start first: a claim waits for KV.
        start();
        let claimed = 0;
        if (buffer.length < options.maxInFlight && hasSlot()) {
          try {
            // One claim commit per batch, whatever its size: claim a
            // full one.
            const due = await findDue(claimBatch);
            const entries = await claim(due);
            const t = now();
            // The batch's reads start now, together, not one per free slot:
            // then many runs reach their outcome commit at once, and the
            // group commits are bigger (docs/benchmarks.md).
            const prefetched = entries.length > 0 && prefetch
              ? _prefetch(prefetch, entries, due)
              : [];
            entries.forEach((entry, i) =>
              buffer.push({ entry, claimedAt: t, prefetched: prefetched[i] })
            );
            claimed = entries.length;
          } catch (error) {
            // KV unavailable for a moment (a locked SQLite file, a network
            // blip): the worker must outlive it. Jobs stay in KV; try again
            // after a pause.
            log.warn("Cannot claim jobs, retrying in {ms} ms: {error}", {
              ms: pollMs,
              error: toError(error).message,
            });
            await new Promise((resolve) => setTimeout(resolve, pollMs));
            continue;
          }
        }
        // Stopped while claiming: what was just claimed goes back (finally).
        if (stopped) break;
        start();
        if (claimed > 0 && hasSlot()) continue;
        // Full, or nothing due: wait for a free slot, a wake-up, or the next
        // due job, whichever comes first.
        // With jobs waiting for a slot, wake when the oldest is due back.
        let waitMs = buffer.length > 0
          ? buffer[0]!.claimedAt + MAX_BUFFER_WAIT_MS - now() + 1
          : pollMs;
        if (hasSlot()) {
          const untilNext = await msUntilNextDue().catch(() => pollMs);
          // Draining: nothing more comes due within the budget.
          if (inFlight.size === 0 && untilNext > startBy - now()) break;
          waitMs = Math.min(untilNext, pollMs, startBy - now());
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.max(1, waitMs));
          if (inFlight.size > 0) Promise.race(inFlight).then(done);
          wake = done;
          function done() {
            clearTimeout(timer);
            wake = null;
            resolve();
          }
        });
      }
    } finally {
      // Stopped or out of budget: what was claimed but not started goes back.
      if (startBuffered === start) startBuffered = null;
      await unclaim(buffer.splice(0).map(({ entry }) => entry));
    }
    await Promise.allSettled([...inFlight]);
    return delivered;
  }

  return {
    name: "kv",
    keepsSnapshots: true,
    enqueue(
      op: Deno.AtomicOperation,
      message: Message,
      enqueue: EnqueueOptions,
    ) {
      const id = crypto.randomUUID();
      const dueAt = now() + Math.max(0, Math.round(enqueue.delayMs));
      const job: Job = {
        id,
        message,
        deliveries: 0,
        failures: 0,
        undeliveredKey: enqueue.undeliveredKey,
        enqueuedAt: now(),
        dueAt,
        leasedBy: null,
        ...(enqueue.snapshot === undefined
          ? {}
          : { snapshot: enqueue.snapshot }),
      };
      // One wake-up per commit is enough, however many jobs it enqueues.
      if (!woken.has(op)) {
        woken.add(op);
        op.sum(queueWakeKey(), 1n);
      }
      return op.set(queueJobKey(shardOf(id), dueAt, id), job);
    },
    async listen(handler, listenOptions) {
      stopped = false;
      const watcher = _watchWake(kv, () => wake?.());
      try {
        await work(handler, Infinity, listenOptions?.prefetch);
      } finally {
        watcher.cancel();
      }
    },
    async drain(handler, budgetMs, listenOptions) {
      const deadline = now() + budgetMs;
      const delivered = await work(handler, deadline, listenOptions?.prefetch);
      return { delivered };
    },
    async depth() {
      return await _depth(kv, shards, now());
    },
    stop() {
      stopped = true;
      wake?.();
    },
  };
}

/** Calls `onWake` whenever the wake key changes; cancel to stop. */
function _watchWake(kv: Deno.Kv, onWake: () => void): { cancel(): void } {
  const stream = kv.watch([queueWakeKey()]);
  const reader = stream.getReader();
  (async () => {
    try {
      while (true) {
        const { done } = await reader.read();
        if (done) return;
        onWake();
      }
    } catch {
      // KV closed: the worker loop ends on its own.
    }
  })();
  return {
    cancel() {
      reader.cancel().catch(() => {});
    },
  };
}

/** Counts jobs by state, scanning at most 10 000 entries. */
async function _depth(
  kv: Deno.Kv,
  shards: number,
  t: number,
): Promise<QueueDepth> {
  const bound = 10_000;
  const depth: QueueDepth = {
    dueNow: 0,
    delayed: 0,
    leased: 0,
    oldestDueAgeMs: 0,
    truncated: false,
  };
  let seen = 0;
  for (let shard = 0; shard < shards; shard++) {
    for await (
      const entry of kv.list<Job>({ prefix: queueShardPrefix(shard) })
    ) {
      if (++seen > bound) {
        depth.truncated = true;
        return depth;
      }
      const keyDue = entry.key[2] as number;
      if (entry.value.leasedBy !== null && keyDue > t) depth.leased++;
      else if (keyDue > t) depth.delayed++;
      else {
        depth.dueNow++;
        depth.oldestDueAgeMs = Math.max(
          depth.oldestDueAgeMs,
          t - entry.value.dueAt,
        );
      }
    }
  }
  return depth;
}

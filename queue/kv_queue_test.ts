/**
 * What only the `kv` driver does: claiming ahead of its free slots, and
 * giving back what it claimed but did not start.
 */
import assert from "node:assert/strict";
import type { Message } from "../handlers/messages.ts";
import { queueShardPrefix } from "../store/keys.ts";
import { LOCAL_MAX_CHECKS } from "../store/kv_util.ts";
import { deferred, runMessageFor, SPACE, waitFor } from "../test/test_deps.ts";
import {
  DEFAULT_SHARDS,
  type Job,
  kvQueue,
  MAX_BUFFER_WAIT_MS,
} from "./kv_queue.ts";
import type { QueueDriver } from "./queue.ts";

async function jobs(kv: Deno.Kv): Promise<Job[]> {
  const all: Job[] = [];
  for (let shard = 0; shard < DEFAULT_SHARDS; shard++) {
    for await (const e of kv.list<Job>({ prefix: queueShardPrefix(shard) })) {
      all.push(e.value);
    }
  }
  return all;
}

/** Enqueues `n` run messages in one commit. */
async function enqueue(
  kv: Deno.Kv,
  queue: QueueDriver,
  n: number,
): Promise<void> {
  const op = kv.atomic();
  for (const m of messages(n)) {
    queue.enqueue(op, m, { delayMs: 0, undeliveredKey: ["dead", m.charmId] });
  }
  await op.commit();
}

/** Listens with a handler that notes each start and waits on `gate`. */
function listenGated(queue: QueueDriver) {
  const gate = deferred();
  const started: string[] = [];
  const listening = queue.listen(async (raw) => {
    started.push((raw as Message).charmId);
    await gate.promise;
  });
  return { gate, started, listening };
}

/** A driver with one slot on a clock the test moves. */
function oneSlotQueue(kv: Deno.Kv, maxChecks?: number) {
  let clock = Date.UTC(2026, 10, 28);
  const queue = kvQueue(kv, {
    owner: "w",
    leaseMs: 60_000,
    maxInFlight: 1,
    now: () => clock,
    ...(maxChecks === undefined ? {} : { maxChecks }),
  });
  return { queue, advance: (ms: number) => (clock += ms) };
}

function messages(n: number): Message[] {
  return Array.from(
    { length: n },
    (_, i) => runMessageFor({ space: SPACE, charmId: `k${i}` }, i),
  );
}

Deno.test({
  name: "kv queue: jobs claimed but not started go back when the worker stops",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kv = await Deno.openKv(":memory:");
    const queue = kvQueue(kv, { owner: "w", leaseMs: 60_000, maxInFlight: 1 });
    // Enqueued before the worker starts: its first scan sees all five.
    await enqueue(kv, queue, 5);
    const { gate, started, listening } = listenGated(queue);
    await waitFor("the first job to start", () => started.length === 1);
    // One slot: the worker claimed the other four ahead of it.
    assert.equal((await jobs(kv)).filter((j) => j.leasedBy === "w").length, 5);

    queue.stop!();
    await waitFor(
      "the four to be given back",
      async () =>
        (await jobs(kv)).filter((j) => j.leasedBy === null).length === 4,
    );
    // Given back as never delivered, due now: another worker takes them at
    // once, not after the lease.
    for (const job of (await jobs(kv)).filter((j) => j.leasedBy === null)) {
      assert.equal(job.deliveries, 0, job.id);
    }
    gate.resolve();
    await listening;
    assert.deepEqual(started.length, 1);
    assert.equal((await jobs(kv)).length, 4);
  },
});

Deno.test({
  name: "kv queue: a claimed job that waits too long for a slot goes back",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kv = await Deno.openKv(":memory:");
    const { queue, advance } = oneSlotQueue(kv);
    await enqueue(kv, queue, 3);
    const { gate, started, listening } = listenGated(queue);
    try {
      await waitFor("the first job to start", () => started.length === 1);
      // The run in the only slot takes longer than a claimed job may wait.
      advance(MAX_BUFFER_WAIT_MS + 1);
      await waitFor(
        "the two waiting jobs to be given back",
        async () =>
          (await jobs(kv)).filter((j) => j.leasedBy === null).length === 2,
        10_000,
      );
      gate.resolve();
      await waitFor("every job to run", () => started.length === 3);
      await waitFor(
        "the table to empty",
        async () => (await jobs(kv)).length === 0,
      );
      assert.deepEqual(started.sort(), ["k0", "k1", "k2"]);
    } finally {
      gate.resolve();
      queue.stop!();
      await listening;
    }
  },
});

/**
 * `kv` whose first claim commit (a job set leased to `owner`) waits until
 * the test opens the gate: the real KV, only delayed, so a stop can land
 * while a claim is in flight.
 */
function claimGatedKv(kv: Deno.Kv, owner: string) {
  const entered = deferred();
  const gate = deferred();
  let armed = true;
  const wrap = (op: Deno.AtomicOperation): Deno.AtomicOperation => {
    let claims = false;
    const proxy: Deno.AtomicOperation = new Proxy(op, {
      get(target, name) {
        const value = Reflect.get(target, name, target);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          if (name === "set") {
            const [key, job] = args as [Deno.KvKey, Job];
            if (key[0] === "queue_jobs" && job?.leasedBy === owner) {
              claims = true;
            }
          }
          if (name === "commit" && claims && armed) {
            armed = false;
            entered.resolve();
            return gate.promise.then(() => target.commit());
          }
          const result = value.apply(target, args);
          return result === target ? proxy : result;
        };
      },
    });
    return proxy;
  };
  const gated = new Proxy(kv, {
    get(target, name) {
      if (name === "atomic") return () => wrap(target.atomic());
      const value = Reflect.get(target, name, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: gated as Deno.Kv, entered, gate };
}

Deno.test({
  name: "kv queue: jobs claimed while the worker stops are given back, not run",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kv = await Deno.openKv(":memory:");
    const gated = claimGatedKv(kv, "w");
    const queue = kvQueue(gated.kv, {
      owner: "w",
      leaseMs: 60_000,
      maxInFlight: 4,
    });
    await enqueue(kv, queue, 3);
    const started: string[] = [];
    const listening = queue.listen((raw) => {
      started.push((raw as Message).charmId);
      return Promise.resolve();
    });
    await gated.entered.promise;
    // The claim of all three is in flight: stop, then let it commit.
    queue.stop!();
    gated.gate.resolve();
    await listening;
    assert.deepEqual(started, []);
    const left = await jobs(kv);
    assert.equal(left.length, 3);
    for (const job of left) {
      assert.equal(job.leasedBy, null, job.id);
      assert.equal(job.deliveries, 0, job.id);
    }
  },
});

Deno.test({
  name:
    "drain() starts no run it could not finish within its budget, and leaves the job for the next",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    using kv = await Deno.openKv(":memory:");
    const queue = kvQueue(kv, {
      owner: "t",
      leaseMs: 60_000,
      maxInFlight: 5,
      pollMs: 20,
      runMs: 1_000,
    });
    const op = kv.atomic();
    queue.enqueue(op, runMessageFor({ space: SPACE, charmId: "c" }, 0), {
      delayMs: 0,
      undeliveredKey: ["dead", "c"],
    });
    await op.commit();
    const handled: unknown[] = [];
    const handler = (raw: unknown) => {
      handled.push(raw);
      return Promise.resolve();
    };
    // A budget shorter than a run: nothing starts, the job stays unclaimed.
    assert.deepEqual(await queue.drain!(handler, 500), { delivered: 0 });
    assert.equal(handled.length, 0);
    const jobs: Deno.KvEntry<Job>[] = [];
    for (let shard = 0; shard < DEFAULT_SHARDS; shard++) {
      jobs.push(
        ...await Array.fromAsync(
          kv.list<Job>({ prefix: queueShardPrefix(shard) }),
        ),
      );
    }
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0]!.value.deliveries, 0);
    assert.equal(jobs[0]!.value.leasedBy, null);
    // A budget a run fits in: it runs.
    assert.deepEqual(await queue.drain!(handler, 1_500), { delivered: 1 });
    assert.equal(handled.length, 1);
  },
});

Deno.test({
  name:
    "kv queue: each claimed batch is prefetched in one call, and each delivery gets its own message's value",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A local KV takes 100 checks: one claim of all 12. Over KV Connect (the
    // default, 10 checks): claims of 10 and 2.
    for (
      const [maxChecks, batches] of [
        [LOCAL_MAX_CHECKS, [12]],
        [undefined, [10, 2]],
      ] as const
    ) {
      using kv = await Deno.openKv(":memory:");
      const queue = kvQueue(kv, {
        owner: "t",
        leaseMs: 60_000,
        maxInFlight: 2,
        pollMs: 20,
        ...(maxChecks === undefined ? {} : { maxChecks }),
      });
      await enqueue(kv, queue, 12);
      const prefetchCalls: number[] = [];
      const handled: string[] = [];
      const { delivered } = await queue.drain!(
        (raw, delivery) => {
          const charmId = (raw as Message).charmId;
          assert.deepEqual(delivery.prefetched, { for: charmId });
          handled.push(charmId);
          return Promise.resolve();
        },
        5_000,
        {
          prefetch(raws) {
            prefetchCalls.push(raws.length);
            return raws.map((raw) => ({ for: (raw as Message).charmId }));
          },
        },
      );
      assert.equal(delivered, 12);
      assert.equal(handled.length, 12);
      assert.deepEqual(prefetchCalls, batches);
      assert.equal((await jobs(kv)).length, 0);
    }
  },
});

Deno.test({
  name:
    "kv queue: a freed slot never starts a job that waited past MAX_BUFFER_WAIT_MS; it goes back and is claimed again",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using kv = await Deno.openKv(":memory:");
    const { queue, advance } = oneSlotQueue(kv, LOCAL_MAX_CHECKS);
    await enqueue(kv, queue, 2);
    const gate = deferred();
    const claims = new Map<string, number>();
    // How many times each job had been claimed when it started.
    const started = new Map<string, number>();
    const listening = queue.listen(async (raw, delivery) => {
      const id = (raw as Message).charmId;
      started.set(id, claims.get(id) ?? 0);
      if (started.size === 1) {
        // The only slot's run outlasts the other job's wait, then commits:
        // that frees the slot.
        await gate.promise;
        await delivery.commit(() => {});
      }
    }, {
      prefetch(raws) {
        for (const raw of raws) {
          const id = (raw as Message).charmId;
          claims.set(id, (claims.get(id) ?? 0) + 1);
        }
        return raws.map(() => undefined);
      },
    });
    try {
      await waitFor("the first job to start", () => started.size === 1);
      assert.deepEqual([...claims.values()], [1, 1]);
      advance(MAX_BUFFER_WAIT_MS + 1);
      gate.resolve();
      await waitFor("the second job to start", () => started.size === 2);
      const [, second] = [...started.keys()];
      // Not started from the stale claim: given back, then claimed again.
      assert.equal(started.get(second!), 2);
    } finally {
      gate.resolve();
      queue.stop!();
      await listening;
    }
  },
});

Deno.test({
  name: "kv queue: a prefetch that throws costs the claimed jobs nothing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    using kv = await Deno.openKv(":memory:");
    const queue = kvQueue(kv, { owner: "t", leaseMs: 60_000, maxInFlight: 2 });
    await enqueue(kv, queue, 3);
    const handled: unknown[] = [];
    const { delivered } = await queue.drain!(
      (_raw, delivery) => {
        handled.push(delivery.prefetched);
        return Promise.resolve();
      },
      5_000,
      {
        prefetch() {
          throw new Error("prefetch bug");
        },
      },
    );
    assert.equal(delivered, 3);
    assert.deepEqual(handled, [undefined, undefined, undefined]);
    assert.equal((await jobs(kv)).length, 0);
  },
});

Deno.test({
  name:
    "kv queue: a job's snapshot goes to the prefetch of its first claim only, and is not kept once claimed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    using kv = await Deno.openKv(":memory:");
    const queue = kvQueue(kv, {
      owner: "t",
      leaseMs: 60_000,
      maxInFlight: 2,
      maxChecks: LOCAL_MAX_CHECKS,
      backoffSchedule: [0],
    });
    assert.equal(queue.keepsSnapshots, true);
    const op = kv.atomic();
    for (const m of messages(2)) {
      queue.enqueue(op, m, {
        delayMs: 0,
        undeliveredKey: ["dead", m.charmId],
        snapshot: { of: m.charmId },
      });
    }
    await op.commit();
    assert.deepEqual(
      (await jobs(kv)).map((job) => job.snapshot).sort((a, b) =>
        JSON.stringify(a).localeCompare(JSON.stringify(b))
      ),
      messages(2).map((m) => ({ of: m.charmId })),
    );
    const prefetched: unknown[][] = [];
    const kept: unknown[] = [];
    let failed = false;
    const { delivered } = await queue.drain!(
      async (raw) => {
        // While it runs, the leased job holds no snapshot.
        for (const job of await jobs(kv)) {
          if (job.leasedBy !== null) kept.push(job.snapshot);
        }
        // The first delivery of the first message fails: its redelivery
        // reads for itself.
        if (!failed && (raw as Message).charmId === messages(1)[0]!.charmId) {
          failed = true;
          throw new Error("first try fails");
        }
      },
      5_000,
      {
        prefetch(raws, snapshots) {
          assert.equal(snapshots.length, raws.length);
          prefetched.push([...snapshots]);
          return raws.map(() => undefined);
        },
      },
    );
    assert.equal(delivered, 3);
    const [first, again] = prefetched;
    assert.deepEqual(
      new Set(first!.map((s) => JSON.stringify(s))),
      new Set(messages(2).map((m) => JSON.stringify({ of: m.charmId }))),
    );
    assert.deepEqual(again, [undefined]);
    assert.ok(kept.length >= 3);
    assert.ok(kept.every((snapshot) => snapshot === undefined));
    assert.equal((await jobs(kv)).length, 0);
  },
});

/**
 * One contract, both drivers: what handlers may rely on whichever queue runs
 * them.
 */
import assert from "node:assert/strict";
import type { Message } from "../handlers/messages.ts";
import { SPACE, waitFor } from "../test/test_deps.ts";
import { type Job, kvQueue } from "./kv_queue.ts";
import { nativeQueue } from "./native_queue.ts";
import type { MessageHandler, QueueDriver } from "./queue.ts";
import { queueShardPrefix } from "../store/keys.ts";

const FAST_BACKOFF = [20, 20, 20];

interface DriverCase {
  name: string;
  make(kv: Deno.Kv, owner?: string): QueueDriver;
}

const DRIVERS: DriverCase[] = [
  {
    name: "native",
    make: (kv) => nativeQueue(kv, { backoffSchedule: FAST_BACKOFF }),
  },
  {
    name: "kv",
    make: (kv, owner = "w1") =>
      kvQueue(kv, {
        owner,
        leaseMs: 400,
        maxInFlight: 10,
        pollMs: 20,
        backoffSchedule: FAST_BACKOFF,
      }),
  },
];

function message(n: number): Message {
  return {
    type: "run",
    v: 1,
    space: SPACE,
    charmId: `m${n}`,
    integration: "manual",
    kind: "scheduled",
    slot: n,
    attempt: 1,
    enqueuedAt: 0,
  };
}

async function enqueueAll(
  kv: Deno.Kv,
  queue: QueueDriver,
  messages: Message[],
  delayMs = 0,
): Promise<void> {
  for (let i = 0; i < messages.length; i += 100) {
    const op = kv.atomic();
    for (const m of messages.slice(i, i + 100)) {
      queue.enqueue(op, m, {
        delayMs,
        undeliveredKey: ["undelivered_test", m.charmId],
      });
    }
    assert.ok((await op.commit()).ok);
  }
}

/** Runs `fn` with a fresh KV and the driver listening with `handler`. */
async function withDriver(
  driver: DriverCase,
  handler: MessageHandler,
  fn: (kv: Deno.Kv, queue: QueueDriver) => Promise<void>,
): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const queue = driver.make(kv);
  const listening = queue.listen(handler);
  try {
    await fn(kv, queue);
  } finally {
    queue.stop?.();
    kv.close();
    await listening.catch(() => {});
  }
}

for (const driver of DRIVERS) {
  const test = (name: string, fn: () => Promise<void>) =>
    Deno.test({
      name: `${driver.name} queue: ${name}`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn,
    });

  test("delivers every message enqueued in one commit", async () => {
    const seen = new Set<string>();
    await withDriver(driver, (raw) => {
      seen.add((raw as Message).charmId);
      return Promise.resolve();
    }, async (kv, queue) => {
      await enqueueAll(
        kv,
        queue,
        Array.from({ length: 150 }, (_, i) => message(i)),
      );
      await waitFor("150 deliveries", () => seen.size === 150);
    });
  });

  test("delivers a delayed message after an immediate one", async () => {
    const order: string[] = [];
    await withDriver(driver, (raw) => {
      order.push((raw as Message).charmId);
      return Promise.resolve();
    }, async (kv, queue) => {
      // 2 s: enough margin that the second commit and its delivery land
      // first even on a loaded machine.
      await enqueueAll(kv, queue, [message(1)], 2_000);
      await enqueueAll(kv, queue, [message(2)], 0);
      await waitFor("both deliveries", () => order.length === 2);
      assert.deepEqual(order, ["m2", "m1"]);
    });
  });

  test("redelivers a message whose handler throws (at least once)", async () => {
    const attempts = new Map<string, number>();
    await withDriver(driver, (raw) => {
      const id = (raw as Message).charmId;
      const n = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, n);
      return n < 3 ? Promise.reject(new Error(`fail ${n}`)) : Promise.resolve();
    }, async (kv, queue) => {
      await enqueueAll(kv, queue, [message(1)]);
      await waitFor("the third attempt", () => attempts.get("m1") === 3);
    });
  });

  test("writes a message it cannot deliver to its keysIfUndelivered key", async () => {
    let calls = 0;
    await withDriver(driver, () => {
      calls++;
      return Promise.reject(new Error("always"));
    }, async (kv, queue) => {
      await enqueueAll(kv, queue, [message(7)]);
      const dead = await waitFor(
        "the undelivered message",
        async () => (await kv.get<Message>(["undelivered_test", "m7"])).value,
      );
      assert.equal(dead.charmId, "m7");
      assert.equal(calls, FAST_BACKOFF.length + 1);
    });
  });

  test("many deliveries of one backlog: none lost, none run twice at once", async () => {
    const kv = await Deno.openKv(":memory:");
    const workers = driver.name === "kv"
      ? ["a", "b", "c", "d"].map((owner) => driver.make(kv, owner))
      : [driver.make(kv)];
    const running = new Set<string>();
    let overlaps = 0;
    const handler: MessageHandler = async (raw, delivery) => {
      const id = (raw as Message).charmId;
      if (running.has(id)) overlaps++;
      running.add(id);
      await new Promise((resolve) => setTimeout(resolve, 1)); // Simulated work.
      // An idempotent effect: the first delivery records it.
      const key = ["effects", id];
      await delivery.commit((op) =>
        op.check({ key, versionstamp: null }).set(key, true)
          .sum(["effects_count"], 1n)
      );
      running.delete(id);
    };
    const listening = workers.map((w) => w.listen(handler));
    try {
      await enqueueAll(
        kv,
        workers[0]!,
        Array.from({ length: 300 }, (_, i) => message(i)),
      );
      await waitFor("300 effects", async () => {
        const count = (await kv.get<Deno.KvU64>(["effects_count"])).value;
        return count?.value === 300n;
      });
      assert.equal(overlaps, 0);
    } finally {
      for (const w of workers) w.stop?.();
      kv.close();
      await Promise.allSettled(listening);
    }
  });
}

Deno.test({
  name: "kv queue: a dying worker's job goes to another when its lease ends",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const kv = await Deno.openKv(":memory:");
    const a = DRIVERS[1]!.make(kv, "dies");
    const b = DRIVERS[1]!.make(kv, "lives");
    let aStarted = false;
    const listeningA = a.listen(() => {
      aStarted = true;
      return new Promise(() => {}); // Hangs: the worker "died" mid-job.
    });
    let bGot: Message | null = null;
    let listeningB: Promise<void> | null = null;
    try {
      await enqueueAll(kv, a, [message(1)]);
      await waitFor("worker A to take the job", () => aStarted);
      a.stop?.();
      listeningB = b.listen((raw) => {
        bGot = raw as Message;
        return Promise.resolve();
      });
      await waitFor("worker B to get it after the lease", () => bGot !== null);
      assert.equal(bGot!.charmId, "m1");
      await waitFor("the job to be gone", async () => {
        for (let shard = 0; shard < 8; shard++) {
          for await (
            const _ of kv.list<Job>({ prefix: queueShardPrefix(shard) })
          ) return false;
        }
        return true;
      });
    } finally {
      b.stop?.();
      kv.close();
      void listeningA;
      await listeningB?.catch(() => {});
    }
  },
});

Deno.test({
  name:
    "kv queue: drain() delivers what comes due within its budget, then returns",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const kv = await Deno.openKv(":memory:");
    try {
      const queue = DRIVERS[1]!.make(kv);
      await enqueueAll(
        kv,
        queue,
        Array.from({ length: 20 }, (_, i) => message(i)),
      );
      await enqueueAll(kv, queue, [message(100)], 150);
      await enqueueAll(kv, queue, [message(200)], 3_600_000);
      const seen: string[] = [];
      const { delivered } = await queue.drain!((raw) => {
        seen.push((raw as Message).charmId);
        return Promise.resolve();
      }, 30_000);
      // It returned once only the hour-away job remained, long before 30 s.
      assert.equal(delivered, 21);
      assert.ok(seen.includes("m100"));
      assert.ok(!seen.includes("m200"));
      const depth = await queue.depth!();
      assert.deepEqual(
        { dueNow: depth.dueNow, delayed: depth.delayed, leased: depth.leased },
        { dueNow: 0, delayed: 1, leased: 0 },
      );
    } finally {
      kv.close();
    }
  },
});

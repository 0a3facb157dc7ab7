/**
 * The platform's own limit: the raw Deno KV native queue in this process.
 * N messages are enqueued in atomic operations of 100 while a listener
 * drains them (the local queue keeps at most 100 deliveries in flight), each
 * handler doing one atomic write: a record and a counter `sum`.
 *
 * @module
 */
import process from "node:process";
import { type KvKind, openBenchKv } from "./bench_kv.ts";
import { type ThreadBusy, threadBusy, threadCpu } from "./threads.ts";

/** Enqueues per atomic operation (the fan-out's page size). */
export const ENQUEUE_BATCH = 100;

/** One baseline repetition's result. */
export interface BaselineResult {
  /** Messages handled per second, first enqueue to last handler commit. */
  messagesPerSecond: number;
  elapsedMs: number;
  /** Time to enqueue all N (the listener already draining), ms. */
  enqueueMs: number;
  /**
   * Process CPU time (user + system, every thread: JS and the KV's SQLite
   * thread) per message, ms. Steadier than rates on a busy machine.
   */
  cpuMsPerMessage: number;
  /** Busy share of the main and the SQLite thread (`bench/threads.ts`). */
  threadBusy: ThreadBusy | null;
  /** The main thread's CPU time per message, ms; `null` without `/proc`. */
  mainCpuMsPerMessage: number | null;
}

/**
 * Runs one repetition on a fresh KV. The listener starts first, as the
 * service's does, so the backlog is what the enqueues outrun the drain by:
 * about N, since enqueueing is much faster than delivery.
 */
export async function queueBaseline(
  kind: KvKind,
  messages: number,
  timeoutMs: number,
): Promise<BaselineResult> {
  await using store = await openBenchKv(kind);
  const { kv } = store;
  let handled = 0;
  const { promise: allHandled, resolve } = Promise.withResolvers<void>();
  const listening = kv.listenQueue(async (raw) => {
    const { i } = raw as { i: number };
    await kv.atomic()
      .set(["bench_records", i], { i, at: Date.now() })
      .sum(["bench_counter"], 1n)
      .commit();
    if (++handled === messages) resolve();
  });

  const started = performance.now();
  const cpu = process.cpuUsage();
  const threads = threadCpu();
  for (let i = 0; i < messages; i += ENQUEUE_BATCH) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(messages, i + ENQUEUE_BATCH); j++) {
      op.enqueue({ i: j }, { delay: 0 });
    }
    const { ok } = await op.commit();
    if (!ok) throw new Error(`Cannot enqueue baseline batch at ${i}`);
  }
  const enqueueMs = performance.now() - started;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() =>
      reject(
        new Error(
          `Baseline timed out after ${timeoutMs} ms: ${handled} of ${messages} handled`,
        ),
      ), timeoutMs);
  });
  try {
    await Promise.race([allHandled, timeout]);
  } finally {
    clearTimeout(timer);
  }
  const elapsedMs = performance.now() - started;
  const { user, system } = process.cpuUsage(cpu);
  const busy = threadBusy(threads, threadCpu(), elapsedMs);
  kv.close();
  await listening.catch(() => {});
  return {
    messagesPerSecond: messages / (elapsedMs / 1000),
    elapsedMs,
    enqueueMs,
    cpuMsPerMessage: (user + system) / 1000 / messages,
    threadBusy: busy,
    mainCpuMsPerMessage: busy === null
      ? null
      : busy.main * elapsedMs / messages,
  };
}

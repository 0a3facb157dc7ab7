/**
 * One fan-out over a seeded KV file, in a process of its own so its peak RSS
 * is the fan-out's: opens the file, runs a cron tick (`tick(deps, {mode:
 * "cron"})`, what `Deno.cron` calls every minute) with the native driver
 * wrapped to count enqueues, samples RSS while it runs, and prints one JSON
 * line of {@linkcode FanoutWorkerResult}.
 *
 * Usage: `deno run -A bench/fanout_worker.ts <kvPath>`.
 *
 * @module
 */
import { tick } from "../handlers/tick.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import type { QueueDriver } from "../queue/queue.ts";
import { benchDeps, serviceKv } from "./bench_deps.ts";
import { benchRecipes, noopRecipe } from "./recipes.ts";

/** What the worker prints. */
export interface FanoutWorkerResult {
  /** Runs the fan-out committed (its own count). */
  enqueued: number;
  /** Enqueue calls the driver saw. */
  enqueueCalls: number;
  elapsedMs: number;
  /** RSS after opening KV, before the fan-out, bytes. */
  rssBeforeBytes: number;
  /** Highest RSS sampled every 10 ms during the fan-out, bytes. */
  rssPeakSampledBytes: number;
  /** The kernel's peak RSS of the process (`VmHWM`), bytes; null off Linux. */
  rssHighWaterBytes: number | null;
  /** Highest V8 heap use sampled, bytes. */
  heapPeakBytes: number;
}

/** Wraps a driver so it counts enqueue calls. */
export function countingQueue(
  inner: QueueDriver,
): QueueDriver & { enqueues: number } {
  const counted = {
    ...inner,
    enqueues: 0,
    enqueue(...args: Parameters<QueueDriver["enqueue"]>) {
      counted.enqueues++;
      return inner.enqueue(...args);
    },
  };
  return counted;
}

/** The process's peak RSS from `/proc/self/status`, or null. */
export async function highWaterRss(): Promise<number | null> {
  try {
    const status = await Deno.readTextFile("/proc/self/status");
    const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

if (import.meta.main) {
  const [path] = Deno.args;
  if (!path) throw new TypeError("usage: fanout_worker.ts <kvPath>");
  const raw = await Deno.openKv(path);
  const kv = serviceKv(raw);
  const queue = countingQueue(nativeQueue(kv));
  const deps = await benchDeps({
    kv,
    queue,
    recipes: benchRecipes(noopRecipe),
    maxConcurrent: 5,
  });
  const rssBeforeBytes = Deno.memoryUsage().rss;
  let rssPeak = rssBeforeBytes;
  let heapPeak = 0;
  const sample = () => {
    const usage = Deno.memoryUsage();
    rssPeak = Math.max(rssPeak, usage.rss);
    heapPeak = Math.max(heapPeak, usage.heapUsed);
  };
  const sampler = setInterval(sample, 10);
  const started = performance.now();
  const results = await tick(deps, { mode: "cron" });
  const elapsedMs = performance.now() - started;
  clearInterval(sampler);
  sample();
  const result: FanoutWorkerResult = {
    enqueued: results.reduce((sum, r) => sum + r.enqueued, 0),
    enqueueCalls: queue.enqueues,
    elapsedMs,
    rssBeforeBytes,
    rssPeakSampledBytes: rssPeak,
    rssHighWaterBytes: await highWaterRss(),
    heapPeakBytes: heapPeak,
  };
  raw.close();
  console.log(JSON.stringify(result));
}

/**
 * Runs that finished recently, for the dashboard: counters per 5-minute
 * bucket (`runCountKey`), summed in each run's outcome commit, so a page load
 * reads one short range instead of scanning run records. Buckets older than
 * two hours are pruned by the service's periodic sweep.
 *
 * @module
 */
import { runCountKey, runCountsPrefix } from "./keys.ts";

/** Counts of runs that finished in a window. */
export interface RecentRuns {
  /** Slots that succeeded. */
  succeeded: number;
  /** Slots that failed for good (retries exhausted or not retriable). */
  failed: number;
}

/** Width of one bucket, ms. */
export const RUN_COUNT_BUCKET_MS = 300_000;

/** How long buckets are kept before the sweep prunes them, ms. */
export const RUN_COUNT_KEEP_MS = 2 * 3_600_000;

function _bucket(ms: number): number {
  return ms - (ms % RUN_COUNT_BUCKET_MS);
}

/** Adds a run that finished at `finishedAtMs` as `state` to `op`. */
export function countRun(
  op: Deno.AtomicOperation,
  finishedAtMs: number,
  state: "succeeded" | "failed",
): Deno.AtomicOperation {
  return op.sum(runCountKey(_bucket(finishedAtMs), state), 1n);
}

/**
 * Counts runs that finished at or after `sinceMs`, to the bucket: the bucket
 * holding `sinceMs` counts whole, so the window is up to 5 minutes longer.
 */
export async function countRecentRuns(
  kv: Deno.Kv,
  sinceMs: number,
): Promise<RecentRuns> {
  const counts: RecentRuns = { succeeded: 0, failed: 0 };
  for await (
    const entry of kv.list<Deno.KvU64>({
      prefix: runCountsPrefix(),
      start: [...runCountsPrefix(), _bucket(sinceMs)],
    })
  ) {
    const state = entry.key[2];
    if (state === "succeeded" || state === "failed") {
      counts[state] += Number(entry.value.value);
    }
  }
  return counts;
}

/** Deletes buckets older than {@linkcode RUN_COUNT_KEEP_MS}; returns how many. */
export async function pruneRunCounts(
  kv: Deno.Kv,
  nowMs: number,
): Promise<number> {
  const old: Deno.KvKey[] = [];
  for await (
    const entry of kv.list({
      prefix: runCountsPrefix(),
      end: [...runCountsPrefix(), _bucket(nowMs - RUN_COUNT_KEEP_MS)],
    }, { limit: 1000 })
  ) old.push(entry.key);
  for (let i = 0; i < old.length; i += 100) {
    const op = kv.atomic();
    for (const key of old.slice(i, i + 100)) op.delete(key);
    await op.commit();
  }
  return old.length;
}

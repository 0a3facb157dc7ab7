/**
 * Runs that finished recently, counted from the run records the run handler
 * keeps (`runKey`). Those records live a little over an hour
 * (`runRecordTtlMs`), so the table holds roughly the last hour's runs and
 * scanning it is bounded by the recent run rate, not by history; the scan
 * stops at `maxScan` and says so.
 *
 * @module
 */
import { runsPrefix } from "./keys.ts";

/** Counts of runs that finished in a window. */
export interface RecentRuns {
  /** Slots that succeeded. */
  succeeded: number;
  /** Slots that failed for good (retries exhausted or not retriable). */
  failed: number;
  /** `true` when the scan stopped at its bound: the counts are lower bounds. */
  truncated: boolean;
}

/** How many run records a count reads at most. */
export const MAX_RECENT_RUN_SCAN = 5_000;

interface _RunRecordView {
  state?: unknown;
  finishedAt?: unknown;
}

/**
 * Counts runs that finished at or after `sinceMs`.
 *
 * @param maxScan records read at most (default
 *   {@linkcode MAX_RECENT_RUN_SCAN})
 */
export async function countRecentRuns(
  kv: Deno.Kv,
  sinceMs: number,
  maxScan: number = MAX_RECENT_RUN_SCAN,
): Promise<RecentRuns> {
  const counts: RecentRuns = { succeeded: 0, failed: 0, truncated: false };
  let seen = 0;
  for await (
    const entry of kv.list<_RunRecordView>({ prefix: runsPrefix() }, {
      limit: maxScan + 1,
      batchSize: 500,
    })
  ) {
    if (++seen > maxScan) {
      counts.truncated = true;
      break;
    }
    const { state, finishedAt } = entry.value ?? {};
    if (typeof finishedAt !== "number" || finishedAt < sinceMs) continue;
    if (state === "succeeded") counts.succeeded++;
    else if (state === "failed") counts.failed++;
  }
  return counts;
}

import assert from "node:assert/strict";
import { runCountsPrefix } from "./keys.ts";
import {
  countRecentRuns,
  countRun,
  pruneRunCounts,
  RUN_COUNT_BUCKET_MS,
  RUN_COUNT_KEEP_MS,
} from "./recent_runs.ts";

const NOW = Date.UTC(2026, 10, 28, 12, 2, 30);

async function record(
  kv: Deno.Kv,
  runs: [number, "succeeded" | "failed"][],
): Promise<void> {
  const op = kv.atomic();
  for (const [at, state] of runs) countRun(op, at, state);
  await op.commit();
}

async function buckets(kv: Deno.Kv): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix: runCountsPrefix() })) n++;
  return n;
}

Deno.test("countRecentRuns() counts outcomes from the bucket holding the start on", async () => {
  await using kv = await Deno.openKv(":memory:");
  const hourAgo = NOW - 3_600_000;
  await record(kv, [
    [NOW, "succeeded"],
    [NOW - 1_000, "succeeded"],
    [NOW - 1_800_000, "failed"],
    // In the bucket that holds the window's start: counted whole.
    [hourAgo - (hourAgo % RUN_COUNT_BUCKET_MS), "succeeded"],
    // The bucket before it: not counted.
    [hourAgo - (hourAgo % RUN_COUNT_BUCKET_MS) - 1, "failed"],
  ]);
  assert.deepEqual(await countRecentRuns(kv, hourAgo), {
    succeeded: 3,
    failed: 1,
  });
});

Deno.test("pruneRunCounts() deletes only buckets past the keep time", async () => {
  await using kv = await Deno.openKv(":memory:");
  await record(kv, [
    [NOW, "succeeded"],
    [NOW - RUN_COUNT_KEEP_MS + RUN_COUNT_BUCKET_MS, "failed"],
    [NOW - RUN_COUNT_KEEP_MS - RUN_COUNT_BUCKET_MS, "succeeded"],
    [NOW - 24 * 3_600_000, "failed"],
  ]);
  assert.equal(await buckets(kv), 4);
  assert.equal(await pruneRunCounts(kv, NOW), 2);
  assert.equal(await buckets(kv), 2);
  assert.equal(await pruneRunCounts(kv, NOW), 0);
});

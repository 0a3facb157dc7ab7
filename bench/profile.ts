/**
 * Runs one measurement on its own, to profile it:
 *
 * ```sh
 * deno run --allow-all --cpu-prof --cpu-prof-dir=/tmp/prof bench/profile.ts e2e native memory 5000
 * deno run --allow-all bench/cpu_profile_summary.ts /tmp/prof/*.cpuprofile
 * ```
 *
 * Measurements: `baseline <file|memory> <messages>`, `e2e <native|kv>
 * <file|memory> <charms>`, `fanout <charms> [native|kv]` (in this process,
 * not a subprocess, so the profile sees it). Each prints its result as JSON.
 *
 * To measure a change to core code against the tree as it is, make it in a
 * copy (`git worktree add`) and run this file in both.
 *
 * @module
 */
import { tick } from "../handlers/tick.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { benchDeps } from "./bench_deps.ts";
import type { KvKind } from "./bench_kv.ts";
import { openBenchKv } from "./bench_kv.ts";
import { driverNamed } from "./drivers.ts";
import { endToEnd } from "./end_to_end.ts";
import { queueBaseline } from "./queue_baseline.ts";
import { benchRecipes, noopRecipe } from "./recipes.ts";
import { seedCharmsBatched } from "./seed.ts";

async function _main(): Promise<void> {
  const [what, ...rest] = Deno.args;
  const kindOf = (value: string | undefined): KvKind => {
    if (value !== "file" && value !== "memory") {
      throw new TypeError(`"${value}" is not a KV kind; use file or memory`);
    }
    return value;
  };
  if (what === "baseline") {
    const r = await queueBaseline(kindOf(rest[0]), Number(rest[1]), 600_000);
    console.log(JSON.stringify(r));
  } else if (what === "e2e") {
    const driver = driverNamed(rest[0] ?? "");
    const r = await endToEnd({
      kind: kindOf(rest[1]),
      driver,
      charms: Number(rest[2]),
      maxConcurrent: Number(Deno.env.get("BENCH_MAX_CONCURRENT") ?? 5),
      processes: 1,
      timeoutMs: 600_000,
      // Batched, so a profile holds little beyond the measured runs.
      seeding: "batched",
    });
    console.log(JSON.stringify(r));
  } else if (what === "fanout") {
    await using store = await openBenchKv("file");
    await seedCharmsBatched(store.kv, {
      recipe: noopRecipe,
      count: Number(rest[0]),
    });
    // The native driver by default, as the fan-out benchmark runs it; `kv`
    // to see what its snapshots cost (nothing listens: enqueues only).
    const { queue, stop } = rest[1] === undefined
      ? { queue: nativeQueue(store.kv), stop: () => {} }
      : driverNamed(rest[1]).create(store.kv, 5, "profile");
    const deps = await benchDeps({
      kv: store.kv,
      queue,
      recipes: benchRecipes(noopRecipe),
      maxConcurrent: 5,
    });
    const started = performance.now();
    const results = await tick(deps, { mode: "cron" });
    console.log(JSON.stringify({
      enqueued: results[0]?.enqueued,
      elapsedMs: performance.now() - started,
    }));
    stop();
  } else {
    throw new TypeError(
      "usage: profile.ts baseline <kind> <n> | e2e <driver> <kind> <n> | fanout <n> [driver]",
    );
  }
}

if (import.meta.main) {
  try {
    await _main();
  } catch (error) {
    // A wrong argument is a usage line, not a stack trace.
    if (!(error instanceof TypeError)) throw error;
    console.error(`error: ${error.message}`);
    Deno.exit(2);
  }
}

/**
 * Charm runs per second, end to end: N no-op charms created and registered
 * with the `manual` integration, one fan-out, and queue listeners running
 * every message through `dispatch()` as `service/service.ts` does, timed
 * until the service counters show every run recorded.
 *
 * @module
 */
import process from "node:process";
import { dispatch, listenOptions } from "../handlers/dispatch.ts";
import { tickOf } from "../handlers/fanout.ts";
import { tick } from "../handlers/tick.ts";
import { readServiceState } from "../store/service_state.ts";
import { benchDeps, serviceKv, ShiftedClock } from "./bench_deps.ts";
import { type KvKind, openBenchKv } from "./bench_kv.ts";
import {
  countingKv,
  type KvOpCounts,
  totalOps,
  zeroCounts,
} from "./counting_kv.ts";
import type { DriverFactory } from "./drivers.ts";
import { benchRecipes, noopRecipe } from "./recipes.ts";
import { type ThreadBusy, threadBusy, threadCpu } from "./threads.ts";
import { seedCharms, seedCharmsBatched } from "./seed.ts";

/** Options for one end-to-end repetition. */
export interface EndToEndOptions {
  kind: KvKind;
  driver: DriverFactory;
  charms: number;
  /** `--max-concurrent` of each process. */
  maxConcurrent: number;
  /**
   * Service processes listening: 1 is this process; 2 adds a worker
   * subprocess on the same KV file (`bench/e2e_worker.ts`).
   */
  processes: 1 | 2;
  /** Longest wait for the runs, ms. */
  timeoutMs: number;
  /**
   * How the charms are created: `store` (`createCharm` + `registerCharm`,
   * about 1,000/s on a file) or `batched` (the same records, 100 per commit;
   * see `bench/seed.ts`). Default: `store` up to
   * {@linkcode STORE_SEEDING_MAX} charms.
   */
  seeding?: "store" | "batched";
}

/** Above this many charms, end-to-end runs seed in batches by default. */
export const STORE_SEEDING_MAX = 5_000;

/** One end-to-end repetition's result. */
export interface EndToEndResult {
  runsPerSecond: number;
  elapsedMs: number;
  /** Time to the end of the fan-out (every run enqueued), ms. */
  fanoutMs: number;
  /**
   * KV operations per run in this process (fan-out, driver and handlers;
   * the counter polling is not counted). With a worker subprocess, its own
   * operations are not seen, so this is `null`.
   */
  kvOpsPerRun: { reads: number; writes: number; total: number } | null;
  counts: KvOpCounts | null;
  /**
   * This process's CPU time (user + system, all threads) per run, ms; with
   * a worker subprocess, its CPU is not included, so this is `null`.
   */
  cpuMsPerRun: number | null;
  /**
   * Busy share of this process's main and SQLite threads
   * (`bench/threads.ts`); `null` with a worker subprocess.
   */
  threadBusy: ThreadBusy | null;
  /**
   * The main thread's CPU time per run, ms (`threadBusy.main` over the run):
   * the steadiest figure for work in the isolate; `null` as above.
   */
  mainCpuMsPerRun: number | null;
  succeeded: number;
  failed: number;
}

/**
 * Runs one repetition on a fresh KV.
 *
 * Every run is due at once: the fan-out runs with its clock held at the last
 * millisecond of a minute, so with the default 60 s interval it covers
 * exactly one slot, the one in progress, and every charm's offset in that
 * slot has passed (delay 0). Held, not moving: a clock that ticked into the
 * next minute mid-call would schedule the next slot instead, spread over a
 * minute. The runs see the real clock, shifted to start there.
 */
export async function endToEnd(
  options: EndToEndOptions,
): Promise<EndToEndResult> {
  if (options.processes === 2 && options.kind !== "file") {
    throw new RangeError("Two processes need a file-backed KV");
  }
  await using store = await openBenchKv(options.kind);
  const recipes = benchRecipes(noopRecipe);
  const seeding = options.seeding ??
    (options.charms <= STORE_SEEDING_MAX ? "store" : "batched");
  const seed = seeding === "store" ? seedCharms : seedCharmsBatched;
  await seed(store.kv, { recipe: noopRecipe, count: options.charms });

  // Counted inside the busy-retry wrapper, so a retried call counts again.
  const { kv: counted, counts } = countingKv(store.kv);
  const kv = serviceKv(counted);
  const clock = new ShiftedClock();
  const owner = `bench-main-${crypto.randomUUID()}`;
  const { queue, stop } = options.driver.create(
    kv,
    options.maxConcurrent,
    owner,
  );
  const deps = await benchDeps({
    kv,
    queue,
    recipes,
    maxConcurrent: options.maxConcurrent,
    now: clock.now,
  });
  const fanoutAt = tickOf(clock.now()) + 60_000 + 59_999;
  clock.set(fanoutAt);
  const worker = options.processes === 2
    ? await _startWorker(store.path, options, fanoutAt)
    : null;
  // In one process every run's outcome is seen here, when its commit has
  // landed: the clock stops at the last one, not at the next poll of KV. A
  // run that failed for good ends too (the caller reports how many did).
  let finished = 0;
  const allFinished = Promise.withResolvers<void>();
  const listening = queue.listen(
    (raw, delivery) =>
      dispatch(deps, raw, delivery).then((outcome) => {
        if (
          (outcome === "succeeded" || outcome === "failed") &&
          ++finished === options.charms
        ) {
          allFinished.resolve();
        }
      }),
    listenOptions(deps),
  );

  try {
    Object.assign(counts, zeroCounts());
    const started = performance.now();
    const cpu = process.cpuUsage();
    const threads = threadCpu();
    const [result] = await tick({ ...deps, now: () => fanoutAt }, {
      mode: "now",
    });
    const fanoutMs = performance.now() - started;
    if (result?.enqueued !== options.charms) {
      throw new Error(
        `Fan-out enqueued ${result?.enqueued} runs, expected ${options.charms}`,
      );
    }
    const single = options.processes === 1;
    if (single) await _within(allFinished.promise, options.timeoutMs);
    else await waitForRuns(store.kv, options.charms, options.timeoutMs);
    const elapsedMs = performance.now() - started;
    const { user, system } = process.cpuUsage(cpu);
    const busy = threadBusy(threads, threadCpu(), elapsedMs);
    // Every run went through, as KV records it: the figure counts what it
    // says.
    const state = await waitForRuns(store.kv, options.charms, 0);
    const ops = totalOps(counts);
    return {
      runsPerSecond: options.charms / (elapsedMs / 1000),
      elapsedMs,
      fanoutMs,
      kvOpsPerRun: single
        ? {
          reads: ops.reads / options.charms,
          writes: ops.writes / options.charms,
          total: ops.total / options.charms,
        }
        : null,
      counts: single ? { ...counts } : null,
      cpuMsPerRun: single ? (user + system) / 1000 / options.charms : null,
      threadBusy: single ? busy : null,
      mainCpuMsPerRun: single && busy !== null
        ? busy.main * elapsedMs / options.charms
        : null,
      succeeded: state.totalSuccesses,
      failed: state.totalFailures,
    };
  } finally {
    stop();
    await worker?.stop();
    store.kv.close();
    await listening.catch(() => {});
  }
}

/**
 * Polls the service counters (on the uncounted KV) until `expected` runs
 * are recorded, at most `timeoutMs`.
 */
export async function waitForRuns(
  kv: Deno.Kv,
  expected: number,
  timeoutMs: number,
): Promise<Awaited<ReturnType<typeof readServiceState>>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const state = await readServiceState(kv);
    if (state.totalCharmsProcessed >= expected) return state;
    if (performance.now() > deadline) {
      throw new Error(
        `Timed out after ${timeoutMs} ms: ${state.totalCharmsProcessed} of ${expected} runs recorded`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** `promise`, or a timeout error after `timeoutMs`. */
async function _within(promise: Promise<void>, timeoutMs: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Runs not done after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function _startWorker(
  path: string,
  options: EndToEndOptions,
  clockAt: number,
): Promise<{ stop(): Promise<void> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("./e2e_worker.ts", import.meta.url).pathname,
      path,
      options.driver.name,
      String(options.maxConcurrent),
      String(clockAt),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("The e2e worker exited before it was ready");
    seen += value;
  }
  return {
    async stop() {
      await child.stdin.close();
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await child.status;
      clearTimeout(timer);
      reader.cancel().catch(() => {});
    },
  };
}

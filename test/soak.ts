/**
 * Soak: thousands of charms on a short interval in one service process (a
 * KV file, the native queue by default), for a few minutes. Most charms
 * succeed at once, some fail on purpose, some are slow (within the timeout).
 * At the end:
 *
 * - memory is flat: the RSS at the end is within {@linkcode RSS_GROWTH} of
 *   the RSS after warm-up, both after a full GC (RSS is printed at start,
 *   every 15 s and at end);
 * - the log holds no warning or error other than the injected failures;
 * - every due run is accounted for: each charm has a final run record for
 *   every slot of the window (succeeded, or failed for the failing ones), no
 *   run is left open and no lease held, and the counters agree (service
 *   totals equal the sums of the charms' states and the final run records;
 *   counter cells equal their successes; failing charms' cells untouched).
 *
 * Not a `_test.ts` file: `deno task soak` runs it (and CI, after the tests).
 * Settings, by environment:
 *
 * | Variable                | Default  | Meaning                                      |
 * | ----------------------- | -------- | -------------------------------------------- |
 * | `SOAK_SECONDS`          | 120      | window, rounded up to whole minutes          |
 * | `SOAK_CHARMS`           | 5000     | charms                                       |
 * | `SOAK_INTERVAL_SECONDS` | 30       | `--interval`                                 |
 * | `SOAK_QUEUE`            | `native` | `native` or `kv` (the job-table driver)      |
 *
 * The default interval is what one process sustains on a 2-core machine
 * with the native queue: it delivers ~200-300 messages/s once a minute's
 * fan-out has queued tens of thousands of delayed ones, so 5,000 charms
 * every 5 s (1,000 runs/s) fall behind. `SOAK_QUEUE=kv` sustains about
 * 600 runs/s here.
 *
 * The service clock runs at real speed but is shifted to start just after a
 * minute boundary, and this script calls `onCron()` at each minute of that
 * clock (as `cron.ts` does on the real one), so the window is whole minutes.
 * Exits 1 with a `soak: FAILED` line (after one line per problem).
 *
 * @module
 */
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { z } from "zod";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import { type AnyRecipe, defineRecipe } from "../charm/recipe.ts";
import { loadConfig } from "../config/config.ts";
import { offsetMs, slotsInWindow, tickOf } from "../handlers/fanout.ts";
import type { RunRecord } from "../handlers/run_charm.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import { memorySink } from "../lib/log.ts";
import { kvQueue } from "../queue/kv_queue.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { RECIPES } from "../recipes/mod.ts";
import { createService } from "../service/service.ts";
import { createCharm, registerCharm } from "../store/charms.ts";
import { cellKey } from "../store/keys.ts";
import { LOCAL_MAX_CHECKS } from "../store/kv_util.ts";
import { readServiceState } from "../store/service_state.ts";
import { SPACE } from "./test_deps.ts";

/** End RSS may be at most this multiple of the RSS after warm-up. */
const RSS_GROWTH = 1.5;
/** RSS is printed this often, ms. */
const REPORT_EVERY_MS = 15_000;
/** Warm-up before the RSS baseline, ms (at most a quarter of the window). */
const WARM_UP_MS = 30_000;
/** Longest wait for the window's last runs once it ends, ms. */
const DRAIN_MS = 120_000;
const TIMEOUT_MS = 3_000;
/** One charm in this many fails on purpose; about as many are slow. */
const FAILING_EVERY = 25;
const SLOW_EVERY = 20;
const INJECTED = "injected failure";

const failRecipe = defineRecipe({
  name: "soak-fail",
  description: "writes its result, then fails",
  argumentSchema: z.object({}).strict(),
  resultSchema: z.object({ touched: z.boolean() }),
  initialResult: () => ({ touched: false }),
  handlers: {
    bgUpdater(ctx) {
      ctx.result.set({ touched: true });
      return Promise.reject(new Error(INJECTED));
    },
  },
});

const slowRecipe = defineRecipe({
  name: "soak-slow",
  description: "takes argument.ms, honouring its signal",
  argumentSchema: z.object({ ms: z.number().int().min(0) }).strict(),
  resultSchema: z.object({ runs: z.number().int() }),
  initialResult: () => ({ runs: 0 }),
  handlers: {
    async bgUpdater(ctx) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, ctx.argument.get().ms);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(ctx.signal.reason);
        }, { once: true });
      });
      ctx.result.set({ runs: ctx.result.get().runs + 1 });
    },
  },
});

type Kind = "counter" | "fail" | "slow";

interface SoakCharm {
  ref: CharmRef;
  kind: Kind;
  recipe: AnyRecipe;
  argument: unknown;
}

interface Settings {
  seconds: number;
  charms: number;
  intervalMs: number;
  queue: "native" | "kv";
}

/** Runs the soak; returns the problems found (none: it passed). */
async function soak(settings: Settings): Promise<string[]> {
  const minutes = Math.max(1, Math.ceil(settings.seconds / 60));
  const startRss = _rss();
  console.log(
    `soak: ${settings.charms} charms every ${settings.intervalMs / 1000} s ` +
      `for ${minutes} min, ${settings.queue} queue; RSS at start ${
        _mb(startRss)
      }`,
  );

  // Warnings and errors only, sorted every second so the sink stays small.
  const sink = memorySink();
  const log = { injected: 0, unexpected: [] as LogRecord[] };
  const sortLog = () => {
    for (const record of sink.records.splice(0)) {
      if (String(record.properties.error ?? "").includes(INJECTED)) {
        log.injected++;
      } else log.unexpected.push(record);
    }
  };
  await configure({
    reset: true,
    sinks: { memory: sink },
    loggers: [
      { category: ["bcs"], lowestLevel: "warning", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });

  const dir = await Deno.makeTempDir({ prefix: "bcs-soak-" });
  const kvPath = `${dir}/kv.sqlite3`;
  const kv = await Deno.openKv(kvPath);
  let shiftMs = 0;
  const now = () => Date.now() + shiftMs;
  const config = loadConfig([
    "--integration=manual",
    `--interval=${settings.intervalMs / 1000}`,
    "--max-concurrent=50",
    "--max-retries=1",
    "--failures=1000000",
    "--log-interval=15",
  ], {
    KV_PATH: kvPath,
    CHARM_EXECUTION_TIMEOUT_MS: String(TIMEOUT_MS),
    RETRY_BASE_DELAY_MS: "200",
    RETRY_MAX_DELAY_MS: "400",
  }, INTEGRATIONS.map((i) => i.id));
  const service = createService(config, {
    kv,
    queue: settings.queue === "kv"
      ? kvQueue(kv, {
        owner: "soak",
        leaseMs: TIMEOUT_MS + 7_000,
        maxInFlight: config.maxConcurrentJobs,
        pollMs: 100,
        maxChecks: LOCAL_MAX_CHECKS,
      })
      : nativeQueue(kv),
    worker: settings.queue === "kv" ? "loop" : "listener",
    allIntegrations: INTEGRATIONS,
    recipes: new Map([
      ...RECIPES,
      [failRecipe.name, failRecipe],
      [slowRecipe.name, slowRecipe],
    ]),
    env: {},
    now,
  });
  const sortTimer = setInterval(sortLog, 1_000);
  let reportTimer: ReturnType<typeof setInterval> | undefined;
  try {
    const created = Date.now();
    const charms = await _createCharms(kv, settings.charms, now());
    console.log(
      `soak: created ${charms.length} charms (${
        charms.filter((c) => c.kind === "fail").length
      } failing, ${charms.filter((c) => c.kind === "slow").length} slow) ` +
        `in ${((Date.now() - created) / 1000).toFixed(1)} s`,
    );

    // The window: whole minutes of the service clock from t0.
    const t0 = tickOf(Date.now()) + 60_000;
    shiftMs = t0 + 100 - Date.now();
    const began = Date.now();
    const report = async () => {
      const state = await readServiceState(kv);
      console.log(
        `soak: t=${Math.round((Date.now() - began) / 1000)} s RSS ${
          _mb(_rss())
        }, heap ${_mb(Deno.memoryUsage().heapUsed)}, ` +
          `${state.totalCharmsProcessed} runs (${state.totalFailures} failed), ` +
          `${service.deps.semaphore.inUse} running`,
      );
    };
    reportTimer = setInterval(() => void report(), REPORT_EVERY_MS);
    await service.start();

    // The cron: a tick at each minute of the service clock.
    const warmUpMs = Math.min(WARM_UP_MS, (minutes * 60_000) / 4);
    let warmRss: number | null = null;
    for (let minute = 1; minute <= minutes; minute++) {
      const tickAt = t0 + minute * 60_000;
      if (warmRss === null && t0 + warmUpMs <= tickAt) {
        await _sleepUntil(now, t0 + warmUpMs);
        warmRss = _settledRss();
      }
      await _sleepUntil(now, tickAt);
      if (minute < minutes) await service.onCron();
    }

    // Every slot of the window, for every charm, must reach an outcome.
    const slots: number[] = [];
    for (let minute = 0; minute < minutes; minute++) {
      const tick = t0 + minute * 60_000;
      const from = minute === 0 ? t0 + 100 : tick;
      slots.push(...slotsInWindow(tick, from, settings.intervalMs));
    }
    const expected = charms.length * slots.length;
    const drainUntil = Date.now() + DRAIN_MS;
    let finished = 0;
    while (Date.now() < drainUntil) {
      finished = (await readServiceState(kv)).totalCharmsProcessed;
      if (finished >= expected) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const endRss = _settledRss();
    clearInterval(reportTimer);
    reportTimer = undefined;
    await service.shutdown();
    const elapsedS = Math.round((Date.now() - began) / 1000);
    console.log(
      `soak: window of ${minutes * 60} s done after ${elapsedS} s: ` +
        `${finished} of ${expected} runs recorded`,
    );

    const problems: string[] = [];
    if (warmRss !== null && endRss > warmRss * RSS_GROWTH) {
      problems.push(
        `memory grew: RSS ${_mb(warmRss)} after warm-up, ${
          _mb(endRss)
        } at end (limit ${RSS_GROWTH}×)`,
      );
    }
    problems.push(
      ...await _account(
        kv,
        charms,
        slots,
        (ref) => `offset ${offsetMs(ref, "manual", settings.intervalMs)} ms`,
      ),
    );
    sortLog();
    if (log.unexpected.length > 0) {
      const shown = log.unexpected.slice(0, 5).map((r) =>
        `[${r.level}] ${r.category.join(".")}: ${_render(r)}`
      );
      problems.push(
        `${log.unexpected.length} unexpected warning/error log records, e.g. ${
          shown.join(" | ")
        }`,
      );
    }
    const totals = await readServiceState(kv);
    console.log(
      `soak: ${totals.totalCharmsProcessed} runs (${totals.totalSuccesses} ok, ` +
        `${totals.totalFailures} failed as injected, ${log.injected} ` +
        `injected-failure log records); RSS start ${_mb(startRss)}, ` +
        `after warm-up ${warmRss === null ? "?" : _mb(warmRss)}, ` +
        `end ${_mb(endRss)}; ${elapsedS} s`,
    );
    return problems;
  } finally {
    clearInterval(sortTimer);
    if (reportTimer !== undefined) clearInterval(reportTimer);
    await service.shutdown();
    kv.close();
    await reset();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Creates and registers the charms, 50 at a time. */
async function _createCharms(
  kv: Deno.Kv,
  count: number,
  nowMs: number,
): Promise<SoakCharm[]> {
  const charms: SoakCharm[] = [];
  for (let i = 0; i < count; i++) {
    const ref = { space: SPACE, charmId: `soak-${i}` };
    if (i % FAILING_EVERY === 0) {
      charms.push({ ref, kind: "fail", recipe: failRecipe, argument: {} });
    } else if (i % SLOW_EVERY === 1) {
      // 100-499 ms, well within the timeout.
      const argument = { ms: 100 + (i * 37) % 400 };
      charms.push({ ref, kind: "slow", recipe: slowRecipe, argument });
    } else {
      const recipe = RECIPES.get("counter")!;
      charms.push({ ref, kind: "counter", recipe, argument: {} });
    }
  }
  for (let i = 0; i < charms.length; i += 50) {
    await Promise.all(
      charms.slice(i, i + 50).map(async ({ ref, recipe, argument }) => {
        await createCharm(kv, ref, recipe, argument, nowMs);
        await registerCharm(kv, "manual", ref, nowMs);
      }),
    );
  }
  return charms;
}

/** Checks every due run is on record and the counters agree, from KV. */
async function _account(
  kv: Deno.Kv,
  charms: SoakCharm[],
  slots: number[],
  describe: (ref: CharmRef) => string,
): Promise<string[]> {
  const problems: string[] = [];
  const records = new Map<string, RunRecord>();
  for await (const entry of kv.list<RunRecord>({ prefix: ["runs"] })) {
    records.set(`${String(entry.key[2])}@${String(entry.key[3])}`, entry.value);
  }
  const states = new Map<string, CharmState>();
  for await (
    const entry of kv.list<CharmState>({ prefix: ["charm_states"] })
  ) {
    states.set(String(entry.key[2]), entry.value);
  }

  let missing = 0;
  let wrong = 0;
  const examples: string[] = [];
  for (const { ref, kind } of charms) {
    const want = kind === "fail" ? "failed" : "succeeded";
    for (const slot of slots) {
      const record = records.get(`${ref.charmId}@manual:${slot}`);
      if (record?.state === want) continue;
      if (record === undefined) missing++;
      else wrong++;
      if (examples.length < 5) {
        examples.push(
          `${ref.charmId} slot ${slot} (${describe(ref)}): ${
            record === undefined ? "no record" : record.state
          }${record?.error ? ` (${record.error})` : ""}`,
        );
      }
    }
  }
  if (missing + wrong > 0) {
    problems.push(
      `${missing} due runs without a record, ${wrong} with the wrong ` +
        `outcome, e.g. ${examples.join("; ")}`,
    );
  }
  const open =
    [...records.values()].filter((r) =>
      r.state === "running" || r.state === "retrying"
    ).length;
  if (open > 0) problems.push(`${open} run records not final`);
  let leases = 0;
  for await (const _ of kv.list({ prefix: ["charm_leases"] })) leases++;
  if (leases > 0) problems.push(`${leases} leases left behind`);

  const sum = { executions: 0, successes: 0, failures: 0 };
  let badCells = 0;
  for (const { ref, kind } of charms) {
    const state = states.get(ref.charmId);
    if (state === undefined) {
      problems.push(`${ref.charmId} has no state`);
      continue;
    }
    sum.executions += state.totalExecutions;
    sum.successes += state.totalSuccesses;
    sum.failures += state.totalFailures;
    const cell = (await kv.get(cellKey(ref, "result"))).value;
    const ok = kind === "counter"
      ? (cell as { count: number }).count === state.totalSuccesses
      : kind === "slow"
      ? (cell as { runs: number }).runs === state.totalSuccesses
      : (cell as { touched: boolean }).touched === false;
    if (!ok) badCells++;
  }
  if (badCells > 0) {
    problems.push(`${badCells} charms' result cells disagree with their state`);
  }

  const totals = await readServiceState(kv);
  const finals =
    [...records.values()].filter((r) =>
      r.state === "succeeded" || r.state === "failed"
    ).length;
  const pairs: [string, number, number][] = [
    [
      "totalCharmsProcessed vs Σ totalExecutions",
      totals.totalCharmsProcessed,
      sum.executions,
    ],
    [
      "totalCharmsProcessed vs final run records",
      totals.totalCharmsProcessed,
      finals,
    ],
    [
      "totalSuccesses vs Σ totalSuccesses",
      totals.totalSuccesses,
      sum.successes,
    ],
    ["totalFailures vs Σ totalFailures", totals.totalFailures, sum.failures],
    [
      "totalFailures vs injected failing slots",
      totals.totalFailures,
      charms.filter((c) => c.kind === "fail").length * slots.length,
    ],
  ];
  for (const [what, a, b] of pairs) {
    if (a !== b) problems.push(`${what}: ${a} ≠ ${b}`);
  }
  return problems;
}

/** Waits until the service clock reaches `at` (the cron's schedule). */
async function _sleepUntil(now: () => number, at: number): Promise<void> {
  const ms = at - now();
  if (ms > 0) await new Promise((r) => setTimeout(r, ms));
}

function _rss(): number {
  return Deno.memoryUsage().rss;
}

/**
 * RSS after a full garbage collection when `--v8-flags=--expose-gc` is set
 * (as `deno task soak` does), so the two figures compared hold live memory,
 * not garbage that happens not to be collected yet.
 */
function _settledRss(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return _rss();
}

function _mb(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

function _render(record: LogRecord): string {
  return record.message.map((part) =>
    typeof part === "string" ? part : JSON.stringify(part)
  ).join("");
}

function _intEnv(name: string, fallback: number): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`soak: ${name} must be a positive integer, got "${raw}"`);
    Deno.exit(2);
  }
  return value;
}

if (import.meta.main) {
  const queue = Deno.env.get("SOAK_QUEUE") || "native";
  if (queue !== "native" && queue !== "kv") {
    console.error(`soak: SOAK_QUEUE must be native or kv, got "${queue}"`);
    Deno.exit(2);
  }
  const problems = await soak({
    seconds: _intEnv("SOAK_SECONDS", 120),
    charms: _intEnv("SOAK_CHARMS", 5_000),
    intervalMs: _intEnv("SOAK_INTERVAL_SECONDS", 30) * 1_000,
    queue,
  });
  for (const problem of problems) console.error(`soak: ${problem}`);
  if (problems.length > 0) {
    console.error(`soak: FAILED (${problems.length} problem(s))`);
    Deno.exit(1);
  }
  console.log("soak: ok");
  Deno.exit(0);
}

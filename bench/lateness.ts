/**
 * Schedule lateness: how long after its scheduled time (slot + the charm's
 * offset, `handlers/fanout.ts` `offsetMs`) each run starts, in real time.
 *
 * The case is 1,000 charms on a 60 s interval for two cycles: two
 * minutes of wall time. By default this runs the same 1,000 charms on a
 * shorter interval (10 s), which packs the same runs into a sixth of the
 * time: six times the rate, so a lateness met here is met at 60 s. Each
 * cycle is what a cron tick does at 60 s: one fan-out at the start of the
 * slot enqueueing that slot's runs, spread over the interval by offset. (At
 * 10 s a real cron tick would enqueue six slots at once; to keep one fan-out
 * per cycle, the clock is moved before each cycle to the start of the last
 * slot of a minute, and the fan-out covers that one slot.)
 *
 * Times are real: the clock is shifted, never scaled, and a cycle starts
 * only after the previous one's runs all started.
 *
 * @module
 */
import { offsetMs, TICK_MS, tickOf } from "../handlers/fanout.ts";
import { dispatch } from "../handlers/dispatch.ts";
import { tick } from "../handlers/tick.ts";
import { benchDeps, serviceKv, ShiftedClock } from "./bench_deps.ts";
import { type KvKind, openBenchKv } from "./bench_kv.ts";
import type { DriverFactory } from "./drivers.ts";
import { benchRecipes, type RunStamp, stampRecipe } from "./recipes.ts";
import { benchCharmRef, seedCharms } from "./seed.ts";
import { percentile } from "./stats.ts";

/** Options for {@linkcode lateness}. */
export interface LatenessOptions {
  kind: KvKind;
  driver: DriverFactory;
  charms: number;
  /** A divisor of 60 000. */
  intervalMs: number;
  cycles: number;
  maxConcurrent: number;
  /** Called after each cycle. */
  onCycle?: (cycle: number, result: CycleLateness) => void;
}

/** One cycle's lateness. */
export interface CycleLateness {
  runs: number;
  /** Run start − scheduled time, ms. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  minMs: number;
  /** Run starts per tenth of the interval (from the slot start). */
  perTenth: number[];
  /** Runs that started more than one interval after the slot. */
  afterInterval: number;
}

/** Runs the cycles on a fresh KV; one result per cycle. */
export async function lateness(
  options: LatenessOptions,
): Promise<CycleLateness[]> {
  if (TICK_MS % options.intervalMs !== 0) {
    throw new RangeError(
      `Lateness interval ${options.intervalMs} ms must divide ${TICK_MS} ms`,
    );
  }
  await using store = await openBenchKv(options.kind);
  const stamps: RunStamp[] = [];
  const recipe = stampRecipe(stamps);
  await seedCharms(store.kv, { recipe, count: options.charms });
  const offsets = new Map<string, number>();
  for (let i = 0; i < options.charms; i++) {
    const ref = benchCharmRef(i);
    offsets.set(ref.charmId, offsetMs(ref, "manual", options.intervalMs));
  }

  const clock = new ShiftedClock();
  const kv = serviceKv(store.kv);
  const { queue, stop } = options.driver.create(
    kv,
    options.maxConcurrent,
    `bench-${crypto.randomUUID()}`,
  );
  const deps = await benchDeps({
    kv,
    queue,
    recipes: benchRecipes(recipe),
    maxConcurrent: options.maxConcurrent,
    now: clock.now,
    policy: { intervalMs: options.intervalMs },
  });
  const listening = queue.listen((raw, delivery) =>
    dispatch(deps, raw, delivery).then(() => {})
  );

  const results: CycleLateness[] = [];
  try {
    for (let cycle = 0; cycle < options.cycles; cycle++) {
      const slot = tickOf(clock.now()) + 2 * TICK_MS - options.intervalMs;
      clock.set(slot);
      const from = stamps.length;
      const [fanned] = await tick(deps, { mode: "now" });
      if (fanned?.enqueued !== options.charms) {
        throw new Error(
          `Lateness fan-out enqueued ${fanned?.enqueued}, expected ${options.charms}`,
        );
      }
      const deadline = performance.now() + options.intervalMs + 30_000;
      while (stamps.length < from + options.charms) {
        if (performance.now() > deadline) {
          throw new Error(
            `Lateness cycle ${cycle + 1}: ${
              stamps.length - from
            } of ${options.charms} runs started in time`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const result = _cycleLateness(
        stamps.slice(from).filter((s) => s.slot === slot),
        offsets,
        slot,
        options.intervalMs,
      );
      results.push(result);
      options.onCycle?.(cycle, result);
    }
  } finally {
    stop();
    store.kv.close();
    await listening.catch(() => {});
  }
  return results;
}

function _cycleLateness(
  stamps: RunStamp[],
  offsets: Map<string, number>,
  slot: number,
  intervalMs: number,
): CycleLateness {
  const late = stamps.map((s) =>
    s.startedAt - (slot + (offsets.get(s.charmId) ?? 0))
  ).sort((a, b) => a - b);
  const perTenth = Array.from({ length: 10 }, () => 0);
  let afterInterval = 0;
  for (const s of stamps) {
    const tenth = Math.floor((s.startedAt - slot) / (intervalMs / 10));
    if (tenth >= 10) afterInterval++;
    else perTenth[Math.max(0, tenth)]!++;
  }
  return {
    runs: stamps.length,
    p50Ms: percentile(late, 50),
    p99Ms: percentile(late, 99),
    maxMs: late.at(-1) ?? NaN,
    minMs: late[0] ?? NaN,
    perTenth,
    afterInterval,
  };
}

/**
 * Service dependencies for the benchmarks: the `ServiceDeps` the tests build
 * (`test/test_deps.ts`, kept in step with `service/deps.ts` by its owners),
 * over the KV and queue driver the benchmark picks, with only the `manual`
 * integration enabled, no cell sealing and no webhook signer (the bench
 * recipes have neither), and logging left unconfigured (no sink).
 *
 * @module
 */
import type { AnyRecipe } from "../charm/recipe.ts";
import type { DidKey } from "../charm/did.ts";
import { Semaphore } from "../lib/semaphore.ts";
import type { QueueDriver } from "../queue/queue.ts";
import type { RunPolicy, ServiceDeps } from "../service/deps.ts";
import { withBusyRetry } from "../store/busy_retry.ts";
import { makeTestDeps, SPACE } from "../test/test_deps.ts";
import { DEFAULTS } from "../config/config.ts";

/** The space every bench charm lives in (the tests' valid did:key). */
export const BENCH_SPACE: DidKey = SPACE;

/** The service's default policy. */
export const BENCH_POLICY: RunPolicy = {
  intervalMs: DEFAULTS.intervalMs,
  maxConsecutiveFailures: DEFAULTS.maxConsecutiveFailures,
  maxRetries: DEFAULTS.maxRetries,
  charmExecutionTimeoutMs: DEFAULTS.charmExecutionTimeoutMs,
  retryBaseDelayMs: DEFAULTS.retryBaseDelayMs,
  retryMaxDelayMs: DEFAULTS.retryMaxDelayMs,
};

/**
 * The KV as `main.ts` hands it to the service: wrapped to retry SQLite's
 * "database is locked" (several processes on one file).
 */
export function serviceKv(kv: Deno.Kv): Deno.Kv {
  return withBusyRetry(kv);
}

/** What {@linkcode benchDeps} needs. */
export interface BenchDepsOptions {
  kv: Deno.Kv;
  queue: QueueDriver;
  recipes: ReadonlyMap<string, AnyRecipe>;
  /** Runs at once in this process (`--max-concurrent`). */
  maxConcurrent: number;
  now?: () => number;
  policy?: Partial<RunPolicy>;
}

/** Builds `ServiceDeps` with the `manual` integration enabled. */
export async function benchDeps(
  options: BenchDepsOptions,
): Promise<ServiceDeps> {
  return await makeTestDeps({
    kv: options.kv,
    queue: options.queue,
    policy: { ...BENCH_POLICY, ...options.policy },
    integrationIds: ["manual"],
    recipes: options.recipes,
    semaphore: new Semaphore(options.maxConcurrent),
    ownerId: `bench-${crypto.randomUUID()}`,
    now: options.now ?? Date.now,
    random: Math.random,
    secrets: null,
    signer: null,
  });
}

/**
 * A wall clock that can be moved forward: `now()` is `Date.now()` plus an
 * offset, so durations measured with it are real while the benchmark picks
 * where in the minute (and so in the schedule) it stands.
 */
export class ShiftedClock {
  #shiftMs = 0;

  /** The shifted time, epoch ms. */
  now = (): number => Date.now() + this.#shiftMs;

  /** Moves the clock so that `now()` reads `targetMs` at this instant. */
  set(targetMs: number): void {
    const shift = targetMs - Date.now();
    if (shift < this.#shiftMs) {
      throw new RangeError(
        `Cannot move the bench clock back to ${
          new Date(targetMs).toISOString()
        }`,
      );
    }
    this.#shiftMs = shift;
  }
}

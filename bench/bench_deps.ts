/**
 * Service dependencies for the benchmarks: the same `ServiceDeps` that
 * `service/service.ts` builds, over a KV and queue driver the benchmark picks,
 * with only the `manual` integration enabled and logging left unconfigured
 * (no sink, as in the tests).
 *
 * @module
 */
import type { AnyRecipe } from "../charm/recipe.ts";
import type { DidKey } from "../charm/did.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import { Semaphore } from "../lib/semaphore.ts";
import type { QueueDriver } from "../queue/queue.ts";
import type { RunPolicy, ServiceDeps } from "../service/deps.ts";

/** The space every bench charm lives in (a valid Ed25519 did:key). */
export const BENCH_SPACE: DidKey =
  "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY";

/** The service's default policy (see `config/config.ts`). */
export const BENCH_POLICY: RunPolicy = {
  intervalMs: 60_000,
  maxConsecutiveFailures: 5,
  maxRetries: 3,
  charmExecutionTimeoutMs: 30_000,
  retryBaseDelayMs: 1_000,
  retryMaxDelayMs: 60_000,
};

/** What {@linkcode benchDeps} needs. */
export interface BenchDepsOptions {
  kv: Deno.Kv;
  queue: QueueDriver;
  recipes: ReadonlyMap<string, AnyRecipe>;
  /** Runs at once in this process (`--max-concurrent`). */
  maxConcurrent: number;
  now?: () => number;
  policy?: Partial<RunPolicy>;
  signal?: AbortSignal;
}

/** Builds `ServiceDeps` with the `manual` integration enabled. */
export function benchDeps(options: BenchDepsOptions): ServiceDeps {
  const all = new Map(INTEGRATIONS.map((i) => [i.id, i]));
  const manual = all.get("manual");
  if (manual === undefined) {
    throw new Error("Cannot build bench deps: no manual integration");
  }
  return {
    kv: options.kv,
    queue: options.queue,
    policy: { ...BENCH_POLICY, ...options.policy },
    integrations: new Map([["manual", manual]]),
    allIntegrations: all,
    recipes: options.recipes,
    semaphore: new Semaphore(options.maxConcurrent),
    ownerId: `bench-${crypto.randomUUID()}`,
    now: options.now ?? Date.now,
    random: Math.random,
    fetch: globalThis.fetch,
    timers: {
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    },
    env: {},
    shutdownSignal: options.signal ?? new AbortController().signal,
    // A long-running process: the queue is drained by its listener.
    drainBudgetMs: null,
  };
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
        `Cannot move the bench clock back to ${new Date(targetMs).toISOString()}`,
      );
    }
    this.#shiftMs = shift;
  }
}

/**
 * Queue drivers the benchmark runs the service on. `native` is
 * `queue/native_queue.ts`; `kv` is the job-table driver of
 * `queue/kv_queue.ts`, built the way the service builds it
 * (`queue/select_driver.ts` `createQueue`). Both are loaded at run time, so
 * the benchmark still runs, and says so, while the `kv` driver is missing.
 *
 * @module
 */
import type { QueueDriver } from "../queue/queue.ts";
import { BENCH_POLICY } from "./bench_deps.ts";

/** Builds a driver over a KV. */
export interface DriverFactory {
  name: string;
  /**
   * The driver over `kv`, as a service with `maxConcurrent` runs at once
   * would build it, and how to stop it (besides closing KV).
   */
  create(
    kv: Deno.Kv,
    maxConcurrent: number,
    owner: string,
  ): { queue: QueueDriver; stop(): void };
}

/** Why a driver could not be loaded, for the table and results. */
export interface MissingDriver {
  name: string;
  reason: string;
}

/** Loads the native driver. */
export async function loadNativeDriver(): Promise<DriverFactory> {
  const { nativeQueue } = await import("../queue/native_queue.ts");
  return {
    name: "native",
    create: (kv) => ({ queue: nativeQueue(kv), stop() {} }),
  };
}

/**
 * Loads the `kv` driver: `createQueue` from `queue/select_driver.ts` when it
 * has one (what `main.ts` calls), else `kvQueue` from `queue/kv_queue.ts`
 * with the same options. Returns why not when neither exists yet.
 */
export async function loadKvDriver(): Promise<DriverFactory | MissingDriver> {
  const kvUrl = new URL("../queue/kv_queue.ts", import.meta.url);
  if (!await _exists(kvUrl)) {
    return { name: "kv", reason: "not built yet (no queue/kv_queue.ts)" };
  }
  try {
    const select = await _tryImport(
      new URL("../queue/select_driver.ts", import.meta.url),
    );
    const config = await _tryImport(
      new URL("../config/config.ts", import.meta.url),
    );
    const defaults = config?.DEFAULTS as Record<string, unknown> | undefined;
    const pollMs = typeof defaults?.queuePollMs === "number"
      ? defaults.queuePollMs
      : 1_000;
    if (typeof select?.createQueue === "function") {
      const createQueue = select.createQueue as (
        kv: Deno.Kv,
        choice: unknown,
        config: unknown,
        owner: string,
      ) => QueueDriver;
      return _factory((kv, maxConcurrent, owner) =>
        createQueue(
          kv,
          { driver: "kv", worker: "loop", reason: "benchmark" },
          {
            maxConcurrentJobs: maxConcurrent,
            charmExecutionTimeoutMs: BENCH_POLICY.charmExecutionTimeoutMs,
            queuePollMs: pollMs,
          },
          owner,
        )
      );
    }
    const module = await import(kvUrl.href);
    if (typeof module.kvQueue !== "function") {
      return { name: "kv", reason: "queue/kv_queue.ts exports no kvQueue" };
    }
    const kvQueue = module.kvQueue as (
      kv: Deno.Kv,
      options: unknown,
    ) => QueueDriver;
    return _factory((kv, maxConcurrent, owner) =>
      kvQueue(kv, {
        owner,
        leaseMs: BENCH_POLICY.charmExecutionTimeoutMs + 7_000,
        maxInFlight: maxConcurrent,
        pollMs,
      })
    );
  } catch (error) {
    return {
      name: "kv",
      reason: `queue/kv_queue.ts does not load: ${(error as Error).message}`,
    };
  }
}

/** Whether a load result is a usable driver. */
export function isDriver(
  driver: DriverFactory | MissingDriver,
): driver is DriverFactory {
  return "create" in driver;
}

function _factory(
  build: (kv: Deno.Kv, maxConcurrent: number, owner: string) => QueueDriver,
): DriverFactory {
  return {
    name: "kv",
    create(kv, maxConcurrent, owner) {
      const queue = build(kv, maxConcurrent, owner);
      if (
        typeof queue?.enqueue !== "function" ||
        typeof queue?.listen !== "function"
      ) {
        throw new TypeError("The kv driver factory returned no QueueDriver");
      }
      return { queue, stop: () => queue.stop?.() };
    },
  };
}

async function _exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch {
    return false;
  }
}

async function _tryImport(
  url: URL,
): Promise<Record<string, unknown> | null> {
  if (!await _exists(url)) return null;
  return await import(url.href);
}

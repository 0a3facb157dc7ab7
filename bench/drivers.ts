/**
 * Queue drivers the benchmark runs the service on, built the way `main.ts`
 * builds them (`queue/select_driver.ts` `createQueue`, default config).
 *
 * @module
 */
import { DEFAULTS } from "../config/config.ts";
import type { QueueDriver } from "../queue/queue.ts";
import { createQueue } from "../queue/select_driver.ts";

/** Builds a driver over a KV. */
export interface DriverFactory {
  name: "native" | "kv";
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

function _driver(name: "native" | "kv"): DriverFactory {
  return {
    name,
    create(kv, maxConcurrent, owner) {
      const queue = createQueue(
        kv,
        {
          driver: name,
          worker: name === "native" ? "listener" : "loop",
          reason: "benchmark",
          localKv: true,
        },
        {
          maxConcurrentJobs: maxConcurrent,
          charmExecutionTimeoutMs: DEFAULTS.charmExecutionTimeoutMs,
          queuePollMs: DEFAULTS.queuePollMs,
        },
        owner,
      );
      return { queue, stop: () => queue.stop?.() };
    },
  };
}

/** The native Deno KV queue. */
export const NATIVE_DRIVER: DriverFactory = _driver("native");

/** The job-table driver of `queue/kv_queue.ts`. */
export const KV_DRIVER: DriverFactory = _driver("kv");

/** A driver by name, for the command lines of `profile.ts` and workers. */
export function driverNamed(name: string): DriverFactory {
  if (name === "native") return NATIVE_DRIVER;
  if (name === "kv") return KV_DRIVER;
  throw new TypeError(`"${name}" is not a driver; use native or kv`);
}

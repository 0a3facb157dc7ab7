/**
 * Chooses the queue driver and worker mode for this platform.
 *
 * The native queue exists with local SQLite KV; the new Deno Deploy has KV and
 * cron but no queues, and remote KV (KV Connect, self-hosted `denokv`) rejects
 * enqueues. Where a process may stop when idle (Deploy), the `kv` driver is
 * drained inside each cron tick instead of by a long-running loop.
 *
 * @module
 */
import type { Config } from "../config/config.ts";
import { LEASE_MARGIN_MS } from "../handlers/run_charm.ts";
import { LOCAL_MAX_CHECKS, REMOTE_MAX_CHECKS } from "../store/kv_util.ts";
import { kvQueue, MAX_BUFFER_WAIT_MS } from "./kv_queue.ts";
import { nativeQueue } from "./native_queue.ts";
import type { QueueDriver } from "./queue.ts";

/** The resolved choice, with why, for the startup log. */
export interface QueueChoice {
  driver: "native" | "kv";
  worker: "listener" | "loop" | "cron";
  reason: string;
  /**
   * The KV is the embedded SQLite store (not Deploy's, not KV Connect): it
   * takes 100 checks per atomic operation, so the `kv` driver claims and
   * commits more jobs at once. Elsewhere it keeps to KV Connect's 10.
   */
  localKv: boolean;
}

/** Resolves `auto` settings against the platform. */
export function chooseQueue(
  config: Pick<Config, "queueDriver" | "queueWorker" | "kvPath">,
  env: Record<string, string | undefined>,
): QueueChoice {
  const onDeploy = Boolean(env.DENO_DEPLOYMENT_ID);
  const remoteKv = config.kvPath !== null &&
    /^https?:\/\//.test(config.kvPath);
  let driver: "native" | "kv";
  let reason: string;
  if (config.queueDriver !== "auto") {
    driver = config.queueDriver;
    reason = "QUEUE_DRIVER";
  } else if (config.queueWorker === "cron") {
    // Only the kv driver can be drained by cron ticks.
    driver = "kv";
    reason = "QUEUE_WORKER=cron";
  } else if (onDeploy) {
    driver = "kv";
    reason = "Deno Deploy has no KV queues";
  } else if (remoteKv) {
    driver = "kv";
    reason = "remote KV (KV Connect) has no queues";
  } else {
    driver = "native";
    reason = "local KV has the native queue";
  }
  const localKv = !onDeploy && !remoteKv;
  if (driver === "native") {
    return { driver, worker: "listener", reason, localKv };
  }
  const worker = config.queueWorker === "auto"
    ? (onDeploy ? "cron" : "loop")
    : config.queueWorker;
  return { driver, worker, reason, localKv };
}

/** Builds the chosen driver. */
export function createQueue(
  kv: Deno.Kv,
  choice: QueueChoice,
  config: Pick<
    Config,
    "maxConcurrentJobs" | "charmExecutionTimeoutMs" | "queuePollMs"
  >,
  owner: string,
): QueueDriver {
  if (choice.driver === "native") return nativeQueue(kv);
  return kvQueue(kv, {
    owner,
    // A claimed job waits at most MAX_BUFFER_WAIT_MS for a slot, then runs
    // (its timeout) and commits (the run lease's margin).
    leaseMs: config.charmExecutionTimeoutMs + LEASE_MARGIN_MS +
      MAX_BUFFER_WAIT_MS,
    maxInFlight: config.maxConcurrentJobs,
    maxChecks: choice.localKv ? LOCAL_MAX_CHECKS : REMOTE_MAX_CHECKS,
    // A run's timeout and the margin its commit gets.
    runMs: config.charmExecutionTimeoutMs + LEASE_MARGIN_MS,
    pollMs: config.queuePollMs,
  });
}

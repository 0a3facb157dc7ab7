/**
 * The service's lifecycle: build the dependencies, seed what the flags ask
 * for, listen to the queue, log status on an interval, and shut down
 * gracefully (stop taking work, let running charms finish up to a bound).
 *
 * @module
 */
import { type CharmRef, formatCharmRef } from "../charm/charm.ts";
import type { DidKey } from "../charm/did.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import type { Config } from "../config/config.ts";
import { dispatch, listenOptions } from "../handlers/dispatch.ts";
import { resumeInterruptedFanouts } from "../handlers/fanout.ts";
import { tick } from "../handlers/tick.ts";
import { isLocalDevelopment } from "../identity/load_identity.ts";
import type { Integration } from "../integrations/integration.ts";
import { ConflictError, NotFoundError, toError } from "../lib/errors.ts";
import { logger } from "../lib/log.ts";
import { type EgressPolicy, egressPolicy } from "../lib/net_guard.ts";
import type { SecretKeys } from "../lib/secrets.ts";
import { observeDisabledCharms } from "../lib/telemetry.ts";
import { Semaphore } from "../lib/semaphore.ts";
import type { Signer } from "../lib/webhook_signature.ts";
import type { Delivery, QueueDriver } from "../queue/queue.ts";
import { createCharm, listCharms, registerCharm } from "../store/charms.ts";
import { pruneRunCounts } from "../store/recent_runs.ts";
import { sweepUndelivered } from "../store/dead_letters.ts";
import {
  readServiceState,
  updateServiceTimes,
} from "../store/service_state.ts";
import type { ServiceDeps, Timers } from "./deps.ts";

/** The demo space: the "common user" identity's did:key. */
export const DEMO_SPACE: DidKey =
  "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY";

/** The demo charms `--demo` creates. */
export const DEMO_CHARMS: readonly CharmRef[] = [
  "demo-counter-1",
  "demo-counter-2",
  "demo-counter-3",
]
  .map((charmId) => ({ space: DEMO_SPACE, charmId }));

/** What {@linkcode createService} needs beyond the configuration. */
export interface ServiceOptions {
  kv: Deno.Kv;
  queue: QueueDriver;
  allIntegrations: readonly Integration[];
  recipes: ReadonlyMap<string, AnyRecipe>;
  env: Record<string, string | undefined>;
  now?: () => number;
  fetch?: typeof fetch;
  timers?: Timers;
  /**
   * How queued work gets delivered: a queue listener (native), a worker loop
   * (`kv` driver, long-running process), or drains inside each cron tick and
   * fan-out request (`kv` driver on Deno Deploy). Default `listener`.
   */
  worker?: "listener" | "loop" | "cron";
  /** Names this process in leases (default: a random id). */
  ownerId?: string;
  /** Keys sealing secret cell fields (default `null`: plaintext). */
  secrets?: SecretKeys | null;
  /** The operator identity signing webhook requests (default: unsigned). */
  signer?: Signer | null;
  /**
   * Where charms' requests may go (default: restricted outside local
   * development, as `env` says, except `WEBHOOK_ALLOWED_HOSTS`).
   */
  egress?: EgressPolicy;
}

/** A running service. */
export interface Service {
  deps: ServiceDeps;
  /** Seeds, starts the queue listener, the status log, and a first fan-out. */
  start(): Promise<void>;
  /** One cron tick. */
  onCron(): Promise<void>;
  /** Stops taking work and waits (bounded) for running charms. */
  shutdown(): Promise<void>;
  /** Runs `--initialize`: lines saying what each integration did. */
  initialize(): Promise<string[]>;
}

/** Builds the service from validated configuration. */
export function createService(
  config: Config,
  options: ServiceOptions,
): Service {
  const all = new Map(options.allIntegrations.map((i) => [i.id, i]));
  const enabled = new Map(config.integrations.map((id) => [id, all.get(id)!]));
  const shutdownController = new AbortController();
  const timers: Timers = options.timers ?? {
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (id) => clearTimeout(id),
  };
  const deps: ServiceDeps = {
    kv: options.kv,
    queue: options.queue,
    policy: config,
    integrations: enabled,
    allIntegrations: all,
    recipes: options.recipes,
    semaphore: new Semaphore(config.maxConcurrentJobs),
    ownerId: options.ownerId ?? crypto.randomUUID(),
    now: options.now ?? Date.now,
    random: Math.random,
    fetch: options.fetch ?? globalThis.fetch,
    timers,
    env: options.env,
    shutdownSignal: shutdownController.signal,
    drainBudgetMs: options.worker === "cron" ? config.drainBudgetMs : null,
    secrets: options.secrets ?? null,
    egress: options.egress ?? egressPolicy({
      // Webhooks may reach private addresses in local development only.
      restricted: !isLocalDevelopment(options.env),
      allowedHosts: config.webhookAllowedHosts,
    }),
    signer: options.signer ?? null,
  };
  const worker = options.worker ?? "listener";
  const log = logger("main");
  const inFlight = new Set<Promise<unknown>>();
  let accepting = true;
  let statusTimer: ReturnType<Timers["setTimeout"]> | undefined;

  async function onMessage(raw: unknown, delivery: Delivery): Promise<void> {
    if (!accepting) {
      // Shutting down: hold the delivery without acking it. The queue keeps
      // the message and delivers it again after the restart.
      return await new Promise<void>(() => {});
    }
    const work = dispatch(deps, raw, delivery);
    inFlight.add(work);
    let outcome: unknown;
    try {
      outcome = await work;
    } catch (error) {
      // Only infrastructure errors get here; throwing makes the queue
      // redeliver the message on its backoff schedule.
      logger("queue").error(
        "Message handling failed, the queue will redeliver it: {error}",
        {
          error: toError(error).message,
        },
      );
      throw error;
    } finally {
      inFlight.delete(work);
    }
    if (outcome === "interrupted") {
      // Leave the message unacknowledged: it is delivered again after restart.
      return await new Promise<void>(() => {});
    }
  }

  function scheduleStatusLog(): void {
    statusTimer = timers.setTimeout(async () => {
      try {
        await sweepAndReport(deps);
        await logStatus(deps);
      } catch (error) {
        logger("status").error("Status log failed: {error}", {
          error: toError(error).message,
        });
      }
      if (accepting) scheduleStatusLog();
    }, config.logIntervalMs);
  }

  return {
    deps,
    async initialize() {
      const lines: string[] = [];
      for (const integration of enabled.values()) {
        lines.push(
          ...await integration.initialize({
            kv: deps.kv,
            env: deps.env,
            now: deps.now,
          }),
        );
      }
      return lines;
    },
    async start() {
      await updateServiceTimes(deps.kv, { startTime: deps.now() });
      observeDisabledCharms(async () =>
        (await readServiceState(deps.kv)).charms.disabled
      );
      if (config.demo) await seedDemo(deps, log);
      for (const ref of config.charms) {
        try {
          const { added } = await registerCharm(
            deps.kv,
            "manual",
            ref,
            deps.now(),
          );
          if (added) {
            log.info("Registered {charm} with the manual integration", {
              charm: formatCharmRef(ref),
            });
          }
        } catch (error) {
          if (!(error instanceof NotFoundError)) throw error;
          log.warn(
            "--charms names {charm}, which does not exist: create it with POST /api/charms",
            {
              charm: formatCharmRef(ref),
            },
          );
        }
      }
      await sweepAndReport(deps);
      if (worker === "cron") {
        log.info(
          "Queue: {driver} driver, drained in each cron tick and fan-out request (no listener), {max} runs at once",
          {
            driver: deps.queue.name,
            max: config.maxConcurrentJobs,
          },
        );
      } else {
        // A worker that stops (KV closed under it, a platform without
        // queues) is logged, not an unhandled rejection.
        deps.queue.listen(onMessage, listenOptions(deps)).catch((error) => {
          if (accepting) {
            log.error("Queue worker stopped: {error}", {
              error: toError(error).message,
            });
          }
        });
        log.info(
          "Queue: {driver} driver, {worker} running, {max} runs at once",
          {
            driver: deps.queue.name,
            worker: worker === "loop" ? "worker loop" : "listener",
            max: config.maxConcurrentJobs,
          },
        );
      }
      log.info(
        "Policy: each charm runs every {interval} s; a failed run is retried {retries} times; {failures} failed slots in a row disable a charm; a run times out after {timeout} s",
        {
          interval: config.intervalMs / 1000,
          retries: config.maxRetries,
          failures: config.maxConsecutiveFailures,
          timeout: config.charmExecutionTimeoutMs / 1000,
        },
      );
      scheduleStatusLog();
      await resumeInterruptedFanouts(deps).catch((error) => {
        log.error("Resuming interrupted fan-outs failed: {error}", {
          error: toError(error).message,
        });
      });
      // A first fan-out now, so charms due in the current slot run without
      // waiting for the next minute; run keys make it safe to repeat. Not
      // with the cron worker (Deno Deploy): isolates start there for every
      // cron invocation and many requests, each would fan out every charm
      // again, and nothing would run them before the next tick anyway.
      if (worker === "cron") return;
      await tick(deps, { mode: "now", drain: false }).catch((error) => {
        log.error("Startup fan-out failed: {error}", {
          error: toError(error).message,
        });
      });
    },
    async onCron() {
      if (!accepting) return;
      await tick(deps, { mode: "cron" });
    },
    async shutdown() {
      if (!accepting) return;
      accepting = false;
      deps.queue.stop?.();
      if (statusTimer !== undefined) timers.clearTimeout(statusTimer);
      log.info(
        "Shutting down: waiting for {count} running charm(s), at most {ms} ms",
        {
          count: inFlight.size,
          ms: config.shutdownTimeoutMs,
        },
      );
      let timer: ReturnType<Timers["setTimeout"]> | undefined;
      const grace = new Promise<"timeout">((resolve) => {
        timer = timers.setTimeout(
          () => resolve("timeout"),
          config.shutdownTimeoutMs,
        );
      });
      const drained = Promise.allSettled([...inFlight]).then(() =>
        "drained" as const
      );
      if ((await Promise.race([drained, grace])) === "timeout") {
        log.warn(
          "Shutdown grace period over: aborting {count} run(s); they run again after restart",
          {
            count: inFlight.size,
          },
        );
        shutdownController.abort();
        await drained;
      }
      if (timer !== undefined) timers.clearTimeout(timer);
    },
  };
}

async function seedDemo(
  deps: ServiceDeps,
  log: ReturnType<typeof logger>,
): Promise<void> {
  const counter = deps.recipes.get("counter")!;
  for (const ref of DEMO_CHARMS) {
    await createCharm(
      deps.kv,
      ref,
      counter,
      { step: 1 },
      deps.now(),
      deps.secrets,
    )
      .catch((error) => {
        // Already there (an earlier start, or another process): keep it.
        if (!(error instanceof ConflictError)) throw error;
      });
    await registerCharm(deps.kv, "manual", ref, deps.now());
  }
  log.info(
    "Demo: {count} counter charms in space {space}, run by the manual integration",
    {
      count: DEMO_CHARMS.length,
      space: DEMO_SPACE,
    },
  );
}

/**
 * Logs one status line: cycles, runs, successes, failures, disabled charms,
 * and the charms failing most.
 */
export async function logStatus(deps: ServiceDeps): Promise<void> {
  const state = await readServiceState(deps.kv);
  const failing = await listCharms(deps.kv, { status: "failing", limit: 100 });
  const top = failing.charms
    .sort((a, b) => b.state.consecutiveFailures - a.state.consecutiveFailures)
    .slice(0, 5)
    .map((c) =>
      `${formatCharmRef(c)} (${c.state.consecutiveFailures}: ${
        c.state.lastError ?? "?"
      })`
    );
  logger("status").info(
    "Status: {cycles} cycles, {runs} runs, {successes} ok, {failures} failed, {disabled} disabled charms; top failing: {top}",
    {
      cycles: state.cyclesCompleted,
      runs: state.totalCharmsProcessed,
      successes: state.totalSuccesses,
      failures: state.totalFailures,
      disabled: state.charms.disabled,
      top: top.length === 0 ? "none" : top.join(", "),
    },
  );
}

/** Moves undelivered queue messages into the dead letters, logging it. */
export async function sweepAndReport(deps: ServiceDeps): Promise<number> {
  await pruneRunCounts(deps.kv, deps.now());
  const moved = await sweepUndelivered(deps.kv, deps.now());
  if (moved > 0) {
    logger("queue").warn(
      "Moved {moved} undelivered message(s) to the dead letters (GET /api/dead-letters)",
      { moved },
    );
  }
  return moved;
}

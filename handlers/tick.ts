/**
 * One cycle: what a cron tick (or `POST /api/fanout`) does. It records the
 * tick for `/health`, fans out every enabled integration, and counts the
 * cycle.
 *
 * @module
 */
import { logger } from "../lib/log.ts";
import { fanoutEnqueued, withSpan } from "../lib/telemetry.ts";
import { dispatch, listenOptions } from "./dispatch.ts";
import type { ServiceDeps } from "../service/deps.ts";
import { serviceCounterKey } from "../store/keys.ts";
import { addToCounter } from "../store/kv_util.ts";
import { updateServiceTimes } from "../store/service_state.ts";
import { fanout, type FanoutResult, TICK_MS, tickOf } from "./fanout.ts";

/** How early a cron tick may fire and still count for the coming minute. */
export const CRON_EARLY_TOLERANCE_MS = 5_000;

/** A drain ends this long before the next minute's tick at the latest. */
export const DRAIN_END_MARGIN_MS = 2_000;

/** Options for {@linkcode tick}. */
export interface TickOptions {
  /** Only this integration (default: every enabled one). */
  integration?: string;
  /**
   * `"cron"` for a scheduled tick (duplicate deliveries share the work), or
   * `"now"` for a fan-out by hand or at startup that also covers the slot in
   * progress.
   */
  mode: "cron" | "now";
  /**
   * Drain the queue afterwards when `deps.drainBudgetMs` is set (default
   * `true`; the startup fan-out passes `false` so startup stays quick).
   */
  drain?: boolean;
}

/**
 * Runs one cycle. Each integration's fan-out is independent: one failing does
 * not stop the others; the first error is rethrown at the end so the cron's
 * own retry runs the cycle again (fan-outs are idempotent).
 */
export async function tick(
  deps: ServiceDeps,
  options: TickOptions,
): Promise<FanoutResult[]> {
  const log = logger("cron");
  const startedAt = deps.now();
  // A cron tick that fires a little early (clock skew) belongs to the coming
  // minute, not to the one already fanned out.
  const tickMs = tickOf(
    options.mode === "cron" ? startedAt + CRON_EARLY_TOLERANCE_MS : startedAt,
  );
  // Only a cron tick proves the cron is alive (`/health` reads lastTickAt).
  await updateServiceTimes(deps.kv, {
    ...(options.mode === "cron" ? { lastTickAt: startedAt } : {}),
    lastCycleStart: startedAt,
  });

  const ids = options.integration === undefined
    ? [...deps.integrations.keys()]
    : [options.integration];
  const results: FanoutResult[] = [];
  let firstError: unknown = null;
  for (const id of ids) {
    try {
      results.push(
        await withSpan("fanout", {
          "bcs.integration": id,
          "bcs.tick": new Date(tickMs).toISOString(),
          "bcs.mode": options.mode,
        }, async (span) => {
          const result = await fanout(deps, {
            integration: id,
            tickMs,
            fromMs: options.mode === "cron" ? tickMs : startedAt,
            id: options.mode === "cron" ? "cron" : crypto.randomUUID(),
          });
          span.setAttributes({
            "bcs.enqueued": result.enqueued,
            "bcs.skipped": result.skipped,
            "bcs.claimed": result.claimed,
          });
          fanoutEnqueued.add(result.enqueued, { integration: id });
          return result;
        }),
      );
    } catch (error) {
      firstError ??= error;
      log.error("Fan-out of {integration} failed: {error}", {
        integration: id,
        error,
      });
    }
  }

  if (results.some((result) => result.claimed)) {
    await addToCounter(
      deps.kv.atomic(),
      serviceCounterKey("cyclesCompleted"),
      1,
    ).commit();
  }
  await updateServiceTimes(deps.kv, { lastCycleEnd: deps.now() });
  // A failed fan-out goes back to Deno.cron now: its retry (seconds later)
  // must not meet the next minute's tick, which would then be skipped.
  if (firstError !== null) throw firstError;
  if (
    options.drain !== false && deps.drainBudgetMs !== null && deps.queue.drain
  ) {
    // No listener runs here (Deno Deploy): deliver what comes due within the
    // budget. A cron tick also ends before the next minute's, which would
    // otherwise be skipped as overlapping.
    const budgetMs = options.mode === "cron"
      ? Math.min(
        deps.drainBudgetMs,
        tickMs + TICK_MS - DRAIN_END_MARGIN_MS - deps.now(),
      )
      : deps.drainBudgetMs;
    if (budgetMs > 0) {
      const { delivered } = await deps.queue.drain(
        async (raw, delivery) => void await dispatch(deps, raw, delivery),
        budgetMs,
        listenOptions(deps),
      );
      log.info("Drained {delivered} message(s)", { delivered });
    }
  }
  return results;
}

/**
 * One cycle: what a cron tick (or `POST /api/fanout`) does. It records the
 * tick for `/health`, fans out every enabled integration, and counts the
 * cycle.
 *
 * @module
 */
import { logger } from "../lib/log.ts";
import type { ServiceDeps } from "../service/deps.ts";
import { serviceCounterKey } from "../store/keys.ts";
import { addToCounter } from "../store/kv_util.ts";
import { updateServiceTimes } from "../store/service_state.ts";
import { fanout, type FanoutResult, tickOf } from "./fanout.ts";

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
  const tickMs = tickOf(startedAt);
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
        await fanout(deps, {
          integration: id,
          tickMs,
          fromMs: options.mode === "cron" ? tickMs : startedAt,
          id: options.mode === "cron" ? "cron" : crypto.randomUUID(),
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
  if (firstError !== null) throw firstError;
  return results;
}

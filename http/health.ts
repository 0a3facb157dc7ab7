/**
 * The service's health, as `/health` and the dashboard show it: KV reachable
 * and a cron tick recent enough.
 *
 * @module
 */
import { logger } from "../lib/log.ts";
import { readServiceState } from "../store/service_state.ts";

/** What {@linkcode readHealth} reports. */
export interface Health {
  ok: boolean;
  kv: "ok" | "error";
  /** Why it is not ok; absent when it is. */
  reason?: string;
  lastTickAt?: number | null;
}

/** What {@linkcode readHealth} needs. */
export interface HealthOptions {
  /** When this process started, epoch ms. */
  startedAt: number;
  /** Unhealthy when the last cron tick is older than this. */
  healthMaxTickAgeMs: number;
}

/**
 * Reads the health: not ok when KV is unreachable or the last cron tick (or,
 * before the first one, the process start) is older than the bound.
 */
export async function readHealth(
  kv: Deno.Kv,
  nowMs: number,
  options: HealthOptions,
): Promise<Health> {
  let lastTickAt: number | null;
  try {
    ({ lastTickAt } = await readServiceState(kv));
  } catch (error) {
    logger("http").warn("Health check cannot read KV: {error}", { error });
    return {
      ok: false,
      kv: "error",
      // The details (paths, URLs) are logged above; this answer is public.
      reason: "KV unreachable",
    };
  }
  // Before the first tick, the process's own age stands in for the tick's.
  const age = nowMs - (lastTickAt ?? options.startedAt);
  const fresh = lastTickAt === null
    ? age < options.healthMaxTickAgeMs
    : age <= options.healthMaxTickAgeMs;
  if (!fresh) {
    return {
      ok: false,
      kv: "ok",
      reason: `no cron tick for ${Math.round(age / 1000)} s` +
        (lastTickAt === null ? " (none since start)" : ""),
      lastTickAt,
    };
  }
  return { ok: true, kv: "ok", lastTickAt };
}

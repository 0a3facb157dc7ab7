/**
 * Cron registration. `Deno.cron` must be called while the main module is
 * evaluated (Deno Deploy reads cron definitions then), so `main.ts` calls
 * {@linkcode registerCron} from its top level; this module only registers.
 *
 * The cron fires every minute (its finest granularity, in UTC); intervals
 * shorter than a minute are met by the fan-out enqueueing several delayed runs
 * per tick. Overlapping ticks are skipped by Deno; a tick that throws is
 * retried on the explicit `backoffSchedule` (local and Deploy defaults
 * differ), which is safe because the fan-out is idempotent per tick.
 *
 * @module
 */

/** The cron's name, as shown by Deno Deploy. */
export const CRON_NAME = "background-charm-service-fanout";

/** Every minute. */
export const CRON_SCHEDULE = "* * * * *";

/** Retries of a failed tick, ms. */
export const CRON_BACKOFF_MS = [2_000, 10_000, 30_000];

/** `Deno.cron`'s shape, injectable for tests. */
export type CronFn = (
  name: string,
  schedule: string,
  options: { backoffSchedule?: number[]; signal?: AbortSignal },
  handler: () => Promise<void> | void,
) => Promise<void>;

/** Registers the fan-out cron; `onTick` runs one cycle. */
export function registerCron(
  onTick: () => Promise<void>,
  options: { signal?: AbortSignal; cron?: CronFn } = {},
): Promise<void> {
  const cron = options.cron ?? (Deno.cron as CronFn);
  return cron(
    CRON_NAME,
    CRON_SCHEDULE,
    {
      backoffSchedule: CRON_BACKOFF_MS,
      ...(options.signal ? { signal: options.signal } : {}),
    },
    onTick,
  );
}

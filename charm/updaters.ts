/**
 * The stream handler names a background run may call, in preference order.
 *
 * This is the one place that lists them: integrations name the one they call,
 * and a run by hand of a charm registered with no integration calls the first
 * one its recipe has.
 *
 * @module
 */

/** Known updater streams, most general first. */
export const UPDATER_NAMES = [
  "bgUpdater",
  "googleUpdater",
  "calendarUpdater",
] as const;

/** One of {@linkcode UPDATER_NAMES}. */
export type UpdaterName = typeof UPDATER_NAMES[number];

/** `true` when `name` is a known updater stream. */
export function isUpdaterName(name: string): name is UpdaterName {
  return (UPDATER_NAMES as readonly string[]).includes(name);
}

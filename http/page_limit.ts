/**
 * The page sizes of the API's listings (`?limit=`): shared with the CLI,
 * which checks `--limit` against them before it asks.
 *
 * @module
 */

/** Page size when `?limit=` is absent. */
export const DEFAULT_PAGE_LIMIT = 50;

/** Largest `?limit=` accepted. */
export const MAX_PAGE_LIMIT = 1000;

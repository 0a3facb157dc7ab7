/**
 * The service's small error vocabulary.
 *
 * `TypeError` / `RangeError` mean bad input. The named classes below exist only
 * for what a caller acts on: the run dispatcher alone decides retry versus
 * final failure from them, and the HTTP layer alone maps them to statuses.
 *
 * @module
 */

/** A failure that retrying cannot fix: the run fails at once, no retries. */
export class NonRetriableError extends Error {
  override name = "NonRetriableError";
}

/**
 * The user must authorize again (a revoked or expired grant, say): the run
 * fails at once, without retries, and the charm is parked as needing
 * re-authentication, not counted toward being disabled, until its auth
 * changes.
 */
export class NeedsReauthError extends NonRetriableError {
  override name = "NeedsReauthError";
}

/** A retriable failure whose source said when to try again. */
export class RetryAfterError extends Error {
  override name = "RetryAfterError";
  /** Milliseconds to wait before the next attempt. */
  readonly retryAfterMs: number;

  constructor(message: string, retryAfterMs: number, options?: ErrorOptions) {
    super(message, options);
    this.retryAfterMs = Math.max(0, retryAfterMs);
  }
}

/** A run that did not settle before its deadline; retriable. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/** Bad configuration (flags or environment); the process exits 2. */
export class ConfigError extends TypeError {
  override name = "ConfigError";
}

/** A lookup of something that does not exist (HTTP 404). */
export class NotFoundError extends Error {
  override name = "NotFoundError";
}

/** A request that conflicts with current state (HTTP 409). */
export class ConflictError extends Error {
  override name = "ConflictError";
}

/**
 * Turns any thrown value into an `Error`, so a handler that throws a string,
 * `null` or an object still yields a message to record.
 */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (typeof value === "string") return new Error(value);
  try {
    return new Error(`Non-error thrown: ${JSON.stringify(value)}`);
  } catch {
    return new Error(`Non-error thrown: ${String(value)}`);
  }
}

/**
 * Parses an HTTP `Retry-After` header (seconds or an HTTP date) into
 * milliseconds from `nowMs`; `undefined` when absent or unreadable.
 */
export function parseRetryAfter(
  header: string | null,
  nowMs: number,
): number | undefined {
  if (header === null) return undefined;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - nowMs);
}

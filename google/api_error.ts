/**
 * Turns a failed Google API reply into the error the run dispatcher acts on.
 *
 * Google replies `{"error": {"code", "message", "status", "errors": [{"reason"}]}}`.
 * 429, 403 with `rateLimitExceeded` / `userRateLimitExceeded`, 408 and 5xx
 * are retriable (a `RetryAfterError` when `Retry-After` says when); a 403 for
 * a missing scope needs the user to sign in again; anything else (400, a
 * refused token, an unknown calendar) is not retriable.
 *
 * @module
 */
import {
  NeedsReauthError,
  NonRetriableError,
  parseRetryAfter,
  RetryAfterError,
} from "../lib/errors.ts";

/**
 * The stored sync position is no longer valid (a Gmail `historyId` that is
 * too old: 404; a Calendar `syncToken` that expired: 410). The importer
 * catches it and does a full sync.
 */
export class StaleSyncError extends Error {
  override name = "StaleSyncError";
}

const RATE_LIMIT_REASONS = new Set([
  "rateLimitExceeded",
  "userRateLimitExceeded",
]);
/**
 * The project's quota is used up (Gmail's `dailyLimitExceeded`, Calendar's
 * `quotaExceeded`): nothing is wrong with the charm, so it is retried, and
 * not soon.
 */
const QUOTA_REASONS = new Set(["dailyLimitExceeded", "quotaExceeded"]);

/** How long a run waits after a project quota error without `Retry-After`. */
export const QUOTA_RETRY_MS = 10 * 60_000;

const SCOPE_REASONS = new Set([
  "insufficientPermissions",
  "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
]);

/**
 * The error for a non-2xx reply; reads (and so consumes) the body.
 *
 * @param action What was attempted, for the message: `Cannot list Gmail
 *   messages of charm x`.
 */
export async function googleApiError(
  response: Response,
  action: string,
  nowMs: number,
): Promise<Error> {
  const { reasons, message } = await _errorBody(response);
  const status = response.status;
  const reason = reasons[0] ?? "";
  const what = `${action}: Google returned ${status}${
    reason ? ` ${reason}` : ""
  }`;
  const retriable = status === 429 || status === 408 || status >= 500 ||
    (status === 403 && reasons.some((r) => RATE_LIMIT_REASONS.has(r)));
  const quota = status === 403 && reasons.some((r) => QUOTA_REASONS.has(r));
  if (retriable || quota) {
    const retryAfterMs = parseRetryAfter(
      response.headers.get("retry-after"),
      nowMs,
    ) ?? (quota ? QUOTA_RETRY_MS : undefined);
    return retryAfterMs === undefined
      ? new Error(what)
      : new RetryAfterError(what, retryAfterMs);
  }
  if (status === 403 && reasons.some((r) => SCOPE_REASONS.has(r))) {
    return new NeedsReauthError(
      `${what} (the grant lacks the scope; the user must sign in again and allow it)`,
    );
  }
  return new NonRetriableError(
    message ? `${what}: ${message.slice(0, 200)}` : what,
  );
}

async function _errorBody(
  response: Response,
): Promise<{ reasons: string[]; message: string }> {
  let body: unknown;
  try {
    body = JSON.parse(await response.text());
  } catch {
    return { reasons: [], message: "" };
  }
  const error = (body as { error?: unknown } | null)?.error;
  if (error === null || typeof error !== "object") {
    return { reasons: [], message: "" };
  }
  const { errors, message, status } = error as Record<string, unknown>;
  const reasons = Array.isArray(errors)
    ? errors.map((e) => (e as { reason?: unknown } | null)?.reason)
      .filter((r): r is string => typeof r === "string")
    : [];
  // Newer APIs name the problem in `details[].reason` or `status` only.
  if (typeof status === "string" && reasons.length === 0) {
    const details = (error as { details?: unknown }).details;
    if (Array.isArray(details)) {
      for (const detail of details) {
        const r = (detail as { reason?: unknown } | null)?.reason;
        if (typeof r === "string") reasons.push(r);
      }
    }
  }
  return { reasons, message: typeof message === "string" ? message : "" };
}

/**
 * A request body size limit for `Deno.serve`.
 *
 * Written here, not hono's `bodyLimit`: to pass on a body it has counted,
 * hono's re-creates the request with `new Request(c.req.raw, …)`, which
 * reads the original request's `signal`. Under `Deno.serve` that switches
 * the server to its legacy abort behaviour and prints a warning into the
 * service's output on the first body-less `POST` (a `curl -X POST …/run`).
 * This one counts a body the same way and rebuilds the request from its
 * URL, method and headers, leaving `signal` alone.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { readCapped } from "../lib/read_capped.ts";

/** How long a request's body may take to arrive, by default. */
export const BODY_TIMEOUT_MS = 10_000;

/**
 * Refuses a request whose body is over `maxSize` bytes with `onError`: at
 * once from its `content-length`, else counted as it streams in (a chunked
 * body, or one without a length). A body that takes longer than
 * `timeoutMs` to arrive is a 408 (a client trickling bytes to hold a
 * connection open). The body is handed on buffered.
 */
export function bodyLimit(
  maxSize: number,
  onError: (c: Context) => Response | Promise<Response>,
  { timeoutMs = BODY_TIMEOUT_MS }: { timeoutMs?: number } = {},
): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (raw.body === null) return await next();
    const length = raw.headers.get("content-length");
    if (
      length !== null && !raw.headers.has("transfer-encoding") &&
      Number(length) > maxSize
    ) {
      return await onError(c);
    }
    let body: Uint8Array<ArrayBuffer> | null;
    const deadline = new AbortController();
    const timer = setTimeout(
      () => deadline.abort(new DOMException("slow body", "TimeoutError")),
      timeoutMs,
    );
    try {
      body = await readCapped(raw.body, maxSize, deadline.signal);
    } catch (error) {
      if (error instanceof DOMException && error.name === "TimeoutError") {
        return c.json({
          error: `body: not received within ${timeoutMs / 1000} s`,
        }, 408);
      }
      // The client went away mid-body: nobody is there to read an answer,
      // and it is not the service's failure.
      return c.json(
        { error: "body: the connection closed before it ended" },
        400,
      );
    } finally {
      clearTimeout(timer);
    }
    if (body === null) return await onError(c);
    c.req.raw = new Request(raw.url, {
      method: raw.method,
      headers: raw.headers,
      body,
    });
    return await next();
  };
}

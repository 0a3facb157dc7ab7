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

/**
 * Refuses a request whose body is over `maxSize` bytes with `onError`: at
 * once from its `content-length`, else counted as it streams in (a chunked
 * body, or one without a length), then handed on buffered.
 */
export function bodyLimit(
  maxSize: number,
  onError: (c: Context) => Response | Promise<Response>,
): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (raw.body === null) return await next();
    const length = raw.headers.get("content-length");
    if (length !== null && !raw.headers.has("transfer-encoding")) {
      if (Number(length) > maxSize) return await onError(c);
      return await next();
    }
    const body = await readCapped(raw.body, maxSize);
    if (body === null) return await onError(c);
    c.req.raw = new Request(raw.url, {
      method: raw.method,
      headers: raw.headers,
      body,
    });
    return await next();
  };
}

/**
 * `webhook`: runs a charm hosted elsewhere by POSTing to its URL.
 *
 * Each run POSTs `{space, charmId, slot, attempt}` as JSON to `argument.url`.
 * A 2xx reply succeeds and, when it is JSON with a `result` field, that value
 * is stored in the result cell. Other replies fail the run: 408, 429 and 5xx
 * are retriable (honouring `Retry-After`), any other 4xx is not.
 *
 * @module
 */
import { z } from "zod";
import { defineRecipe } from "../charm/recipe.ts";
import {
  NonRetriableError,
  parseRetryAfter,
  RetryAfterError,
} from "../lib/errors.ts";

const argumentSchema = z.object({
  url: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }),
}).strict();

const resultSchema = z.object({
  calls: z.number().int().min(0),
  lastStatus: z.number().int().nullable(),
  lastCalledAt: z.number().nullable(),
  result: z.json().nullable(),
});

/** POSTs each run to a URL and stores the reply's `result`. */
export const webhookRecipe = defineRecipe({
  name: "webhook",
  description: "POSTs {space, charmId, slot, attempt} to argument.url",
  argumentSchema,
  resultSchema,
  initialResult: () => ({
    calls: 0,
    lastStatus: null,
    lastCalledAt: null,
    result: null,
  }),
  handlers: {
    async bgUpdater(ctx) {
      const { url } = ctx.argument.get();
      const response = await ctx.fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          space: ctx.space,
          charmId: ctx.charmId,
          slot: ctx.slot,
          attempt: ctx.attempt,
        }),
        signal: ctx.signal,
      });
      const text = await response.text();
      if (!response.ok) {
        const what = `Webhook ${_origin(url)} replied ${response.status}`;
        const retryAfterMs = parseRetryAfter(
          response.headers.get("retry-after"),
          ctx.now(),
        );
        if (retryAfterMs !== undefined) {
          throw new RetryAfterError(what, retryAfterMs);
        }
        if (
          response.status >= 400 && response.status < 500 &&
          response.status !== 408 && response.status !== 429
        ) {
          throw new NonRetriableError(what);
        }
        throw new Error(what);
      }
      let result: z.infer<typeof resultSchema>["result"] = null;
      if (response.headers.get("content-type")?.includes("application/json")) {
        try {
          const body = JSON.parse(text);
          if (body !== null && typeof body === "object" && "result" in body) {
            result = body.result;
          }
        } catch {
          throw new Error(
            `Webhook ${
              _origin(url)
            } replied ${response.status} with malformed JSON`,
          );
        }
      }
      const previous = ctx.result.get();
      ctx.result.set({
        calls: previous.calls + 1,
        lastStatus: response.status,
        lastCalledAt: ctx.now(),
        result,
      });
    },
  },
});

/** Only the origin goes into errors: a URL path or query may carry secrets. */
function _origin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "(invalid URL)";
  }
}

/**
 * `webhook`: runs a charm hosted elsewhere by POSTing to its URL.
 *
 * Each run POSTs `{space, charmId, slot, attempt}` as JSON to `argument.url`.
 * A 2xx reply succeeds and, when it is JSON with a `result` field, that value
 * is stored in the result cell. Other replies fail the run: 408, 429 and 5xx
 * are retriable (honouring `Retry-After`), any other 4xx is not.
 *
 * Each request is signed by the operator identity (`BCS-Signature`,
 * `BCS-Key`; see `lib/webhook_signature.ts` and `docs/webhooks.md`).
 * Outside local development, URLs whose host is or resolves to a private,
 * loopback or link-local address are refused, at creation and before every
 * call (DNS can change), and redirects are not followed (see
 * `lib/net_guard.ts`).
 *
 * @module
 */
import { z } from "zod";
import { MAX_CELL_BYTES } from "../store/kv_util.ts";
import { defineRecipe } from "../charm/recipe.ts";
import {
  NonRetriableError,
  parseRetryAfter,
  RetryAfterError,
} from "../lib/errors.ts";
import { checkUrl } from "../lib/net_guard.ts";
import { readCapped } from "../lib/read_capped.ts";
import { signWebhookBody } from "../lib/webhook_signature.ts";

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
  async checkArgument({ url }, ctx) {
    const verdict = await checkUrl(url, ctx.egress, ctx.signal);
    if (!verdict.ok) {
      throw new TypeError(
        verdict.retriable
          ? `argument.url: ${verdict.reason}`
          : `argument.url: ${verdict.reason}; webhooks may not call private, loopback or link-local hosts outside local development (WEBHOOK_ALLOWED_HOSTS lists exceptions)`,
      );
    }
  },
  handlers: {
    async bgUpdater(ctx) {
      const { url } = ctx.argument.get();
      // Checked again at every call: what a name resolves to can change.
      const verdict = await checkUrl(url, ctx.egress, ctx.signal);
      if (!verdict.ok) {
        const what = `Cannot call webhook ${_origin(url)}: ${verdict.reason}`;
        throw verdict.retriable ? new Error(what) : new NonRetriableError(
          `${what}; private, loopback and link-local hosts are refused outside local development`,
        );
      }
      const body = new TextEncoder().encode(JSON.stringify({
        space: ctx.space,
        charmId: ctx.charmId,
        slot: ctx.slot,
        attempt: ctx.attempt,
      }));
      const signature = ctx.signer === null
        ? {}
        : await signWebhookBody(ctx.signer, body, { url, nowMs: ctx.now() });
      const response = await ctx.fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...signature },
        body,
        signal: ctx.signal,
        // A redirect could lead anywhere, past the check above.
        redirect: ctx.egress.restricted ? "manual" : "follow",
      }).catch((error: unknown) => {
        // Deno says only "fetch failed"; why is in the cause, with the whole
        // URL. Keep the why, not the URL (its path or query may be secret).
        if (!(error instanceof TypeError) || ctx.signal.aborted) throw error;
        throw new Error(
          `Cannot reach webhook ${_origin(url)}: ${_networkReason(error)}`,
          { cause: error },
        );
      });
      if (!response.ok) await response.body?.cancel();
      if (
        ctx.egress.restricted && response.status >= 300 &&
        response.status < 400
      ) {
        throw new NonRetriableError(
          `Webhook ${
            _origin(url)
          } replied ${response.status}; redirects are not followed outside local development`,
        );
      }
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
      // The reply is bounded by what a cell can hold: a huge one fails the
      // run instead of filling memory until the timeout.
      const text = await _readCapped(response, MAX_CELL_BYTES);
      if (text === null) {
        throw new NonRetriableError(
          `Webhook ${
            _origin(url)
          } replied with more than ${MAX_CELL_BYTES} bytes`,
        );
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
        // Checking and copying a cell recurses into it: a reply nested
        // deeper than any real one would overflow the stack, every retry.
        if (_depth(result) > MAX_RESULT_DEPTH) {
          throw new NonRetriableError(
            `Webhook ${
              _origin(url)
            } replied with a result nested too deeply (over ${MAX_RESULT_DEPTH} levels)`,
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

/** How deep a stored reply's `result` may nest. */
const MAX_RESULT_DEPTH = 64;

/** How deep `value` nests (0 for a scalar), counted without recursion. */
function _depth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (item === null || typeof item !== "object") continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > MAX_RESULT_DEPTH) return deepest;
    for (const child of Object.values(item)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/** The body as text, or `null` when it is longer than `maxBytes`. */
async function _readCapped(
  response: Response,
  maxBytes: number,
): Promise<string | null> {
  if (response.body === null) return "";
  const bytes = await readCapped(response.body, maxBytes);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/** Why a `fetch` failed on the network, without any URL it names. */
function _networkReason(error: TypeError): string {
  const detail = error.cause instanceof Error ? error.cause.message : "";
  const reason = (detail || error.message)
    .replace(/^error sending request for url \([^)]*\):\s*/i, "")
    .replace(/https?:\/\/\S+/gi, "(URL)");
  return reason.slice(0, 300) || "fetch failed";
}

/** Only the origin goes into errors: a URL path or query may carry secrets. */
function _origin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "(invalid URL)";
  }
}

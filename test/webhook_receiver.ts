/**
 * A real webhook receiver on loopback for tests: records every call and
 * answers as the test says (status, headers, body), so failures happen on
 * demand. Dispose to stop it.
 *
 * @module
 */

/** One call the receiver got. */
export interface ReceivedCall {
  body: { space: string; charmId: string; slot: number; attempt: number };
  at: number;
}

/** How the receiver answers. */
export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
  /**
   * Sent as the body exactly as given (not JSON-encoded), still with
   * `content-type: application/json` unless `headers` say otherwise: for
   * malformed JSON.
   */
  rawBody?: string;
  /** Never answer (the request hangs until the client aborts). */
  hang?: boolean;
  /** Answer after this long (a slow receiver), ms. */
  delayMs?: number;
  /**
   * Send the status, the headers and the start of the body, then cut the
   * connection: the client's read of the body fails, as on a dropped
   * connection.
   */
  drop?: boolean;
}

/** A running receiver. */
export interface WebhookReceiver extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  calls: ReceivedCall[];
  /** Sets the reply for requests to `path` (default for all paths: 200). */
  reply(path: string, reply: Reply): void;
  /**
   * Queues replies for the next calls to `path`, one per call in order; once
   * they are used up, `path` answers with its `reply` (or the default).
   */
  script(path: string, replies: Reply[]): void;
  /** Calls to `path`. */
  callsTo(path: string): ReceivedCall[];
}

/** What a dropped reply's body stream fails with (answered quietly). */
const DROPPED = new Error("webhook receiver: connection dropped on purpose");

/** Starts a receiver on 127.0.0.1 with an ephemeral port. */
export function startWebhookReceiver(): WebhookReceiver {
  const calls: (ReceivedCall & { path: string })[] = [];
  const replies = new Map<string, Reply>();
  const scripts = new Map<string, Reply[]>();
  const hanging = new Set<() => void>();
  const server = Deno.serve(
    {
      hostname: "127.0.0.1",
      port: 0,
      onListen: () => {},
      onError(error) {
        // A dropped reply is the test's doing; anything else is a real error.
        if (error !== DROPPED) console.error(error);
        return new Response(null, { status: 500 });
      },
    },
    async (request) => {
      const path = new URL(request.url).pathname;
      const body = await request.json().catch(() => null);
      calls.push({ path, body, at: Date.now() });
      const reply = scripts.get(path)?.shift() ?? replies.get(path) ??
        { status: 200, body: { result: { ok: true } } };
      if (reply.hang) {
        await new Promise<void>((resolve) => {
          hanging.add(resolve);
          request.signal.addEventListener("abort", () => resolve(), {
            once: true,
          });
        });
        return new Response(null, { status: 504 });
      }
      if (reply.delayMs) {
        await new Promise((resolve) => setTimeout(resolve, reply.delayMs));
      }
      const headers = {
        "content-type": "application/json",
        ...reply.headers,
      };
      const text = reply.rawBody ??
        (reply.body === undefined ? null : JSON.stringify(reply.body));
      if (reply.drop) {
        const start = new TextEncoder().encode(
          (text ?? '{"result": ').slice(0, 8),
        );
        const stream = new ReadableStream<Uint8Array>({
          start: (controller) => controller.enqueue(start),
          pull: (controller) => controller.error(DROPPED),
        });
        return new Response(stream, { status: reply.status, headers });
      }
      return new Response(text, { status: reply.status, headers });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    calls,
    reply: (path, reply) => void replies.set(path, reply),
    script: (path, list) =>
      void scripts.set(path, [...(scripts.get(path) ?? []), ...list]),
    callsTo: (path) => calls.filter((call) => call.path === path),
    async [Symbol.asyncDispose]() {
      for (const resolve of hanging) resolve();
      await server.shutdown();
    },
  };
}

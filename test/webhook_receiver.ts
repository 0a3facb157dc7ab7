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
  /** Never answer (the request hangs until the client aborts). */
  hang?: boolean;
  /** Answer after this long (a slow receiver), ms. */
  delayMs?: number;
}

/** A running receiver. */
export interface WebhookReceiver extends AsyncDisposable {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  url: string;
  calls: ReceivedCall[];
  /** Sets the reply for requests to `path` (default for all paths: 200). */
  reply(path: string, reply: Reply): void;
  /** Calls to `path`. */
  callsTo(path: string): ReceivedCall[];
}

/** Starts a receiver on 127.0.0.1 with an ephemeral port. */
export function startWebhookReceiver(): WebhookReceiver {
  const calls: (ReceivedCall & { path: string })[] = [];
  const replies = new Map<string, Reply>();
  const hanging = new Set<() => void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const path = new URL(request.url).pathname;
      const body = await request.json().catch(() => null);
      calls.push({ path, body, at: Date.now() });
      const reply = replies.get(path) ??
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
      return new Response(
        reply.body === undefined ? null : JSON.stringify(reply.body),
        {
          status: reply.status,
          headers: { "content-type": "application/json", ...reply.headers },
        },
      );
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    calls,
    reply: (path, reply) => void replies.set(path, reply),
    callsTo: (path) => calls.filter((call) => call.path === path),
    async [Symbol.asyncDispose]() {
      for (const resolve of hanging) resolve();
      await server.shutdown();
    },
  };
}

/**
 * Retries KV calls that fail because another process holds SQLite's write
 * lock ("database is locked"). Several service processes may share one local
 * KV file (the `kv` queue driver); SQLite then refuses a write now and then,
 * and the right answer is to try again shortly, not to fail the run.
 *
 * Written here: Deno KV has no busy-retry option, and the failures are
 * transient by nature. Only that one error is retried; anything else is
 * thrown as it was.
 *
 * @module
 */

const BUSY = /database is locked|database is busy/i;

/** Retries and the longest pause between them. */
const MAX_TRIES = 20;
const MAX_PAUSE_MS = 200;

/** `true` for SQLite's lock-contention errors. */
export function isBusyError(error: unknown): boolean {
  return error instanceof Error && BUSY.test(error.message);
}

async function _retry<T>(call: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!isBusyError(error) || attempt >= MAX_TRIES) throw error;
      const pause = Math.min(MAX_PAUSE_MS, 5 * 2 ** attempt) *
        (0.5 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

const RETRIED = new Set(["get", "getMany", "set", "delete", "enqueue"]);

/**
 * Wraps `kv` so point reads, writes and atomic commits retry on lock
 * contention. (`list` pages are read by callers that already recover: the
 * fan-out and the queue worker retry their loop.)
 */
export function withBusyRetry(kv: Deno.Kv): Deno.Kv {
  return new Proxy(kv, {
    get(target, property) {
      if (property === "atomic") {
        return () => _atomicWithRetry(target.atomic());
      }
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (typeof property === "string" && RETRIED.has(property)) {
        return (...args: unknown[]) => _retry(() => value.apply(target, args));
      }
      return value.bind(target);
    },
  });
}

function _atomicWithRetry(op: Deno.AtomicOperation): Deno.AtomicOperation {
  const proxy: Deno.AtomicOperation = new Proxy(op, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "commit") {
        // The operation keeps its checks and mutations; committing again
        // sends the same request.
        return () => _retry(() => target.commit());
      }
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        return result === target ? proxy : result;
      };
    },
  });
  return proxy;
}

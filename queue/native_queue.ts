/**
 * The native Deno KV queue driver (`enqueue` / `listenQueue`).
 *
 * Delivery is at least once. A handler that throws is retried by the queue
 * on `backoffSchedule`; after the last retry the message is written to its
 * `keysIfUndelivered` key instead of vanishing. Our handlers throw only on
 * infrastructure errors (KV unavailable): run failures are retried by the run
 * handler itself, with its own attempt count.
 *
 * @module
 */
import {
  directDelivery,
  type EnqueueOptions,
  type QueueDriver,
} from "./queue.ts";
import type { Message } from "../handlers/messages.ts";

/** Queue-level redelivery delays after a handler throws, ms (≤ 5 entries). */
export const QUEUE_BACKOFF_MS = [1_000, 5_000, 15_000, 30_000, 60_000];

/** Options for {@linkcode nativeQueue}. */
export interface NativeQueueOptions {
  /** Redelivery delays after a handler throws, ms (at most 5). */
  backoffSchedule?: number[];
}

/** Builds the native driver over `kv`. */
export function nativeQueue(
  kv: Deno.Kv,
  options: NativeQueueOptions = {},
): QueueDriver {
  const backoffSchedule = options.backoffSchedule ?? QUEUE_BACKOFF_MS;
  return {
    name: "native",
    enqueue(
      op: Deno.AtomicOperation,
      message: Message,
      options: EnqueueOptions,
    ) {
      return op.enqueue(message, {
        delay: Math.max(0, Math.round(options.delayMs)),
        keysIfUndelivered: [options.undeliveredKey],
        backoffSchedule,
      });
    },
    listen(handler) {
      const delivery = directDelivery(kv);
      return kv.listenQueue((raw) => handler(raw, delivery));
    },
  };
}

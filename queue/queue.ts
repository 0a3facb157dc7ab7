/**
 * The queue seam: how messages are enqueued (inside an atomic operation, so
 * an enqueue commits with the state that caused it) and delivered.
 *
 * @module
 */
import type { Message } from "../handlers/messages.ts";

/** Options for one enqueue. */
export interface EnqueueOptions {
  /** Delay before delivery, ms (0 = now). */
  delayMs: number;
  /** Where the message is written if it can never be delivered. */
  undeliveredKey: Deno.KvKey;
}

/** A queue driver. */
export interface QueueDriver {
  /** Driver name, logged at startup. */
  readonly name: string;
  /** Adds the enqueue of `message` to `op`; it is sent when `op` commits. */
  enqueue(
    op: Deno.AtomicOperation,
    message: Message,
    options: EnqueueOptions,
  ): Deno.AtomicOperation;
  /** Delivers messages to `handler` until KV closes. */
  listen(handler: (raw: unknown) => Promise<void>): Promise<void>;
}

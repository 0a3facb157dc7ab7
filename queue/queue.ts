/**
 * The queue seam: how messages are enqueued (inside an atomic operation, so
 * an enqueue commits with the state that caused it) and delivered.
 *
 * Two drivers implement it: `native` (Deno KV's `enqueue`/`listenQueue`) and
 * `kv` (a job table in KV, for platforms without queues and for several
 * processes). Both carry the same message envelope and the same retry
 * metadata, so handlers do not know which one runs them.
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
  /**
   * What the handler's first read would find, as the enqueuer just read it
   * (`store/run_snapshot.ts`), for drivers that keep it
   * ({@linkcode QueueDriver.keepsSnapshots}): handed to the
   * {@linkcode Prefetch} of the first delivery only. Not part of the message:
   * retries, dead letters and undelivered messages never carry it.
   */
  snapshot?: unknown;
}

/** What a delivery's {@linkcode Delivery.commit} resolves to. */
export type CommitResult = Deno.KvCommitResult | Deno.KvCommitError;

/** Adds a handler's checks and mutations to an atomic operation. */
export type BuildCommit = (op: Deno.AtomicOperation) => void;

/**
 * One delivery of a message, as its handler sees it. A handler commits its
 * outcome through `commit`, which acknowledges the delivery in the same
 * atomic operation (the `kv` driver deletes the job there, saving a commit).
 * The `kv` driver may also commit several deliveries' operations as one (a
 * group commit); the result is still this delivery's own: a check that fails
 * in another delivery's part never fails this one. A delivery that did not
 * commit is acknowledged by the driver when the handler returns.
 *
 * `build` only adds checks and mutations to `op` (the `kv` driver records
 * them to replay in a group), and is called once.
 */
export interface Delivery {
  commit(build: BuildCommit): Promise<CommitResult>;
  /**
   * What the listener's {@linkcode Prefetch} returned for this message, when
   * the driver claimed it ahead of its delivery.
   */
  readonly prefetched?: unknown;
}

/**
 * Starts, for messages a driver has claimed ahead of their delivery, what
 * their handler will do first (its KV reads), so that a batch's reads run
 * together instead of one per free slot. `snapshots` holds, for each message,
 * the snapshot it was enqueued with on its first delivery (else `undefined`):
 * a message with one needs no read. Returns one value per message (opaque to
 * the driver), handed to the handler as {@linkcode Delivery.prefetched}; it
 * must not throw or reject.
 */
export type Prefetch = (
  raws: readonly unknown[],
  snapshots: readonly unknown[],
) => unknown[];

/** How a driver delivers, besides the handler. */
export interface ListenOptions {
  /** Used by drivers that claim ahead (the `kv` driver). */
  prefetch?: Prefetch;
}

/** A message handler: returning acknowledges, throwing asks for redelivery. */
export type MessageHandler = (
  raw: unknown,
  delivery: Delivery,
) => Promise<void>;

/** How deep the queue is (only drivers that can see it report this). */
export interface QueueDepth {
  /** Jobs due now and not leased. */
  dueNow: number;
  /** Jobs due later. */
  delayed: number;
  /** Jobs a worker holds right now. */
  leased: number;
  /** Age of the oldest job that is due and not leased, ms (0 if none). */
  oldestDueAgeMs: number;
  /** `true` when the count stopped at the scan bound. */
  truncated: boolean;
}

/** A queue driver. */
export interface QueueDriver {
  /** Driver name, logged at startup and shown in `/api/status`. */
  readonly name: string;
  /**
   * Whether {@linkcode EnqueueOptions.snapshot} is kept: then enqueuers read
   * one for their messages. The `kv` driver keeps it with the job. The
   * native queue does not: every dequeue of the local native queue scans its
   * whole backlog, and bigger messages made its runs slower, not faster
   * (docs/benchmarks.md).
   */
  readonly keepsSnapshots?: boolean;
  /** Adds the enqueue of `message` to `op`; it is sent when `op` commits. */
  enqueue(
    op: Deno.AtomicOperation,
    message: Message,
    options: EnqueueOptions,
  ): Deno.AtomicOperation;
  /** Delivers messages to `handler` until stopped or KV closes. */
  listen(handler: MessageHandler, options?: ListenOptions): Promise<void>;
  /**
   * Delivers the messages due within `budgetMs`, then returns: how work gets
   * done where no process stays up (Deno Deploy's cron ticks and requests).
   * Only drivers that can be drained have it.
   */
  drain?(
    handler: MessageHandler,
    budgetMs: number,
    options?: ListenOptions,
  ): Promise<{ delivered: number }>;
  /** The queue's depth, where the driver can see it. */
  depth?(): Promise<QueueDepth>;
  /** Stops `listen` (in-flight handlers finish on their own). */
  stop?(): void;
}

/**
 * The delivery of a driver whose acknowledgement is not a KV write (the
 * native queue acknowledges when the handler returns), and of runs started
 * outside any queue: `commit` commits at once.
 */
export function directDelivery(kv: Deno.Kv): Delivery {
  return {
    commit(build) {
      const op = kv.atomic();
      build(op);
      return op.commit();
    },
  };
}

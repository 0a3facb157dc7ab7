/**
 * Work started for a message before its delivery: when the `kv` driver
 * claims a batch, each message is parsed and its handler's first read begins
 * at once (`dispatch.ts` `prefetchMessages`). The delivery then finds both
 * done. A prefetched read is only an early read: the commits that follow
 * check every entry it returned, so one that went stale makes a check fail
 * and the handler read again (`run_charm.ts`).
 *
 * @module
 */
import type { Message } from "./messages.ts";

/** A message as parsed when it was claimed, and its first read. */
export class Prefetched {
  constructor(
    /** The raw message, as the driver will deliver it. */
    readonly raw: unknown,
    readonly message: Message,
    /** The handler's first read; `null` if it failed (read again). */
    readonly read: Promise<unknown>,
  ) {}
}

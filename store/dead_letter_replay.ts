/**
 * Replaying a dead letter: the stored message goes back on the queue and the
 * dead letter goes away, in one atomic operation, so a replay is never lost
 * and never doubled (two concurrent replays: one commit wins, the other sees
 * the letter gone).
 *
 * Dead letters are keyed by time (`deadLetterKey(atMs, id)`), so finding one
 * by id scans them, newest first, at most {@linkcode MAX_REPLAY_SCAN}.
 *
 * @module
 */
import { type CharmRef, formatCharmRef } from "../charm/charm.ts";
import type { DidKey } from "../charm/did.ts";
import { type Message, parseMessage, runKeyOf } from "../handlers/messages.ts";
import { ConflictError, NotFoundError } from "../lib/errors.ts";
import type { QueueDriver } from "../queue/queue.ts";
import type { DeadLetter } from "./dead_letters.ts";
import { deadLettersPrefix, undeliveredKey } from "./keys.ts";

/** How many dead letters a lookup by id scans at most. */
export const MAX_REPLAY_SCAN = 10_000;

/**
 * Finds a dead letter by id, scanning newest first.
 *
 * @returns the entry, or `null` when no letter among the newest
 *   {@linkcode MAX_REPLAY_SCAN} has that id.
 */
export async function findDeadLetter(
  kv: Deno.Kv,
  id: string,
  maxScan: number = MAX_REPLAY_SCAN,
): Promise<Deno.KvEntry<DeadLetter> | null> {
  for await (
    const entry of kv.list<DeadLetter>({ prefix: deadLettersPrefix() }, {
      reverse: true,
      limit: maxScan,
    })
  ) {
    if (entry.key.at(-1) === id) return entry;
  }
  return null;
}

/**
 * Re-enqueues the message of dead letter `id`, as stored, and deletes the
 * letter, atomically.
 *
 * @throws {NotFoundError} when there is no such dead letter.
 * @throws {TypeError} when the stored message is not a valid message, naming
 *   the first bad field.
 * @throws {ConflictError} when the letter changed or went during the replay.
 */
export async function replayDeadLetter(
  kv: Deno.Kv,
  queue: QueueDriver,
  id: string,
): Promise<{ message: Message }> {
  const entry = await findDeadLetter(kv, id);
  if (entry === null) {
    throw new NotFoundError(`Dead letter "${id}" does not exist`);
  }
  const parsed = parseMessage(entry.value.message);
  if (!parsed.ok) {
    throw new TypeError(
      `Cannot replay dead letter "${id}": its message is malformed (${parsed.reason})`,
    );
  }
  // Unchanged, attempt included: the run handler's duplicate check then
  // treats it like a redelivery (a slot that has since finished is not run
  // again; one that never finished resumes at the attempt it had reached).
  const message = parsed.message;
  const ref: CharmRef = {
    space: message.space as DidKey,
    charmId: message.charmId,
  };
  const op = kv.atomic().check(entry).delete(entry.key);
  queue.enqueue(op, message, {
    delayMs: 0,
    undeliveredKey: undeliveredKey(ref, runKeyOf(message), message.attempt),
  });
  if (!(await op.commit()).ok) {
    throw new ConflictError(
      `Cannot replay dead letter "${id}" for ${
        formatCharmRef(ref)
      }: it changed or was replayed meanwhile`,
    );
  }
  return { message };
}

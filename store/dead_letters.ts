/**
 * Dead letters: messages that cannot be processed (malformed, or naming a
 * charm that no longer exists), kept with the reason so an operator can see
 * and fix them instead of the queue redelivering them forever.
 *
 * @module
 */
import {
  deadLetterKey,
  deadLettersPrefix,
  serviceCounterKey,
  undeliveredPrefix,
} from "./keys.ts";
import { addToCounter, jsonSize } from "./kv_util.ts";

/** A stored dead letter. */
export interface DeadLetter {
  id: string;
  at: number;
  reason: string;
  /** The message as received, or a note when it was too large to keep. */
  message: unknown;
}

/** Dead letters are kept this long (a lower bound: KV expiry is lazy). */
export const DEAD_LETTER_TTL_MS = 30 * 24 * 3600 * 1000;

const MAX_KEPT_MESSAGE_BYTES = 16 * 1024;

/** Adds a dead letter for `message` to `op` (commit it yourself). */
export function addDeadLetter(
  op: Deno.AtomicOperation,
  message: unknown,
  reason: string,
  nowMs: number,
): DeadLetter {
  let kept: unknown;
  try {
    kept = jsonSize(message) > MAX_KEPT_MESSAGE_BYTES
      ? `(message of ${jsonSize(message)} bytes not kept)`
      : structuredClone(message);
  } catch {
    kept = `(unserializable message: ${typeof message})`;
  }
  const letter: DeadLetter = {
    id: crypto.randomUUID(),
    at: nowMs,
    reason,
    message: kept,
  };
  op.set(deadLetterKey(nowMs, letter.id), letter, {
    expireIn: DEAD_LETTER_TTL_MS,
  });
  addToCounter(op, serviceCounterKey("deadLetters"), 1);
  return letter;
}

/** Writes a dead letter now. */
export async function writeDeadLetter(
  kv: Deno.Kv,
  message: unknown,
  reason: string,
  nowMs: number,
): Promise<DeadLetter> {
  const op = kv.atomic();
  const letter = addDeadLetter(op, message, reason, nowMs);
  await op.commit();
  return letter;
}

/** Lists dead letters, newest first, a page at a time. */
export async function listDeadLetters(
  kv: Deno.Kv,
  options: { limit: number; cursor?: string },
): Promise<{ deadLetters: DeadLetter[]; cursor: string | null }> {
  const iterator = kv.list<DeadLetter>({ prefix: deadLettersPrefix() }, {
    limit: options.limit,
    reverse: true,
    ...(options.cursor ? { cursor: options.cursor } : {}),
  });
  const deadLetters: DeadLetter[] = [];
  try {
    for await (const entry of iterator) deadLetters.push(entry.value);
  } catch (error) {
    if (options.cursor) {
      throw new TypeError(
        "cursor: not a cursor this API returned for this listing",
        {
          cause: error,
        },
      );
    }
    throw error;
  }
  return {
    deadLetters,
    cursor: deadLetters.length < options.limit ? null : iterator.cursor || null,
  };
}

/**
 * Moves messages the queue gave up on (written to their `keysIfUndelivered`
 * key after its last retry) into the dead letters, where operators look, at
 * most `limit` per call. Each move is one atomic operation.
 *
 * @returns how many were moved.
 */
export async function sweepUndelivered(
  kv: Deno.Kv,
  nowMs: number,
  limit = 500,
): Promise<number> {
  let moved = 0;
  for await (
    const entry of kv.list({ prefix: undeliveredPrefix() }, { limit })
  ) {
    const op = kv.atomic().check(entry).delete(entry.key);
    addDeadLetter(
      op,
      entry.value,
      "undelivered: the queue gave up after its retries (the service failed to handle it each time)",
      nowMs,
    );
    if ((await op.commit()).ok) moved++;
  }
  return moved;
}

/**
 * The queue listener's dispatcher: validates each raw message and hands it
 * to exactly one handler by `type`. A malformed message is dead-lettered with
 * the reason, never thrown back to be redelivered forever.
 *
 * @module
 */
import { logger } from "../lib/log.ts";
import { runDuration, runsCounter, withSpan } from "../lib/telemetry.ts";
import {
  type Delivery,
  directDelivery,
  type ListenOptions,
} from "../queue/queue.ts";
import type { ServiceDeps } from "../service/deps.ts";
import { writeDeadLetter } from "../store/dead_letters.ts";
import type { Message, MessageType } from "./messages.ts";
import { parseMessage } from "./messages.ts";
import { Prefetched } from "./prefetch.ts";
import { prefetchRun, runCharm } from "./run_charm.ts";

/** One handler per message type; the compiler checks none is missing. */
export const HANDLERS = {
  run: runCharm,
} satisfies {
  [T in MessageType]: (
    deps: ServiceDeps,
    message: Extract<Message, { type: T }>,
    delivery: Delivery,
  ) => Promise<unknown>;
};

/**
 * Parses messages claimed ahead of their delivery and starts each one's first
 * read (`queue/queue.ts` `Prefetch`), or takes it from the message's snapshot.
 * A malformed message gets nothing: its delivery dead-letters it.
 */
export function prefetchMessages(
  deps: ServiceDeps,
  raws: readonly unknown[],
  snapshots: readonly unknown[] = [],
): (Prefetched | undefined)[] {
  return raws.map((raw, i) => {
    const parsed = parseMessage(raw);
    if (!parsed.ok) return undefined;
    return new Prefetched(
      raw,
      parsed.message,
      prefetchRun(deps, parsed.message, snapshots[i]),
    );
  });
}

/** How a queue listens for {@linkcode dispatch}: with its prefetch. */
export function listenOptions(deps: ServiceDeps): ListenOptions {
  return {
    prefetch: (raws, snapshots) => prefetchMessages(deps, raws, snapshots),
  };
}

/**
 * Handles one raw queue message.
 *
 * @returns what the handler returned, or `"dead-lettered"`.
 */
export async function dispatch(
  deps: ServiceDeps,
  raw: unknown,
  delivery: Delivery = directDelivery(deps.kv),
): Promise<unknown> {
  // Parsed already when the driver claimed it.
  const prefetched = delivery.prefetched instanceof Prefetched &&
      delivery.prefetched.raw === raw
    ? delivery.prefetched
    : null;
  const parsed = prefetched
    ? { ok: true as const, message: prefetched.message }
    : parseMessage(raw);
  if (!parsed.ok) {
    await writeDeadLetter(
      deps.kv,
      raw,
      `malformed message: ${parsed.reason}`,
      deps.now(),
    );
    logger("queue").warn("Dead-lettered a malformed message: {reason}", {
      reason: parsed.reason,
    });
    return "dead-lettered";
  }
  const message = parsed.message;
  const started = performance.now();
  return await withSpan("charm.run", {
    "bcs.space": message.space,
    "bcs.charm": message.charmId,
    "bcs.integration": message.integration ?? "manual-run",
    "bcs.attempt": message.attempt,
    "bcs.slot": message.slot,
  }, async (span) => {
    let outcome = "error";
    try {
      const result = await HANDLERS[message.type](deps, message, delivery);
      outcome = String(result);
      return result;
    } finally {
      span.setAttribute("bcs.outcome", outcome);
      const labels = {
        outcome,
        integration: message.integration ?? "manual-run",
      };
      runsCounter.add(1, labels);
      runDuration.record(performance.now() - started, { outcome });
    }
  });
}

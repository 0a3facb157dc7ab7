/**
 * PROTOTYPE: `handlers/dispatch.ts` wired to the one-read run handler.
 *
 * @module
 */
import { parseMessage } from "../../handlers/messages.ts";
import { type Delivery, NO_ACK } from "../../queue/queue.ts";
import type { ServiceDeps } from "../../service/deps.ts";
import { runCharm } from "./run_charm_one_read.ts";
import { runCharm as runCharmOneCommit } from "./run_charm_one_commit.ts";

/** Dispatches a raw message to the prototype run handler. */
export async function dispatchOneRead(
  deps: ServiceDeps,
  raw: unknown,
  delivery: Delivery = NO_ACK,
): Promise<unknown> {
  const parsed = parseMessage(raw);
  if (!parsed.ok) throw new TypeError(parsed.reason);
  return await runCharm(deps, parsed.message, delivery);
}

/** Dispatches a raw message to the no-claim (one commit) prototype. */
export async function dispatchOneCommit(
  deps: ServiceDeps,
  raw: unknown,
  delivery: Delivery = NO_ACK,
): Promise<unknown> {
  const parsed = parseMessage(raw);
  if (!parsed.ok) throw new TypeError(parsed.reason);
  return await runCharmOneCommit(deps, parsed.message, delivery);
}

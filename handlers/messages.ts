/**
 * Queue message types: a discriminated union on `type`, validated at the edge
 * (the listener receives `unknown`). `handlers/dispatch.ts` maps each type to
 * exactly one handler.
 *
 * @module
 */
import { z } from "zod";
import { CHARM_ID_PATTERN } from "../charm/charm.ts";
import { isDidKey } from "../charm/did.ts";

const charmIdSchema = z.string().regex(CHARM_ID_PATTERN, {
  error: "must be 1-128 letters, digits, '.', '_', ':' or '-'",
});

/** Run one charm for one slot (or one manual request). */
export const runMessageSchema = z.object({
  type: z.literal("run"),
  /** Message format version. */
  v: z.literal(1),
  space: z.string().refine(isDidKey, { error: "must be an Ed25519 did:key" }),
  charmId: charmIdSchema,
  /**
   * The integration it runs as: the one that scheduled it, or for a manual
   * run the charm's first registered integration that accepts its recipe;
   * `null` when there is none.
   */
  integration: z.string().min(1).max(64).nullable(),
  /** `scheduled` (from a fan-out) or `manual` (from the API). */
  kind: z.enum(["scheduled", "manual"]),
  /** The slot's scheduled time, epoch ms (for manual runs: request time). */
  slot: z.number().int().nonnegative(),
  /** Identifies a manual run; absent for scheduled ones. */
  runId: z.string().min(1).max(64).optional(),
  /** 1 for the first try. */
  attempt: z.number().int().min(1).max(1000),
  /** When the fan-out or API enqueued the first attempt, epoch ms. */
  enqueuedAt: z.number().int().nonnegative(),
  /**
   * Times this attempt restarted because its argument was replaced mid-run
   * (absent: none).
   */
  restarts: z.number().int().min(1).max(100).optional(),
}).strict().refine((m) => m.kind === "scheduled" || m.runId !== undefined, {
  error: "a manual run needs runId",
  path: ["runId"],
});

/** A validated run message. */
export type RunMessage = z.infer<typeof runMessageSchema> & {
  space: `did:key:z${string}`;
};

/** Every message type the queue carries. */
export const messageSchema = z.discriminatedUnion("type", [runMessageSchema]);

/** Any valid queue message. */
export type Message = RunMessage;

/** The message types, for the handler registry. */
export type MessageType = Message["type"];

/**
 * Validates a raw queue message. Returns the message, or a reason naming the
 * first bad field.
 */
export function parseMessage(
  raw: unknown,
): { ok: true; message: Message } | { ok: false; reason: string } {
  const parsed = messageSchema.safeParse(raw);
  if (parsed.success) return { ok: true, message: parsed.data as Message };
  const issue = parsed.error.issues[0];
  const path = issue?.path.length ? issue.path.join(".") : "(message)";
  return { ok: false, reason: `${path}: ${issue?.message ?? "invalid"}` };
}

/**
 * The run's key among a charm's runs: a scheduled slot per integration, or a
 * manual run id. Two deliveries of one run share it.
 */
export function runKeyOf(message: RunMessage): string {
  return message.kind === "manual"
    ? `manual:${message.runId}`
    : `${message.integration ?? "none"}:${message.slot}`;
}

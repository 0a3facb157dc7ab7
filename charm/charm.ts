/**
 * The charm model: what a charm is, how it is named, and its run state.
 *
 * `@commontools/*` is published nowhere reachable, so the service carries this
 * small model of its own: a charm lives in a space (a `did:key`), has an id, a
 * recipe registered by name, an argument cell and a result cell.
 *
 * @module
 */
import { type DidKey, parseDidKey } from "./did.ts";

/** Where a charm lives: its space and its id. */
export interface CharmRef {
  space: DidKey;
  charmId: string;
}

/** A stored charm. Cells are stored separately (see `store/keys.ts`). */
export interface Charm extends CharmRef {
  recipe: string;
  createdAt: number;
}

/**
 * Run state of one charm, durable in KV; the field names are the original
 * service's.
 */
export interface CharmState {
  disabled: boolean;
  /** Why the charm is disabled, when it is. */
  disabledReason: string | null;
  /**
   * The charm's authorization was refused for good (`NeedsReauthError`): it is
   * not run until its argument (holding the auth) is replaced. Absent in
   * states written before this field existed.
   */
  needsReauth?: boolean;
  /** Why it needs re-authentication, when it does. */
  needsReauthReason?: string | null;
  lastExecuted: number | null;
  consecutiveFailures: number;
  lastError: string | null;
  /**
   * Why the fan-out passes this charm over, when it is for a reason of its
   * own (its recipe lacks the integration's stream, say); `null` otherwise.
   * Absent in states written before it existed.
   */
  skipReason?: string | null;
  lastErrorTimestamp: number | null;
  /** Slots finished: successes plus slots that failed for good. */
  totalExecutions: number;
  /** Handler executions, retries included (the timing fields cover these). */
  totalAttempts: number;
  totalSuccesses: number;
  totalFailures: number;
  avgExecutionTimeMs: number;
  minExecutionTimeMs: number | null;
  maxExecutionTimeMs: number | null;
  lastExecutionTimeMs: number | null;
  /**
   * The charm record's own fields, copied with every state write
   * (`writeCharmState`), so a run and a fan-out read one entry per charm,
   * not two (a record never changes). Absent in states not written since it
   * existed: readers then read the record. Internal: not part of the state
   * the API shows.
   */
  record?: { recipe: string; createdAt: number };
}

/** Coarse status used for listing and filtering. */
export type CharmStatus = "ok" | "failing" | "disabled" | "needs-reauth";

/** Statuses accepted by `?status=`. */
export const CHARM_STATUSES: readonly CharmStatus[] = [
  "ok",
  "failing",
  "disabled",
  "needs-reauth",
];

/** The state of a charm that never ran. */
export function initialCharmState(): CharmState {
  return {
    disabled: false,
    disabledReason: null,
    needsReauth: false,
    needsReauthReason: null,
    lastExecuted: null,
    consecutiveFailures: 0,
    lastError: null,
    skipReason: null,
    lastErrorTimestamp: null,
    totalExecutions: 0,
    totalAttempts: 0,
    totalSuccesses: 0,
    totalFailures: 0,
    avgExecutionTimeMs: 0,
    minExecutionTimeMs: null,
    maxExecutionTimeMs: null,
    lastExecutionTimeMs: null,
  };
}

/** The coarse status of a state. */
export function charmStatus(state: CharmState): CharmStatus {
  if (state.disabled) return "disabled";
  if (state.needsReauth) return "needs-reauth";
  return state.consecutiveFailures > 0 ? "failing" : "ok";
}

/** What a charm id looks like (the API and the queue messages check it). */
export const CHARM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/**
 * Checks a charm id: 1 to 128 characters of letters, digits, `.`, `_`, `:`
 * and `-`, starting with a letter or digit. Throws a `TypeError` otherwise.
 */
export function parseCharmId(value: string): string {
  if (!CHARM_ID_PATTERN.test(value)) {
    throw new TypeError(
      `"${
        value.slice(0, 40)
      }" is not a valid charm id: use 1-128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit`,
    );
  }
  return value;
}

/**
 * Parses `space/charmId` (the `--charms` entry format). Throws a `TypeError`
 * naming the entry and what is wrong.
 */
export function parseCharmRef(entry: string): CharmRef {
  const slash = entry.indexOf("/");
  if (slash < 0) {
    throw new TypeError(
      `"${entry}" is not <space>/<charmId>: missing "/"`,
    );
  }
  return {
    space: parseDidKey(entry.slice(0, slash)),
    charmId: parseCharmId(entry.slice(slash + 1)),
  };
}

/** A fresh random charm id. */
export function newCharmId(): string {
  return crypto.randomUUID();
}

/** `space/charmId`, for logs and messages. */
export function formatCharmRef(ref: CharmRef): string {
  return `${ref.space}/${ref.charmId}`;
}

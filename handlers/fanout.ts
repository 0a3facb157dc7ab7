/**
 * The fan-out: for one integration and one minute tick, enqueue a run message
 * for every due charm, spread across the interval.
 *
 * - **Window.** A cron tick at minute `T` covers slots in `[T, T + 60 s)`: the
 *   multiples of the interval in it (one slot for a 60 s interval, six for
 *   10 s, none in most minutes for 300 s). A fan-out started by hand or at
 *   startup (`from` = now) also covers the slot in progress, so a new charm
 *   runs without waiting for its next slot; the run's idempotency key drops
 *   it if that slot already ran.
 * - **Spread.** Each charm runs at `slot + offset`, where the offset is a
 *   stable hash of the charm modulo the interval: runs are spread evenly, and
 *   a charm's runs stay one interval apart.
 * - **Paging.** The registry is listed a page at a time; each page's enqueues
 *   commit in one atomic operation together with the fan-out's cursor, so a
 *   failure mid-fan-out leaves no page half-enqueued, a retry of the tick
 *   continues from the cursor, and a concurrent duplicate of the same tick
 *   (checked on the record's versionstamp) never enqueues a page twice.
 * - **Missed ticks are skipped, not backfilled.** A minute whose tick never
 *   ran (service down) enqueues nothing later; the next fan-out covers the
 *   slot in progress.
 *
 * @module
 */
import {
  type Charm,
  type CharmRef,
  type CharmState,
  formatCharmRef,
} from "../charm/charm.ts";
import type {
  CharmRefPage,
  IntegrationConfig,
} from "../integrations/integration.ts";
import { fnv1a32 } from "../lib/hash.ts";
import { logger } from "../lib/log.ts";
import type { ServiceDeps } from "../service/deps.ts";
import { readStatesWithRecords } from "../store/charms.ts";
import { fanoutKey, undeliveredKey } from "../store/keys.ts";
import { isTooLargeError } from "../store/kv_util.ts";
import {
  readPageCells,
  type RunSnapshot,
  runSnapshot,
} from "../store/run_snapshot.ts";
import type { EnqueueOptions } from "../queue/queue.ts";
import { runKeyOf, type RunMessage } from "./messages.ts";

/** Length of one cron tick's window. */
export const TICK_MS = 60_000;

/** Enqueues per atomic commit (KV allows more locally, less remotely). */
export const MAX_ENQUEUES_PER_COMMIT = 100;

/** Fan-out records are kept this long (a lower bound). */
export const FANOUT_RECORD_TTL_MS = 24 * 3600 * 1000;

/** Progress of one fan-out, at `fanoutKey(integration, tick, id)`. */
export interface FanoutRecord {
  state: "running" | "done";
  cursor: string | null;
  enqueued: number;
  skipped: number;
  startedAt: number;
  finishedAt: number | null;
}

/** What one fan-out did. */
export interface FanoutResult {
  integration: string;
  tickMs: number;
  /** `true` for the delivery that started this tick's fan-out. */
  claimed: boolean;
  enqueued: number;
  /** Charms passed over: disabled, missing, or not valid for the integration. */
  skipped: number;
}

/** Options for {@linkcode fanout}. */
export interface FanoutOptions {
  integration: string;
  /** The minute tick, epoch ms (a multiple of 60 000). */
  tickMs: number;
  /**
   * Start of the window: the tick itself for a cron tick, or the current time
   * for a fan-out by hand or at startup (it then covers the slot in progress).
   */
  fromMs: number;
  /**
   * Identifies this fan-out among those of the same tick: `"cron"` makes
   * duplicate cron deliveries share one record; a fresh id runs a fan-out by
   * hand even after the cron's.
   */
  id: string;
}

/** The tick (minute start) that contains `ms`. */
export function tickOf(ms: number): number {
  return Math.floor(ms / TICK_MS) * TICK_MS;
}

/** A charm's stable offset within the interval, ms. */
export function offsetMs(
  ref: CharmRef,
  integration: string,
  intervalMs: number,
): number {
  return fnv1a32(`${integration}\n${ref.space}\n${ref.charmId}`) % intervalMs;
}

/**
 * The slots a fan-out covers: multiples of the interval from the slot that
 * contains `fromMs` (or, for a cron tick, the first at or after it) up to the
 * end of the tick.
 */
export function slotsInWindow(
  tickMs: number,
  fromMs: number,
  intervalMs: number,
): number[] {
  const end = tickMs + TICK_MS;
  const first = fromMs === tickMs
    ? Math.ceil(tickMs / intervalMs) * intervalMs
    : Math.floor(fromMs / intervalMs) * intervalMs;
  const slots: number[] = [];
  for (let slot = first; slot < end; slot += intervalMs) slots.push(slot);
  return slots;
}

/**
 * Runs one fan-out for one integration and tick.
 *
 * @throws {RangeError} when the integration is not enabled.
 */
export async function fanout(
  deps: ServiceDeps,
  options: FanoutOptions,
): Promise<FanoutResult> {
  const { kv, policy } = deps;
  const integration = deps.integrations.get(options.integration);
  if (integration === undefined) {
    throw new RangeError(`Integration "${options.integration}" is not enabled`);
  }
  const config = integration.getIntegrationConfig();
  const log = logger("fanout").with({
    integration: integration.id,
    tick: new Date(options.tickMs).toISOString(),
  });
  const key = fanoutKey(integration.id, options.tickMs, options.id);
  const result: FanoutResult = {
    integration: integration.id,
    tickMs: options.tickMs,
    claimed: false,
    enqueued: 0,
    skipped: 0,
  };

  let entry = await kv.get<FanoutRecord>(key);
  if (entry.value === null) {
    const record: FanoutRecord = {
      state: "running",
      cursor: null,
      enqueued: 0,
      skipped: 0,
      startedAt: deps.now(),
      finishedAt: null,
    };
    const claim = await kv.atomic().check(entry)
      .set(key, record, { expireIn: FANOUT_RECORD_TTL_MS }).commit();
    if (claim.ok) {
      result.claimed = true;
      entry = { key, value: record, versionstamp: claim.versionstamp };
    } else {
      entry = await kv.get<FanoutRecord>(key);
    }
  }
  if (entry.value?.state !== "running") {
    log.debug("Fan-out already done by another delivery");
    return result;
  }
  // A `running` record this call did not create belongs to a concurrent
  // duplicate or to a delivery that failed part-way (the cron retries it):
  // help finish it from its cursor; the versionstamp check keeps every page
  // enqueued once.

  const slots = slotsInWindow(
    options.tickMs,
    options.fromMs,
    policy.intervalMs,
  );
  if (slots.length === 0) {
    await kv.set(key, {
      ...entry.value!,
      state: "done",
      finishedAt: deps.now(),
    }, {
      expireIn: FANOUT_RECORD_TTL_MS,
    });
    return result;
  }
  const pageSize = Math.max(
    1,
    Math.floor(MAX_ENQUEUES_PER_COMMIT / slots.length),
  );

  // With a driver that keeps snapshots, each run is enqueued with what its
  // first read would find: the states read here and the page's cells, one
  // more range `list` per page instead of a read per run. Not where runs
  // could not use them: a run that `prepare`s (a token refresh) reads after
  // it.
  const snapshots = deps.queue.keepsSnapshots === true &&
    integration.prepare === undefined;
  const readPage = async (cursor: string | null): Promise<_Page> => {
    const page = await config.fetchCharms(kv, { cursor, limit: pageSize });
    const [entries, cells] = await Promise.all([
      readStatesWithRecords(kv, page.charms),
      snapshots ? readPageCells(kv, page.charms) : null,
    ]);
    return { cursor, page, entries, cells };
  };
  let ahead: Promise<_Page> | null = null;
  while (entry.value !== null && entry.value.state === "running") {
    const { cursor } = entry.value;
    // The page read ahead, if it starts where this fan-out stands (after a
    // lost commit, another delivery may have moved the cursor).
    const early = await ahead?.catch(() => null);
    ahead = null;
    const { page, entries, cells } = early?.cursor === cursor
      ? early
      : await readPage(cursor);
    const now = deps.now();
    const runs: {
      message: RunMessage;
      options: EnqueueOptions;
      snapshot: RunSnapshot | null;
    }[] = [];
    let enqueued = 0;
    let skipped = 0;
    const skipNotes: {
      entry: Deno.KvEntryMaybe<CharmState>;
      why: string | null;
    }[] = [];
    page.charms.forEach((ref, i) => {
      const charm = entries[i]!.charm;
      const stateEntry = entries[i]!.state;
      const state = stateEntry?.value ?? null;
      const why = _skipReason(deps, config, charm, state);
      // A charm skipped for a reason of its own (not disabled or parked, which
      // its state already says) shows why in its state; cleared once it runs.
      const own = why !== null && !state?.disabled && !state?.needsReauth;
      if (state !== null && (state.skipReason ?? null) !== (own ? why : null)) {
        skipNotes.push({ entry: stateEntry, why: own ? why : null });
      }
      if (why !== null) {
        skipped++;
        // Disabled and parked charms are routine (their transition was
        // logged); anything else needs an operator.
        const level = state?.disabled || state?.needsReauth ? "debug" : "warn";
        log[level]("Skipped {charm}: {why}", {
          charm: formatCharmRef(ref),
          why,
        });
        return;
      }
      const offset = offsetMs(ref, integration.id, policy.intervalMs);
      // For the first slot only: the first slot's run changes the state, so
      // the next slot's would be stale (as it would be after a skip note).
      // None of cells with secrets: no copy of them outside their cells.
      const snapshot = cells?.[i] && !state?.skipReason &&
          deps.recipes.get(charm!.recipe)?.secretPaths === undefined
        ? runSnapshot(stateEntry, ...cells[i])
        : null;
      for (const slot of slots) {
        const message: RunMessage = {
          type: "run",
          v: 1,
          space: ref.space,
          charmId: ref.charmId,
          integration: integration.id,
          kind: "scheduled",
          slot,
          attempt: 1,
          enqueuedAt: now,
        };
        runs.push({
          message,
          options: {
            delayMs: Math.max(0, slot + offset - now),
            undeliveredKey: undeliveredKey(ref, runKeyOf(message), 1),
          },
          snapshot: slot === slots[0] ? snapshot : null,
        });
        enqueued++;
      }
    });
    const next: FanoutRecord = {
      ...entry.value,
      cursor: page.cursor,
      enqueued: entry.value.enqueued + enqueued,
      skipped: entry.value.skipped + skipped,
      ...(page.cursor === null
        ? { state: "done" as const, finishedAt: now }
        : {}),
    };
    const commitPage = (withSnapshots: boolean) => {
      const op = kv.atomic().check(entry);
      for (const { message, options, snapshot } of runs) {
        deps.queue.enqueue(
          op,
          message,
          withSnapshots && snapshot !== null
            ? { ...options, snapshot }
            : options,
        );
      }
      return op.set(key, next, { expireIn: FANOUT_RECORD_TTL_MS }).commit();
    };
    // The next page is read while this one commits: the reads do not depend
    // on the commit, and a fan-out's pages would otherwise wait for each
    // other's KV requests one by one (docs/benchmarks.md). Only reads: a
    // lost commit discards it.
    if (page.cursor !== null) {
      ahead = readPage(page.cursor);
      ahead.catch(() => {});
    }
    let commit: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      commit = await commitPage(cells !== null);
    } catch (error) {
      // A snapshot's size is a bound that can undercount (a string V8 keeps
      // at two bytes a character, Latin-1 or not): a page over KV's limits
      // goes without snapshots rather than never.
      if (cells === null || !isTooLargeError(error)) throw error;
      log.debug("A page with snapshots was too large; enqueued without them");
      commit = await commitPage(false);
    }
    if (commit.ok) {
      result.enqueued += enqueued;
      result.skipped += skipped;
    }
    for (const note of skipNotes) {
      // Best effort: a conflicting write (a run's outcome) wins; the next
      // fan-out notes it again.
      await kv.atomic().check(note.entry)
        .set(note.entry.key, { ...note.entry.value!, skipReason: note.why })
        .commit();
    }
    // On a conflict another delivery advanced the cursor: continue from there.
    entry = commit.ok
      ? { key, value: next, versionstamp: commit.versionstamp }
      : await kv.get<FanoutRecord>(key);
  }
  log.info(
    "Fan-out of {integration} enqueued {enqueued} runs over {slots} slot(s), skipped {skipped} charms",
    {
      integration: integration.id,
      enqueued: result.enqueued,
      skipped: result.skipped,
      slots: slots.length,
    },
  );
  return result;
}

/** One page of the registry with each charm's entries. */
interface _Page {
  /** Where the page starts. */
  cursor: string | null;
  page: CharmRefPage;
  entries: Awaited<ReturnType<typeof readStatesWithRecords>>;
  /** Each charm's cells, for snapshots; `null` when not read. */
  cells: Awaited<ReturnType<typeof readPageCells>>;
}

function _skipReason(
  deps: ServiceDeps,
  config: IntegrationConfig,
  charm: Charm | null,
  state: CharmState | null,
): string | null {
  if (charm === null) {
    return "the charm does not exist (create it with POST /api/charms)";
  }
  if (state?.disabled) return "the charm is disabled";
  if (state?.needsReauth) {
    return "the charm needs re-authentication (replace its argument with PUT /api/charms/:space/:charmId/argument)";
  }
  const recipe = deps.recipes.get(charm.recipe);
  if (recipe === undefined) return `recipe "${charm.recipe}" is not registered`;
  const validity = config.isValidIntegrationCharm(charm, recipe);
  return validity.ok ? null : validity.reason;
}

/**
 * Finishes cron fan-outs of this minute and the previous one that a crash
 * left `running`, from their cursors. Called at startup: the pages that never
 * committed are enqueued now (late slots run at once) instead of being lost.
 */
export async function resumeInterruptedFanouts(
  deps: ServiceDeps,
): Promise<FanoutResult[]> {
  const results: FanoutResult[] = [];
  const current = tickOf(deps.now());
  for (const integration of deps.integrations.keys()) {
    for (const tickMs of [current - TICK_MS, current]) {
      const entry = await deps.kv.get<FanoutRecord>(
        fanoutKey(integration, tickMs, "cron"),
      );
      if (entry.value?.state !== "running") continue;
      logger("fanout").warn(
        "Resuming the {integration} fan-out of {tick} that a crash interrupted",
        { integration, tick: new Date(tickMs).toISOString() },
      );
      results.push(
        await fanout(deps, { integration, tickMs, fromMs: tickMs, id: "cron" }),
      );
    }
  }
  return results;
}

/**
 * The run handler: runs one charm for one slot, exactly once in its effects.
 *
 * The steps, and why each is there:
 * 1. **Read once and check for a duplicate.** One `getMany` reads the charm,
 *    its state, lease, run record and cells; the steps below reuse it (a pure
 *    run's first try skips the lease and record: see `_readFirstTry`). A run
 *    is keyed by (charm, integration, slot) or a manual run id. A finished
 *    run, or a delivery of an older attempt than the one recorded, is
 *    dropped: the queue delivers at least once.
 * 2. **Defer or skip.** A live lease held by someone else defers this
 *    delivery: that covers both a concurrent duplicate and a crashed holder.
 *    Then a disabled or parked charm's run is recorded as skipped.
 * 3. **Permit.** `--max-concurrent` runs execute at once in this process; the
 *    permit is released when the handler settles, before the outcome commit.
 * 4. **Claim.** One atomic commit takes the per-charm lease (so two runs of a
 *    charm never overlap, across processes) and marks the run `running`. A
 *    pure recipe's run skips this on its first try (below).
 * 5. **Execute** the integration's `prepare` (a token refresh, say), then the
 *    recipe's stream with the cells (read again only if `prepare` ran: it may
 *    rewrite the argument), all under an `AbortSignal` that fires at the
 *    timeout. Cell writes are buffered in the context.
 * 6. **Record** the outcome in one atomic commit that checks the lease is
 *    still ours: the cells (success only), the charm state and its indexes,
 *    the run record, the service counters, the lease release, and for a
 *    retriable failure the next attempt's enqueue. It goes through
 *    `delivery.commit`, which acknowledges the delivery in the same commit.
 *    A crash before this commit leaves the lease to expire and the message to
 *    be redelivered; a crash after it leaves a finished run that a
 *    redelivery drops.
 *
 * **Pure runs** (`recipe.pure`, no `prepare` hook) take no lease on their
 * first try: the handler runs on the cells as read, and the one outcome
 * commit checks that nothing it read has changed. A conflict re-runs it under
 * a lease. A pure handler has no effects outside its cells (its `fetch`
 * throws), so executing it twice is harmless: only one execution commits.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import {
  type Charm,
  type CharmRef,
  type CharmState,
  formatCharmRef,
  initialCharmState,
} from "../charm/charm.ts";
import type { AnyRecipe, Cell, RunContext } from "../charm/recipe.ts";
import { streamFor } from "../integrations/integration.ts";
import {
  NeedsReauthError,
  NonRetriableError,
  RetryAfterError,
  TimeoutError,
  toError,
} from "../lib/errors.ts";
import { logger } from "../lib/log.ts";
import { type Delivery, directDelivery } from "../queue/queue.ts";
import type { ServiceDeps, TimerId } from "../service/deps.ts";
import {
  CellTooLargeError,
  decodeCell,
  encodeCell,
} from "../store/cell_codec.ts";
import { readRunInputs, writeCharmState } from "../store/charms.ts";
import { runInputsFromSnapshot } from "../store/run_snapshot.ts";
import { writeDeadLetter } from "../store/dead_letters.ts";
import { countRun } from "../store/recent_runs.ts";
import {
  cellKey,
  charmKey,
  charmLeaseKey,
  charmStateKey,
  runKey,
  serviceCounterKey,
  undeliveredKey,
} from "../store/keys.ts";
import { addToCounter, cellSize, MAX_CELL_BYTES } from "../store/kv_util.ts";
import { runKeyOf, type RunMessage } from "./messages.ts";
import { Prefetched } from "./prefetch.ts";

/** What happened to one delivery of a run message. */
export type RunOutcome =
  /** The run succeeded and its effects are committed. */
  | "succeeded"
  /** The attempt failed; the next attempt is enqueued. */
  | "retrying"
  /** The slot failed for good (retries exhausted or non-retriable). */
  | "failed"
  /** This delivery was a duplicate of a finished or newer attempt. */
  | "duplicate"
  /** Another run holds the charm's lease; this delivery was re-enqueued. */
  | "deferred"
  /** The charm is disabled; the run was recorded as skipped. */
  | "skipped"
  /** The message cannot run (charm gone); it was dead-lettered. */
  | "dead-lettered"
  /**
   * The lease expired and another delivery took over; results were dropped
   * and the message was enqueued again, so the run is not lost.
   */
  | "lease-lost"
  /**
   * The argument was replaced while the run wrote its own: the run's writes
   * were dropped and the same attempt was enqueued again, to run on the new
   * argument. Not the charm's failure.
   */
  | "restarted"
  /**
   * The service shut down mid-run: nothing was recorded and the lease was
   * released. The caller must not acknowledge the message, so the queue
   * delivers it again after the restart.
   */
  | "interrupted";

/** The record of one run, at `runKey(charm, run)`. */
export interface RunRecord {
  state: "running" | "retrying" | "succeeded" | "failed" | "skipped";
  attempt: number;
  slot: number;
  integration: string | null;
  startedAt: number | null;
  finishedAt: number | null;
  durationMs: number | null;
  error: string | null;
  /** For `retrying`: when the next attempt is due. */
  retryAt: number | null;
}

/** The per-charm lease, at `charmLeaseKey(charm)`. */
export interface Lease {
  run: string;
  attempt: number;
  owner: string;
  expiresAt: number;
}

/** How often a run waiting for another run of its charm looks again. */
export const DEFER_POLL_MS = 1_000;

/** Extra lease time past the run timeout, to cover the outcome commit. */
export const LEASE_MARGIN_MS = 5_000;

/**
 * How long run records are kept: long enough to recognise any redelivery,
 * retry or catch-up fan-out of the same slot (a lower bound: KV expiry is
 * lazy).
 */
export function runRecordTtlMs(intervalMs: number): number {
  return 3_600_000 + 2 * intervalMs;
}

const FINAL_STATES = new Set<RunRecord["state"]>([
  "succeeded",
  "failed",
  "skipped",
]);

const CLAIM_TRIES = 8;

/**
 * How often one attempt restarts because its argument was replaced mid-run;
 * after that, such an attempt fails (retriably), so a slot whose argument
 * keeps changing still ends.
 */
export const MAX_ARGUMENT_RESTARTS = 3;

/** Two stored cell values are the same (as KV would store them). */
function _sameStored(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Runs one delivery of a run message and records its outcome.
 *
 * Throws only when KV itself fails, so the queue redelivers the message.
 */
export async function runCharm(
  deps: ServiceDeps,
  message: RunMessage,
  delivery: Delivery = directDelivery(deps.kv),
): Promise<RunOutcome> {
  const ref: CharmRef = {
    space: message.space,
    charmId: message.charmId,
  };
  const run = runKeyOf(message);
  const log = logger("run").with({
    charm: formatCharmRef(ref),
    run,
    attempt: message.attempt,
  });

  // One read of everything the run needs, reused by the claim: KV round
  // trips bound throughput (docs/benchmarks.md). The driver may have started
  // it when it claimed the message.
  const prefetched = delivery.prefetched instanceof Prefetched &&
      delivery.prefetched.message === message
    ? await delivery.prefetched.read as RunRead | null
    : null;
  const read = prefetched ?? await _firstRead(deps, ref, run, message);
  // A duplicate needs no permit; a missing charm is dead-lettered below.
  if (read[0] !== null && _isDuplicate(read[3].value, message)) {
    log.debug("Dropped a duplicate delivery");
    return "duplicate";
  }

  return await _claimAndRun(deps, ref, run, message, log, delivery, read);
}

/**
 * Starts a run's first read ahead of its delivery (`handlers/prefetch.ts`),
 * or takes it from the `snapshot` the message was enqueued with
 * (`store/run_snapshot.ts`); resolves to `null` if the read fails, and the
 * delivery reads again.
 */
export function prefetchRun(
  deps: ServiceDeps,
  message: RunMessage,
  snapshot?: unknown,
): Promise<RunRead | null> {
  const ref: CharmRef = { space: message.space, charmId: message.charmId };
  return _firstRead(deps, ref, runKeyOf(message), message, snapshot)
    .catch(() => null);
}

/** The read a delivery starts with: see `_readFirstTry`. */
function _firstRead(
  deps: ServiceDeps,
  ref: CharmRef,
  run: string,
  message: RunMessage,
  snapshot?: unknown,
): Promise<RunRead> {
  return message.attempt === 1 && !_prepares(deps, message)
    ? _readFirstTry(deps, ref, run, message, snapshot)
    : _readRun(deps.kv, ref, run);
}

/**
 * The charm's record (`null`: no such charm), its state, lease, run record
 * and cells, read at once.
 */
type RunRead = [
  Charm | null,
  Deno.KvEntryMaybe<CharmState>,
  Deno.KvEntryMaybe<Lease>,
  Deno.KvEntryMaybe<RunRecord>,
  Deno.KvEntryMaybe<unknown>,
  Deno.KvEntryMaybe<unknown>,
];

async function _readRun(
  kv: Deno.Kv,
  ref: CharmRef,
  run: string,
): Promise<RunRead> {
  const [charm, ...rest] = await kv.getMany<
    [Charm, CharmState, Lease, RunRecord, unknown, unknown]
  >([
    charmKey(ref),
    charmStateKey(ref),
    charmLeaseKey(ref),
    runKey(ref, run),
    cellKey(ref, "argument"),
    cellKey(ref, "result"),
  ]);
  return [charm.value, ...rest] as RunRead;
}

/**
 * The first read of a first attempt. Most such runs find no lease and no run
 * record, and a pure run does not need to look: it reads the state (which
 * carries the record's recipe) and cells (three keys, not six: the KV's
 * per-key cost bounds throughput), or takes them from the fan-out's
 * `snapshot` and reads nothing, and its outcome commit checks the lease and
 * the record absent and every other entry unchanged. If anything differs (a
 * duplicate delivery, a leased run of the charm, a stale snapshot) that
 * commit fails and the claim loop reads all six. Any other run reads the
 * lease and record too, before it decides anything on them (a run whose
 * integration prepares it is never pure, so it reads all six at once instead
 * of coming here).
 */
async function _readFirstTry(
  deps: ServiceDeps,
  ref: CharmRef,
  run: string,
  message: RunMessage,
  snapshot?: unknown,
): Promise<RunRead> {
  const [charm, state, argument, result] =
    runInputsFromSnapshot(ref, snapshot) ??
      await readRunInputs(deps.kv, ref);
  const assumedAbsent = <T>(key: Deno.KvKey): Deno.KvEntryMaybe<T> => ({
    key,
    value: null,
    versionstamp: null,
  });
  // A missing charm is dead-lettered on this read alone.
  const [lease, record] = charm === null || _isPure(deps, charm, message)
    ? [
      assumedAbsent<Lease>(charmLeaseKey(ref)),
      assumedAbsent<RunRecord>(runKey(ref, run)),
    ]
    : await deps.kv.getMany<[Lease, RunRecord]>([
      charmLeaseKey(ref),
      runKey(ref, run),
    ]);
  return [charm, state, lease, record, argument, result];
}

function _isDuplicate(record: RunRecord | null, message: RunMessage): boolean {
  if (record === null) return false;
  if (FINAL_STATES.has(record.state)) return true;
  return record.attempt > message.attempt;
}

async function _claimAndRun(
  deps: ServiceDeps,
  ref: CharmRef,
  run: string,
  message: RunMessage,
  log: Logger,
  delivery: Delivery,
  firstRead: RunRead,
): Promise<RunOutcome> {
  const { kv, policy } = deps;
  let read: RunRead | null = firstRead;
  for (let attempt = 0; attempt < CLAIM_TRIES; attempt++) {
    // A stale first read only makes the commits' checks fail: then re-read.
    read ??= await _readRun(kv, ref, run);
    const current = read;
    read = null;
    const [charm, stateEntry, leaseEntry, recordEntry] = current;
    if (charm === null) {
      await writeDeadLetter(
        kv,
        message,
        `charm ${formatCharmRef(ref)} does not exist`,
        deps.now(),
      );
      log.warn("Dead-lettered a run of {charm}: the charm does not exist", {
        charm: formatCharmRef(ref),
      });
      return "dead-lettered";
    }
    if (_isDuplicate(recordEntry.value, message)) return "duplicate";
    const now = deps.now();
    const state = stateEntry.value ?? initialCharmState();

    const lease = leaseEntry.value;
    if (lease !== null && lease.expiresAt > now) {
      // Someone holds the charm: a concurrent duplicate of this run, a run of
      // another slot, or a crashed process whose lease has not expired yet.
      // (Checked before disabled: a duplicate of a run that is executing must
      // not record it skipped under it.)
      // The same run comes back when the lease ends (the duplicate check then
      // decides); another run polls every second, since the lease's end is a
      // worst case and most runs take milliseconds.
      const waitMs = lease.run === run && lease.attempt === message.attempt
        ? lease.expiresAt - now + 100
        : Math.min(Math.max(lease.expiresAt - now, 250), DEFER_POLL_MS);
      // The copy and this delivery's acknowledgement commit together, if
      // the lease is still the one read (a read taken early, at claim time,
      // may show one since released: then read again).
      const { ok } = await delivery.commit((op) =>
        deps.queue.enqueue(op.check(leaseEntry), message, {
          delayMs: waitMs,
          undeliveredKey: undeliveredKey(ref, run, message.attempt),
        })
      );
      if (!ok) continue;
      log.debug("Deferred {waitMs} ms: the charm is leased by {holder}", {
        waitMs,
        holder: `${lease.run}#${lease.attempt}`,
      });
      return "deferred";
    }

    if (state.disabled || state.needsReauth) {
      // A run enqueued before the charm was parked: skip it like a disabled
      // one. Replacing the argument (the auth) un-parks the charm.
      const why = state.disabled
        ? `charm is disabled${
          state.disabledReason ? `: ${state.disabledReason}` : ""
        }`
        : `charm needs re-authentication${
          state.needsReauthReason ? `: ${state.needsReauthReason}` : ""
        }`;
      const skipped: RunRecord = {
        ..._newRecord(message),
        state: "skipped",
        finishedAt: now,
        error: why,
      };
      // The delivery is acknowledged in the same commit (the kv driver's job).
      const { ok } = await delivery.commit((op) =>
        op.check(recordEntry).check(stateEntry).check(leaseEntry)
          .set(runKey(ref, run), skipped, {
            expireIn: runRecordTtlMs(policy.intervalMs),
          })
      );
      if (!ok) continue;
      log.info("Skipped run: {charm} is {why}", {
        charm: formatCharmRef(ref),
        why: state.disabled ? "disabled" : "waiting for re-authentication",
      });
      return "skipped";
    }

    // The permit bounds executions, not commits: it is released as soon as
    // the handler settles, so outcomes can wait for a group commit while the
    // next runs execute.
    const release = await deps.semaphore.acquire();
    try {
      // A pure run goes without a lease the first time; after a conflict it
      // takes one, so a charm many runs contend for still makes progress.
      const outcome = attempt === 0 && _isPure(deps, charm, message)
        ? await _runOptimistic(deps, ref, run, message, log, delivery, {
          charm,
          read: current,
          release,
        })
        : await _runLeased(deps, ref, run, message, log, delivery, {
          charm,
          read: current,
          release,
        });
      if (outcome !== null) return outcome;
    } finally {
      release();
    }
  }
  throw new Error(
    `Cannot claim run ${run} of charm ${
      formatCharmRef(ref)
    }: too much contention`,
  );
}

/** The lease, state and argument an outcome commit checks. */
type OutcomeRead = [
  Deno.KvEntryMaybe<Lease>,
  Deno.KvEntryMaybe<CharmState>,
  Deno.KvEntryMaybe<unknown> | null,
];

/** What both ways of running get from the claim loop. */
interface Claimable {
  charm: Charm;
  read: RunRead;
  /** Releases the execution permit (idempotent). */
  release: () => void;
}

/** Whether the message's integration prepares its runs (never pure). */
function _prepares(deps: ServiceDeps, message: RunMessage): boolean {
  return message.integration !== null &&
    deps.allIntegrations.get(message.integration)?.prepare !== undefined;
}

/** A run of a pure recipe with no `prepare` hook needs no lease. */
function _isPure(
  deps: ServiceDeps,
  charm: Charm,
  message: RunMessage,
): boolean {
  return deps.recipes.get(charm.recipe)?.pure === true &&
    !_prepares(deps, message);
}

/**
 * Runs under the charm's lease: claim (lease + run record `running`), execute,
 * record the outcome checking the lease is still ours.
 *
 * @returns `null` when the claim lost a race: read again and retry.
 */
async function _runLeased(
  deps: ServiceDeps,
  ref: CharmRef,
  run: string,
  message: RunMessage,
  log: Logger,
  delivery: Delivery,
  { charm, read, release }: Claimable,
): Promise<RunOutcome | null> {
  const { kv, policy } = deps;
  const [, stateEntry, leaseEntry, recordEntry, argEntry, resEntry] = read;
  const now = deps.now();
  const newLease: Lease = {
    run,
    attempt: message.attempt,
    owner: deps.ownerId,
    expiresAt: now + policy.charmExecutionTimeoutMs + LEASE_MARGIN_MS,
  };
  const running: RunRecord = {
    ..._newRecord(message),
    state: "running",
    startedAt: now,
  };
  // Everything was read with one getMany, maybe before the permit: the claim
  // checks the state and the cells unchanged too, so the run starts from
  // what the lease now protects (a disable meanwhile is seen on the re-read,
  // and the run skipped).
  const claim = await kv.atomic()
    .check(leaseEntry)
    .check(recordEntry)
    .check(stateEntry)
    .check(argEntry)
    .check(resEntry)
    .set(charmLeaseKey(ref), newLease)
    .set(runKey(ref, run), running, {
      expireIn: runRecordTtlMs(policy.intervalMs),
    })
    .commit();
  if (!claim.ok) return null;

  log.debug("Started run of {charm}", { charm: formatCharmRef(ref) });
  const execution = await _execute(deps, charm, message, log, {
    cells: [argEntry, resEntry],
    // A pure recipe's handler gets no network on any path, leased or not.
    pure: deps.recipes.get(charm.recipe)?.pure === true,
  });
  release();
  if (!execution.ok && deps.shutdownSignal.aborted) {
    // Not the charm's fault: release the charm and let the redelivery run it.
    await kv.atomic()
      .check({ key: charmLeaseKey(ref), versionstamp: claim.versionstamp })
      .delete(charmLeaseKey(ref))
      .commit();
    log.info(
      "Run of {charm} interrupted by shutdown; it runs again after restart",
      { charm: formatCharmRef(ref) },
    );
    return "interrupted";
  }
  let result = await _finish(deps, charm, ref, execution);
  // The lease keeps other runs off the cells, but not `PUT …/argument`: a
  // run that writes its argument checks the one it started from, so it
  // never overwrites a new argument with one derived from the old.
  let argumentRead = result.execution.ok && "argument" in result.storedCells
    ? result.execution.argumentRead
    : null;

  // The first commit checks the lease the claim wrote and the state the
  // claim read; only a conflict costs a read.
  let known: OutcomeRead | null = [
    {
      key: charmLeaseKey(ref),
      value: newLease,
      versionstamp: claim.versionstamp,
    },
    stateEntry,
    argumentRead,
  ];
  // This attempt enqueued again (a lost lease, a replaced argument).
  const again = (op: Deno.AtomicOperation, copy: RunMessage) =>
    deps.queue.enqueue(op, copy, {
      delayMs: 0,
      undeliveredKey: undeliveredKey(ref, run, message.attempt),
    });
  for (let attempt = 0; attempt < CLAIM_TRIES; attempt++) {
    const [leaseNow, stateNow, argumentNow] = known ??
      await kv.getMany<[Lease, CharmState, unknown]>([
        charmLeaseKey(ref),
        charmStateKey(ref),
        cellKey(ref, "argument"),
      ]);
    known = null;
    if (leaseNow.versionstamp !== claim.versionstamp) {
      // The lease expired mid-run (a stalled process) and another delivery
      // took it. If that was a redelivery of this run, it records the
      // outcome; if it was a run of another slot, nobody would, and this
      // run's record would stay `running` for good. Enqueue this attempt
      // again: a copy of a run that finishes meanwhile is a duplicate.
      await delivery.commit((op) => again(op, message));
      log.warn(
        "Dropped the outcome of {charm}: its lease expired and another run took it; the run goes again",
        { charm: formatCharmRef(ref) },
      );
      return "lease-lost";
    }
    if (
      argumentRead !== null &&
      argumentNow?.versionstamp !== argumentRead.versionstamp
    ) {
      const restarts = message.restarts ?? 0;
      if (_sameStored(argumentNow?.value, argumentRead.value)) {
        // Written again with the same value: the run's writes still follow
        // from it.
        argumentRead = argumentNow;
      } else if (restarts < MAX_ARGUMENT_RESTARTS) {
        // Replaced mid-run (not the charm's fault): drop this run's writes,
        // give the charm back and run the same attempt again, on the new
        // argument. Its record stays `running` for that attempt.
        const { ok } = await delivery.commit((op) => {
          op.check(leaseNow).delete(charmLeaseKey(ref));
          again(op, { ...message, restarts: restarts + 1 });
        });
        if (!ok) continue;
        log.info(
          "The argument of {charm} was replaced during its run; the run's writes were dropped and it runs again",
          { charm: formatCharmRef(ref) },
        );
        return "restarted";
      } else {
        // Replaced during every run: give up this attempt as a retriable
        // failure, so the slot still ends after the retries.
        result = _failed(
          result,
          new Error(
            `The argument was replaced during each of ${
              restarts + 1
            } runs of this attempt; the run's writes were dropped`,
          ),
        );
        argumentRead = null;
      }
    }
    const writes = _outcomeWrites(deps, charm, run, message, result, stateNow);
    const { ok } = await delivery.commit((op) => {
      op.check(leaseNow).check(stateNow).delete(charmLeaseKey(ref));
      if (argumentRead !== null) op.check(argumentRead);
      writes.apply(op);
    });
    if (!ok) continue;
    _logOutcome(log, writes, ref, message, result.execution, policy);
    return writes.outcome;
  }
  // Leave the lease to expire: the redelivered message will run it again.
  throw new Error(
    `Cannot record the outcome of run ${run} of charm ${
      formatCharmRef(ref)
    }: too much contention`,
  );
}

/**
 * Runs a pure recipe without a lease: execute on the cells as read, then one
 * commit that checks nothing the run read has changed (lease, run record,
 * state, cells) and records the outcome. Two deliveries of one run may both
 * execute; only one commits, and a pure handler's execution has no other
 * effect.
 *
 * @returns `null` when the commit's checks failed: read again and retry.
 */
async function _runOptimistic(
  deps: ServiceDeps,
  ref: CharmRef,
  run: string,
  message: RunMessage,
  log: Logger,
  delivery: Delivery,
  { charm, read, release }: Claimable,
): Promise<RunOutcome | null> {
  const [, stateEntry, leaseEntry, recordEntry, argEntry, resEntry] = read;
  const execution = await _execute(deps, charm, message, log, {
    cells: [argEntry, resEntry],
    pure: true,
  });
  release();
  if (!execution.ok && deps.shutdownSignal.aborted) {
    // Nothing was written: the redelivery after the restart runs it.
    log.info(
      "Run of {charm} interrupted by shutdown; it runs again after restart",
      { charm: formatCharmRef(ref) },
    );
    return "interrupted";
  }
  const result = await _finish(deps, charm, ref, execution);
  const writes = _outcomeWrites(deps, charm, run, message, result, stateEntry);
  const { ok } = await delivery.commit((op) => {
    op.check(leaseEntry).check(recordEntry).check(stateEntry)
      .check(argEntry).check(resEntry);
    // An expired lease left by a crashed holder goes with this commit.
    if (leaseEntry.value !== null) op.delete(charmLeaseKey(ref));
    writes.apply(op);
  });
  if (!ok) {
    log.debug("Run of {charm} raced another; running it again", {
      charm: formatCharmRef(ref),
    });
    return null;
  }
  _logOutcome(log, writes, ref, message, result.execution, deps.policy);
  return writes.outcome;
}

function _newRecord(message: RunMessage): RunRecord {
  return {
    state: "running",
    attempt: message.attempt,
    slot: message.slot,
    integration: message.integration,
    startedAt: null,
    finishedAt: null,
    durationMs: null,
    error: null,
    retryAt: null,
  };
}

/** The result of executing a handler (before recording it). */
type Execution =
  | {
    ok: true;
    durationMs: number;
    cells: { argument?: unknown; result?: unknown };
    /** The argument cell the handler started from, as read. */
    argumentRead: Deno.KvEntryMaybe<unknown>;
  }
  | { ok: false; durationMs: number; error: Error };

async function _execute(
  deps: ServiceDeps,
  charm: Charm,
  message: RunMessage,
  log: Logger,
  { cells: cellsRead, pure }: {
    /** The argument and result cells as read with the claim. */
    cells: [Deno.KvEntryMaybe<unknown>, Deno.KvEntryMaybe<unknown>];
    /** A pure recipe's run: no `fetch`, no signer. */
    pure: boolean;
  },
): Promise<Execution> {
  const started = deps.now();
  const fail = (error: unknown): Execution => ({
    ok: false,
    durationMs: deps.now() - started,
    error: toError(error),
  });
  const recipe = deps.recipes.get(charm.recipe);
  if (recipe === undefined) {
    return fail(
      new NonRetriableError(
        `Recipe "${charm.recipe}" is not registered in this service`,
      ),
    );
  }
  const integration = message.integration === null
    ? null
    : deps.allIntegrations.get(message.integration);
  if (integration === undefined) {
    return fail(
      new NonRetriableError(
        `Integration "${message.integration}" does not exist`,
      ),
    );
  }
  const stream = streamFor(integration?.updater ?? null, recipe);
  const handler = stream === null ? undefined : recipe.handlers[stream];
  if (handler === undefined) {
    return fail(
      new NonRetriableError(
        `Recipe "${recipe.name}" has no ${
          integration?.updater ?? "updater"
        } stream to run`,
      ),
    );
  }

  const ref = { space: charm.space, charmId: charm.charmId };
  const controller = new AbortController();
  const onShutdown = () => controller.abort(new Error("Service shutting down"));
  deps.shutdownSignal.addEventListener("abort", onShutdown, { once: true });
  let timer: TimerId | undefined;
  const deadline = new Promise<Execution>((resolve) => {
    timer = deps.timers.setTimeout(() => {
      const error = new TimeoutError(
        `Run timed out after ${deps.policy.charmExecutionTimeoutMs} ms`,
      );
      controller.abort(error);
      resolve(fail(error));
    }, deps.policy.charmExecutionTimeoutMs);
  });
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<Execution>((resolve) => {
    onAbort = () => resolve(fail(controller.signal.reason));
    controller.signal.addEventListener("abort", onAbort, { once: true });
  });

  const opened: { cells?: ReturnType<typeof _bufferedCells> } = {};
  const work = (async (): Promise<Execution> => {
    const prepared = integration?.prepare
      ? await integration.prepare({
        kv: deps.kv,
        env: deps.env,
        now: deps.now,
        fetch: deps.fetch,
        signal: controller.signal,
        secrets: deps.secrets,
        recipe,
      }, charm)
      : undefined;
    // A `prepare` that outlived the deadline must not start the handler.
    controller.signal.throwIfAborted();
    // The cells read with the claim, unless `prepare` ran (it may rewrite
    // the argument: a refreshed token).
    const [argumentEntry, resultEntry] = integration?.prepare
      ? await deps.kv.getMany<[unknown, unknown]>([
        cellKey(ref, "argument"),
        cellKey(ref, "result"),
      ])
      : cellsRead;
    // Secret fields are sealed in KV; the handler sees them in plaintext.
    const [storedArgument, storedResult] = await Promise.all([
      decodeCell(deps.secrets, recipe, ref, "argument", argumentEntry.value),
      decodeCell(deps.secrets, recipe, ref, "result", resultEntry.value),
    ]);
    const argument = recipe.argumentSchema.safeParse(storedArgument);
    if (!argument.success) {
      throw new NonRetriableError(
        `The argument cell no longer matches recipe "${recipe.name}"`,
      );
    }
    controller.signal.throwIfAborted();
    const cells = _bufferedCells(
      argument.data,
      storedResult ?? recipe.initialResult(argument.data),
    );
    opened.cells = cells;
    let charmLogger: Logger | undefined;
    const ctx: RunContext<unknown, unknown> = {
      space: charm.space,
      charmId: charm.charmId,
      integration: message.integration,
      slot: message.slot,
      attempt: message.attempt,
      argument: cells.argument,
      result: cells.result,
      signal: controller.signal,
      fetch: pure ? _pureFetch(recipe.name) : deps.fetch,
      // Made on first use: most handlers never log.
      get logger() {
        return charmLogger ??= logger("charm").with({
          charm: formatCharmRef(ref),
        });
      },
      set logger(replaced) {
        charmLogger = replaced;
      },
      now: deps.now,
      prepared,
      egress: deps.egress,
      signer: pure ? null : deps.signer,
    };
    await handler(ctx);
    return {
      ok: true,
      durationMs: deps.now() - started,
      cells: cells.written(),
      argumentRead: argumentEntry,
    };
  })().catch(fail);

  try {
    // The first to settle wins; a handler that ignores the signal keeps
    // running in the background, but its buffered writes are discarded.
    return await Promise.race([work, deadline, aborted]);
  } finally {
    opened.cells?.close();
    if (timer !== undefined) deps.timers.clearTimeout(timer);
    deps.shutdownSignal.removeEventListener("abort", onShutdown);
    // Tell a handler still going in the background (it ignored the signal)
    // to stop; the race is over, so our own listener goes first.
    controller.signal.removeEventListener("abort", onAbort!);
    if (!controller.signal.aborted) controller.abort(RUN_FINISHED);
    log.debug("Handler settled");
  }
}

/** The abort reason a run's signal gets when its handler has settled. */
const RUN_FINISHED = new Error("Run finished");

/** A pure recipe's `fetch`: its runs may execute twice, so no effects. */
function _pureFetch(recipe: string): typeof fetch {
  return () =>
    Promise.reject(
      new NonRetriableError(
        `Recipe "${recipe}" is pure: it cannot call fetch (remove \`pure: true\` to use the network)`,
      ),
    );
}

function _bufferedCells(argument: unknown, result: unknown) {
  let closed = false;
  const written: { argument?: unknown; result?: unknown } = {};
  const values = { argument, result };
  const cell = (name: "argument" | "result"): Cell<unknown> => ({
    get: () => structuredClone(values[name]),
    set(value) {
      if (closed) {
        throw new Error(`Cannot write the ${name} cell: the run has ended`);
      }
      values[name] = structuredClone(value);
      written[name] = values[name];
    },
  });
  return {
    argument: cell("argument"),
    result: cell("result"),
    written: () => ({ ...written }),
    close: () => {
      closed = true;
    },
  };
}

/** Validates written cells against the recipe; returns an error or null. */
function _checkCells(
  recipe: AnyRecipe | undefined,
  cells: { argument?: unknown; result?: unknown },
): Error | null {
  if (recipe === undefined) return null;
  for (const name of ["argument", "result"] as const) {
    if (!(name in cells)) continue;
    const schema = name === "argument"
      ? recipe.argumentSchema
      : recipe.resultSchema;
    const parsed = schema.safeParse(cells[name]);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const path = [name, ...(issue?.path ?? [])].join(".");
      return new NonRetriableError(
        `Recipe "${recipe.name}" wrote an invalid ${path}: ${
          issue?.message ?? "invalid"
        }`,
      );
    }
    const size = cellSize(cells[name]);
    if (size > MAX_CELL_BYTES) {
      return new NonRetriableError(
        `Recipe "${recipe.name}" wrote a ${size}-byte ${name} cell; the limit is ${MAX_CELL_BYTES} bytes`,
      );
    }
  }
  return null;
}

/** An execution checked and ready to store. */
interface Finished {
  /** A success whose cells fail the recipe's schemas becomes a failure. */
  execution: Execution;
  /** The written cells as stored: secret fields sealed. */
  storedCells: { argument?: unknown; result?: unknown };
}

async function _finish(
  deps: ServiceDeps,
  charm: Charm,
  ref: CharmRef,
  execution: Execution,
): Promise<Finished> {
  // The charm as the claim read it (its recipe cannot change).
  const recipe = deps.recipes.get(charm.recipe);
  if (execution.ok) {
    const invalid = _checkCells(recipe, execution.cells);
    if (invalid !== null) {
      execution = {
        ok: false,
        durationMs: execution.durationMs,
        error: invalid,
      };
    }
  }
  // What is stored: secret fields sealed (the checks above saw plaintext).
  const storedCells: Finished["storedCells"] = {};
  if (execution.ok && recipe !== undefined) {
    try {
      for (const [name, value] of Object.entries(execution.cells)) {
        const cell = name as "argument" | "result";
        storedCells[cell] = await encodeCell(
          deps.secrets,
          recipe,
          ref,
          cell,
          value,
        );
      }
    } catch (error) {
      // Too large once sealed: the same output would be, every retry.
      if (!(error instanceof CellTooLargeError)) throw error;
      return _failed(
        { execution, storedCells: {} },
        new NonRetriableError(`Recipe "${recipe.name}" wrote ${error.message}`),
      );
    }
  }
  return { execution, storedCells };
}

/** `finished` turned into a failure with `error`, writing no cell. */
function _failed(finished: Finished, error: Error): Finished {
  return {
    execution: {
      ok: false,
      durationMs: finished.execution.durationMs,
      error,
    },
    storedCells: {},
  };
}

/** An outcome's writes, computed once and added to each commit attempt. */
interface OutcomeWrites {
  outcome: RunOutcome;
  before: CharmState;
  after: CharmState;
  apply(op: Deno.AtomicOperation): void;
}

/**
 * The outcome of a finished execution against the charm state `stateEntry`:
 * the cells (success only), the charm state and its indexes, the run record,
 * the service counters, and for a retriable failure the next attempt's
 * enqueue. The caller adds its checks and the lease release.
 */
function _outcomeWrites(
  deps: ServiceDeps,
  charm: Charm,
  run: string,
  message: RunMessage,
  { execution, storedCells }: Finished,
  stateEntry: Deno.KvEntryMaybe<CharmState>,
): OutcomeWrites {
  const { policy } = deps;
  const now = deps.now();
  const ref: CharmRef = { space: charm.space, charmId: charm.charmId };
  const before = stateEntry.value ?? initialCharmState();
  const timed = _withTiming(before, execution.durationMs, now);
  const ttl = { expireIn: runRecordTtlMs(policy.intervalMs) };
  const base: RunRecord = {
    ..._newRecord(message),
    startedAt: now - execution.durationMs,
    finishedAt: now,
    durationMs: execution.durationMs,
  };
  const counter = (op: Deno.AtomicOperation, name: "Successes" | "Failures") =>
    addToCounter(
      addToCounter(op, serviceCounterKey(`total${name}`), 1),
      serviceCounterKey("totalCharmsProcessed"),
      1,
    );

  if (execution.ok) {
    const after: CharmState = {
      ...timed,
      consecutiveFailures: 0,
      totalExecutions: before.totalExecutions + 1,
      totalSuccesses: before.totalSuccesses + 1,
    };
    return {
      outcome: "succeeded",
      before,
      after,
      apply(op) {
        for (const [name, value] of Object.entries(storedCells)) {
          op.set(cellKey(ref, name as "argument" | "result"), value);
        }
        op.set(runKey(ref, run), { ...base, state: "succeeded" }, ttl);
        counter(op, "Successes");
        countRun(op, now, "succeeded");
        writeCharmState(op, charm, stateEntry.value, after);
      },
    };
  }

  const error = execution.error;
  const errorText = `${error.name}: ${error.message}`.slice(0, 2000);
  const retriable = !(error instanceof NonRetriableError);
  const withError = {
    ...timed,
    lastError: errorText,
    lastErrorTimestamp: now,
  };
  if (retriable && message.attempt <= policy.maxRetries) {
    const delayMs = retryDelayMs(error, message.attempt, policy, deps.random);
    // A new attempt starts with no restarts.
    const { restarts: _restarts, ...first } = message;
    const next: RunMessage = { ...first, attempt: message.attempt + 1 };
    return {
      outcome: "retrying",
      before,
      after: withError,
      apply(op) {
        op.set(runKey(ref, run), {
          ...base,
          state: "retrying",
          attempt: next.attempt,
          error: errorText,
          retryAt: now + delayMs,
        }, ttl);
        deps.queue.enqueue(op, next, {
          delayMs,
          undeliveredKey: undeliveredKey(ref, run, next.attempt),
        });
        writeCharmState(op, charm, stateEntry.value, withError);
      },
    };
  }

  let after: CharmState;
  if (error instanceof NeedsReauthError) {
    // The user has to act, not the service: park the charm (the fan-out and
    // this handler skip it until its argument is replaced) without counting
    // toward being disabled.
    after = {
      ...withError,
      totalExecutions: before.totalExecutions + 1,
      totalFailures: before.totalFailures + 1,
      needsReauth: true,
      needsReauthReason: error.message.slice(0, 2000),
    };
  } else {
    const consecutiveFailures = before.consecutiveFailures + 1;
    const disable = consecutiveFailures >= policy.maxConsecutiveFailures;
    after = {
      ...withError,
      consecutiveFailures,
      totalExecutions: before.totalExecutions + 1,
      totalFailures: before.totalFailures + 1,
      ...(disable && !before.disabled
        ? {
          disabled: true,
          disabledReason: `${
            _count(consecutiveFailures, "consecutive failure")
          }; last: ${errorText}`,
        }
        : {}),
    };
  }
  return {
    outcome: "failed",
    before,
    after,
    apply(op) {
      op.set(
        runKey(ref, run),
        { ...base, state: "failed", error: errorText },
        ttl,
      );
      counter(op, "Failures");
      countRun(op, now, "failed");
      writeCharmState(op, charm, stateEntry.value, after);
    },
  };
}

function _withTiming(
  state: CharmState,
  durationMs: number,
  now: number,
): CharmState {
  const attempts = state.totalAttempts;
  return {
    ...state,
    lastExecuted: now,
    lastExecutionTimeMs: durationMs,
    avgExecutionTimeMs: (state.avgExecutionTimeMs * attempts + durationMs) /
      (attempts + 1),
    minExecutionTimeMs: Math.min(
      state.minExecutionTimeMs ?? durationMs,
      durationMs,
    ),
    maxExecutionTimeMs: Math.max(
      state.maxExecutionTimeMs ?? durationMs,
      durationMs,
    ),
    totalAttempts: attempts + 1,
  };
}

/** `1 attempt`, `3 attempts`. */
function _count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function _logOutcome(
  log: Logger,
  { outcome, before, after }: OutcomeWrites,
  ref: CharmRef,
  message: RunMessage,
  execution: Execution,
  policy: ServiceDeps["policy"],
): void {
  const props = {
    charm: formatCharmRef(ref),
    durationMs: execution.durationMs,
    error: after.lastError,
    consecutiveFailures: after.consecutiveFailures,
  };
  if (outcome === "succeeded") {
    log.info("Run of {charm} succeeded in {durationMs} ms", props);
  } else if (outcome === "retrying") {
    log.warn(
      "Run of {charm} failed (attempt {attempt} of {maxAttempts}), retrying: {error}",
      {
        ...props,
        attempt: message.attempt,
        maxAttempts: policy.maxRetries + 1,
      },
    );
  } else {
    log.error(
      "Run of {charm} failed for good after {attempts}: {error}",
      {
        ...props,
        attempt: message.attempt,
        attempts: _count(message.attempt, "attempt"),
      },
    );
  }
  if (after.needsReauth && !before.needsReauth) {
    log.error(
      "{charm} needs re-authentication; it is parked until its argument is replaced: {error}",
      props,
    );
  }
  if (after.disabled && !before.disabled) {
    log.error(
      "Disabled {charm} after {failures}; last error: {error}",
      {
        ...props,
        failures: _count(after.consecutiveFailures, "consecutive failure"),
      },
    );
  }
}

/**
 * The delay before attempt `attempt + 1`: a `Retry-After` the handler
 * surfaced, else exponential backoff (base × 2^(attempt-1), capped) with
 * jitter in [50%, 100%] so retries of many charms do not stampede.
 */
export function retryDelayMs(
  error: Error,
  attempt: number,
  policy: Pick<ServiceDeps["policy"], "retryBaseDelayMs" | "retryMaxDelayMs">,
  random: () => number,
): number {
  if (error instanceof RetryAfterError) {
    return Math.min(error.retryAfterMs, 24 * 3600 * 1000);
  }
  const exponential = Math.min(
    policy.retryMaxDelayMs,
    policy.retryBaseDelayMs * 2 ** (attempt - 1),
  );
  return Math.round(exponential * (0.5 + 0.5 * random()));
}

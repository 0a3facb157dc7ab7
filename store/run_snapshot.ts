/**
 * Run snapshots: what a run's first read would find, read by the fan-out that
 * enqueues the run, so the run reads nothing.
 *
 * A pure run's first try reads three keys (its state and both cells,
 * `readRunInputs`), and on a local KV that read is a third of the KV work a
 * run costs. The fan-out has just read each charm's state for its own
 * decisions; with one more range `list` per page it has the cells too. The
 * `kv` queue driver keeps that snapshot with the job and hands it to the run
 * when it claims the job (`queue/queue.ts` `Prefetch`).
 *
 * A snapshot is only an early read, like any read before a commit: the run's
 * commits check every versionstamp in it, so one gone stale (the argument
 * replaced after the fan-out, say) makes that check fail, and the run reads
 * again and runs on what it finds (`handlers/run_charm.ts`). It carries no
 * keys (the run rebuilds them from the message: keys are most of a small
 * snapshot's bytes), and it is kept only for the first try of the first slot
 * a fan-out enqueues, only up to {@linkcode MAX_SNAPSHOT_BYTES}, and never of
 * cells with secrets or for a run that `prepare`s (the fan-out decides).
 *
 * @module
 */
import type { Charm, CharmRef, CharmState } from "../charm/charm.ts";
import { isBusyError } from "./busy_retry.ts";
import { recordOf, type RunInputs } from "./charms.ts";
import { cellKey, charmStateKey } from "./keys.ts";
import { keyId, serializedSizeBound } from "./kv_util.ts";

/** An entry as read, without its key. */
export interface SnapshotEntry<T> {
  value: T | null;
  versionstamp: string | null;
}

/** A charm's state and both cells, as read for a run enqueued with them. */
export interface RunSnapshot {
  state: SnapshotEntry<CharmState>;
  argument: SnapshotEntry<unknown>;
  result: SnapshotEntry<unknown>;
}

/**
 * The most a snapshot may hold, bytes, as `serializedSizeBound` counts them: a
 * fan-out page enqueues 100 runs in one commit, and KV takes 800 KiB per
 * commit. A charm with bigger cells runs as before, reading them itself. (The
 * count can be half the truth for a Latin-1 string V8 keeps at two bytes a
 * character; a page that goes over KV's limits that way commits without its
 * snapshots, `handlers/fanout.ts`.)
 */
export const MAX_SNAPSHOT_BYTES = 4096;

const VERSIONSTAMP = /^[0-9a-f]{20}$/;

/**
 * The snapshot of one charm's entries, or `null` when a run could not use
 * it: no state, a state without its record's copy (the run must read the
 * record), or too big.
 */
export function runSnapshot(
  state: Deno.KvEntryMaybe<CharmState>,
  argument: Deno.KvEntryMaybe<unknown>,
  result: Deno.KvEntryMaybe<unknown>,
): RunSnapshot | null {
  if (state.value?.record === undefined) return null;
  const bytes = serializedSizeBound(state.value) +
    serializedSizeBound(argument.value) + serializedSizeBound(result.value);
  if (bytes > MAX_SNAPSHOT_BYTES) return null;
  return {
    state: { value: state.value, versionstamp: state.versionstamp },
    argument: { value: argument.value, versionstamp: argument.versionstamp },
    result: { value: result.value, versionstamp: result.versionstamp },
  };
}

/**
 * A run's inputs (`readRunInputs`) from a snapshot, with their keys; `null`
 * when `snapshot` is not one a run can use (absent, or not of this shape: a
 * job written by another version, say). Then the run reads for itself.
 */
export function runInputsFromSnapshot(
  ref: CharmRef,
  snapshot: unknown,
): RunInputs | null {
  if (!_isSnapshot(snapshot)) return null;
  const charm: Charm | null = recordOf(ref, snapshot.state.value);
  if (charm === null) return null;
  return [
    charm,
    _entry(charmStateKey(ref), snapshot.state),
    _entry(cellKey(ref, "argument"), snapshot.argument),
    _entry(cellKey(ref, "result"), snapshot.result),
  ];
}

function _entry<T>(
  key: Deno.KvKey,
  { value, versionstamp }: SnapshotEntry<T>,
): Deno.KvEntryMaybe<T> {
  return versionstamp === null
    ? { key, value: null, versionstamp: null }
    : { key, value: value as T, versionstamp };
}

function _isSnapshot(value: unknown): value is RunSnapshot {
  if (typeof value !== "object" || value === null) return false;
  const { state, argument, result } = value as Record<string, unknown>;
  return _isEntry(state) && _isEntry(argument) && _isEntry(result) &&
    typeof (state as SnapshotEntry<unknown>).value === "object";
}

function _isEntry(value: unknown): value is SnapshotEntry<unknown> {
  if (typeof value !== "object" || value === null) return false;
  const { versionstamp } = value as Record<string, unknown>;
  return "value" in value &&
    (versionstamp === null ||
      (typeof versionstamp === "string" && VERSIONSTAMP.test(versionstamp)));
}

/**
 * Both cells of each of `refs` (given in key order) by one range `list`, or
 * `null` when the range also holds other charms' cells (charms between them
 * that are not on this page: reading those could cost more than it saves) or
 * another process holds the SQLite file's lock (`list` is not retried).
 * A cell the range does not hold is absent.
 */
export async function readPageCells(
  kv: Deno.Kv,
  refs: readonly CharmRef[],
): Promise<[Deno.KvEntryMaybe<unknown>, Deno.KvEntryMaybe<unknown>][] | null> {
  if (refs.length === 0) return [];
  // Each cell starts absent; the range fills in those it holds.
  const cells: Deno.KvEntryMaybe<unknown>[] = [];
  const slots = new Map<string, number>();
  for (const ref of refs) {
    for (const name of ["argument", "result"] as const) {
      const key = cellKey(ref, name);
      slots.set(keyId(key), cells.length);
      cells.push({ key, value: null, versionstamp: null });
    }
  }
  try {
    for await (
      const entry of kv.list({
        start: cells[0]!.key,
        end: [...cells.at(-1)!.key, ""],
        // One more than the page's own: any other charm's cell shows.
      }, { limit: cells.length + 1 })
    ) {
      const slot = slots.get(keyId(entry.key));
      if (slot === undefined) return null;
      cells[slot] = entry;
    }
  } catch (error) {
    if (isBusyError(error)) return null;
    throw error;
  }
  return refs.map((_, i) => [cells[2 * i]!, cells[2 * i + 1]!]);
}

/**
 * Group commit: many handlers' outcome commits in one atomic operation.
 *
 * On a local KV every commit is a write transaction on the KV's one SQLite
 * thread, and on a file an `fsync`: one commit for many finished jobs is
 * what lets the `kv` driver outrun the native queue (docs/benchmarks.md).
 * The committer commits one group at a time; the parts that arrive while a
 * group commits form the next one, so groups grow with the load and a lone
 * part waits for nobody.
 *
 * Two rules keep a group equivalent to its parts committed one by one:
 * - **No part sees another's writes.** An atomic operation evaluates every
 *   check before any mutation, so two parts that both check a charm's cells
 *   and both write them would both pass: a lost update. A part that checks or
 *   writes a key another part of the group writes (or writes a key another
 *   checks) waits for the next group. Sums are exempt: they commute.
 * - **Each part gets its own result.** If any check in a group fails, the
 *   parts are committed one by one, so only the part whose check failed sees
 *   `ok: false`.
 *
 * A group stays under KV's limits by its parts (`MAX_GROUP`) and their checks
 * (`maxChecks`: 100 on a local KV, 10 over KV Connect); when KV refuses one
 * anyway (too many mutations or bytes), the groups get smaller.
 *
 * @module
 */
import { toError } from "../lib/errors.ts";
import { logger } from "../lib/log.ts";
import { isTooLargeError, keyId, LOCAL_MAX_CHECKS } from "../store/kv_util.ts";
import type { BuildCommit, CommitResult } from "./queue.ts";

/**
 * Most parts in one group commit: a claim of the `kv` driver
 * (`MAX_CLAIM_BATCH`), whose pure runs check five keys each (100 checks).
 */
export const MAX_GROUP = 20;

/**
 * How long a group waits for parts that are about to arrive, ms. At 3 ms a
 * claimed batch's outcomes mostly share one commit (0.12 commits per run,
 * not 0.16, at 2,000 pure runs): fewer writes for the one SQLite thread,
 * and runs keep starting meanwhile (docs/benchmarks.md).
 */
export const COALESCE_MS = 3;

/** KV sums wrap at 2^64 (a decrement is a sum of its two's complement). */
const U64_MASK = (1n << 64n) - 1n;

/** Options for {@linkcode groupCommitter}. */
export interface GroupCommitOptions {
  /** Most parts in one group. */
  maxGroup?: number;
  /**
   * Most checks in one group: the KV's limit per atomic operation (default
   * `LOCAL_MAX_CHECKS`; KV Connect takes 10). A part with more commits alone.
   */
  maxChecks?: number;
  /**
   * How many parts are about to arrive (handlers still running); while any
   * are, a group not yet full waits up to `coalesceMs` for them.
   */
  coming?: () => number;
  coalesceMs?: number;
}

/** Commits parts in groups; see the module doc. */
export interface GroupCommitter {
  /** Commits what `build` adds, in the next group that can take it. */
  commit(build: BuildCommit): Promise<CommitResult>;
  /** Parts waiting for a group (the one committing not included). */
  readonly waiting: number;
}

/** Builds a committer over `kv`. */
export function groupCommitter(
  kv: Deno.Kv,
  options: GroupCommitOptions = {},
): GroupCommitter {
  const log = logger("queue", "group");
  const waiting: _Part[] = [];
  const coming = options.coming ?? (() => 0);
  const coalesceMs = options.coalesceMs ?? COALESCE_MS;
  let committing = false;
  let limit = options.maxGroup ?? MAX_GROUP;
  const maxChecks = options.maxChecks ?? LOCAL_MAX_CHECKS;
  let arrived: (() => void) | null = null;

  async function flush(): Promise<void> {
    committing = true;
    try {
      while (waiting.length > 0) {
        // Parts that are about to arrive make a bigger group for the same
        // commit: wait for them, briefly.
        const until = performance.now() + coalesceMs;
        while (
          waiting.length < limit && coming() > 0 && performance.now() < until
        ) {
          await new Promise<void>((resolve) => {
            // What is left of the window: an arrival that wakes this loop
            // must not restart it.
            const timer = setTimeout(
              done,
              Math.max(0, until - performance.now()),
            );
            arrived = done;
            function done() {
              clearTimeout(timer);
              arrived = null;
              resolve();
            }
          });
        }
        await commitGroup(_takeGroup(waiting, limit, maxChecks));
      }
    } finally {
      committing = false;
    }
  }

  async function commitGroup(parts: _Part[]): Promise<void> {
    if (parts.length > 1) {
      let op: Deno.AtomicOperation | null = kv.atomic();
      try {
        // Sums to one key (the service counters every run adds to) go in as
        // one mutation: they commute, and KV's per-mutation work is on this
        // thread.
        const sums = new Map<string, { key: Deno.KvKey; total: bigint }>();
        for (const part of parts) part.recorded.replay(op, sums);
        for (const { key, total } of sums.values()) {
          op.sum(key, total & U64_MASK);
        }
      } catch {
        // KV refuses a part as built (a negative sum, say): it fails alone,
        // below, and the others commit.
        op = null;
      }
      if (op !== null) {
        try {
          const result = await op.commit();
          if (result.ok) {
            for (const part of parts) part.resolve(result);
            return;
          }
          // A check failed in some part: commit each alone, below.
        } catch (error) {
          // Too large for one operation: smaller groups from now on. (A KV
          // failure is reported by the parts' own commits.)
          if (isTooLargeError(error)) {
            limit = Math.max(1, Math.floor(parts.length / 2));
            log.debug(
              "A group of {parts} was too large; groups of {limit} now: {error}",
              {
                parts: parts.length,
                limit,
                error: toError(error).message,
              },
            );
          }
        }
      }
    }
    for (const part of parts) {
      try {
        const op = kv.atomic();
        part.recorded.replay(op);
        part.resolve(await op.commit());
      } catch (error) {
        part.reject(error);
      }
    }
  }

  return {
    commit(build) {
      const recorded = new RecordedOperation();
      // A build that throws fails its caller alone, before joining a group
      // (a negative sum, say: KV checks values as they are recorded).
      build(recorded as unknown as Deno.AtomicOperation);
      return new Promise((resolve, reject) => {
        waiting.push({ recorded, resolve, reject });
        if (!committing) {
          flush().catch((error) => {
            // Every part settles in commitGroup; this is a bug if it happens.
            log.error("Group commit stopped: {error}", {
              error: toError(error).message,
            });
          });
        } else arrived?.();
      });
    },
    get waiting() {
      return waiting.length;
    },
  };
}

/** One waiting outcome commit. */
interface _Part {
  recorded: RecordedOperation;
  resolve(result: CommitResult): void;
  reject(error: unknown): void;
}

/**
 * Takes from `waiting`, in order, up to `limit` parts with at most
 * `maxChecks` checks between them that do not touch each other's writes; the
 * others stay for the next group.
 */
function _takeGroup(
  waiting: _Part[],
  limit: number,
  maxChecks: number,
): _Part[] {
  const group: _Part[] = [];
  const written = new Set<string>();
  const read = new Set<string>();
  let checks = 0;
  let i = 0;
  while (i < waiting.length && group.length < limit) {
    const { recorded } = waiting[i]!;
    const skip = group.length > 0 &&
      (checks + recorded.checkCount > maxChecks ||
        _meets(recorded.checked, written) ||
        _meets(recorded.written, written) ||
        _meets(recorded.written, read));
    if (skip) {
      i++;
      continue;
    }
    checks += recorded.checkCount;
    group.push(waiting.splice(i, 1)[0]!);
    for (const key of recorded.written) written.add(key);
    for (const key of recorded.checked) read.add(key);
  }
  return group;
}

function _meets(keys: Set<string>, other: Set<string>): boolean {
  for (const key of keys) if (other.has(key)) return true;
  return false;
}

/**
 * Records what a handler adds to an atomic operation, to replay it into a
 * real one (alone or with others), with the keys it checks and writes.
 * Implements the methods of `Deno.AtomicOperation` that only add to it.
 */
export class RecordedOperation {
  readonly checked = new Set<string>();
  /** Keys set or deleted (sums excluded: they commute). */
  readonly written = new Set<string>();
  // Kept as data, not closures, and replayed with one call each: a run's
  // outcome adds about fifteen of them, and this runs for every run.
  #checks: Deno.AtomicCheck[] = [];
  #mutations: Deno.KvMutation[] = [];
  /** `keyId` of each mutation's key, in step with `#mutations`. */
  #ids: string[] = [];
  #enqueues: Parameters<Deno.AtomicOperation["enqueue"]>[] = [];

  /** Checks recorded (a key checked twice counts twice, as KV counts it). */
  get checkCount(): number {
    return this.#checks.length;
  }

  check(...checks: Deno.AtomicCheck[]): this {
    for (const check of checks) {
      this.checked.add(keyId(check.key));
      this.#checks.push(check);
    }
    return this;
  }

  mutate(...mutations: Deno.KvMutation[]): this {
    for (const mutation of mutations) this.#add(mutation);
    return this;
  }

  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    return this.#add(
      options?.expireIn === undefined
        ? { type: "set", key, value }
        : { type: "set", key, value, expireIn: options.expireIn },
    );
  }

  delete(key: Deno.KvKey): this {
    return this.#add({ type: "delete", key });
  }

  sum(key: Deno.KvKey, n: bigint): this {
    return this.#add({ type: "sum", key, value: new Deno.KvU64(n) });
  }

  min(key: Deno.KvKey, n: bigint): this {
    return this.#add({ type: "min", key, value: new Deno.KvU64(n) });
  }

  max(key: Deno.KvKey, n: bigint): this {
    return this.#add({ type: "max", key, value: new Deno.KvU64(n) });
  }

  #add(mutation: Deno.KvMutation): this {
    const id = keyId(mutation.key);
    if (mutation.type !== "sum") this.written.add(id);
    this.#mutations.push(mutation);
    this.#ids.push(id);
    return this;
  }

  enqueue(
    value: unknown,
    options?: Parameters<Deno.AtomicOperation["enqueue"]>[1],
  ): this {
    this.#enqueues.push([value, options]);
    return this;
  }

  commit(): never {
    throw new Error("A delivery's operation is committed by its driver");
  }

  /**
   * Adds the recorded checks, mutations and enqueues to `op`; with `sums`,
   * adds the sums there instead (by key), for the caller to add up.
   */
  replay(
    op: Deno.AtomicOperation,
    sums?: Map<string, { key: Deno.KvKey; total: bigint }>,
  ): void {
    op.check(...this.#checks);
    if (sums === undefined) {
      op.mutate(...this.#mutations);
    } else {
      this.#mutations.forEach((mutation, i) => {
        const id = this.#ids[i]!;
        if (mutation.type !== "sum") {
          // KV applies mutations in order: sums to this key that came before
          // go in before it (a sum then a delete leaves the key deleted).
          const pending = sums.get(id);
          if (pending !== undefined) {
            op.sum(pending.key, pending.total & U64_MASK);
            sums.delete(id);
          }
          op.mutate(mutation);
          return;
        }
        const sum = sums.get(id);
        const value = (mutation.value as Deno.KvU64).value;
        if (sum === undefined) {
          sums.set(id, { key: mutation.key, total: value });
        } else sum.total += value;
      });
    }
    for (const [value, options] of this.#enqueues) op.enqueue(value, options);
  }
}

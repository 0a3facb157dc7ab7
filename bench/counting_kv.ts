/**
 * A `Deno.Kv` wrapper that counts the operations the service sends to KV, so
 * the benchmark can report KV operations per run.
 *
 * Counted, per call: `get`, `getMany`, `list` (one per listing, however many
 * pages it reads), `commit` of an atomic operation, and the one-shot writes
 * `set`, `delete` and `enqueue` (each a commit of its own). `listenQueue`,
 * `watch` and `close` are passed through uncounted.
 *
 * @module
 */

/** Operation counts, by kind. */
export interface KvOpCounts {
  get: number;
  getMany: number;
  list: number;
  commit: number;
  set: number;
  delete: number;
  enqueue: number;
}

/** Reads are `get`/`getMany`/`list` calls; writes are commits of any kind. */
export function totalOps(counts: KvOpCounts): {
  reads: number;
  writes: number;
  total: number;
} {
  const reads = counts.get + counts.getMany + counts.list;
  const writes = counts.commit + counts.set + counts.delete + counts.enqueue;
  return { reads, writes, total: reads + writes };
}

/** A fresh zeroed count. */
export function zeroCounts(): KvOpCounts {
  return {
    get: 0,
    getMany: 0,
    list: 0,
    commit: 0,
    set: 0,
    delete: 0,
    enqueue: 0,
  };
}

const COUNTED = new Set<keyof KvOpCounts>([
  "get",
  "getMany",
  "list",
  "set",
  "delete",
  "enqueue",
]);

/**
 * Wraps `kv` so every counted call adds to `counts`. Methods run on the real
 * object (its private fields need `this` to be the target); an atomic
 * operation's own `commit` counts its commits.
 */
export function countingKv(
  kv: Deno.Kv,
  counts: KvOpCounts = zeroCounts(),
): { kv: Deno.Kv; counts: KvOpCounts } {
  const proxy = new Proxy(kv, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property === "atomic") {
        return () => _countingAtomic(target.atomic(), counts);
      }
      if (COUNTED.has(property as keyof KvOpCounts)) {
        const name = property as keyof KvOpCounts;
        return (...args: unknown[]) => {
          counts[name]++;
          return value.apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
  return { kv: proxy, counts };
}

function _countingAtomic(
  op: Deno.AtomicOperation,
  counts: KvOpCounts,
): Deno.AtomicOperation {
  // Only `commit` is counted: an own property over the prototype's method,
  // not a proxy, so the dozen builder calls of a run's outcome cost what
  // they cost without the count (the ceilings are not counted at all).
  const commit = op.commit;
  op.commit = function () {
    counts.commit++;
    return commit.call(this);
  };
  return op;
}

/**
 * Small helpers over Deno KV that the stores share.
 *
 * @module
 */

/** `getMany` reads at most 10 keys per call; this reads any number. */
export async function getManyChunked<T>(
  kv: Deno.Kv,
  keys: readonly Deno.KvKey[],
): Promise<Deno.KvEntryMaybe<T>[]> {
  const chunks: Deno.KvKey[][] = [];
  for (let i = 0; i < keys.length; i += 10) chunks.push(keys.slice(i, i + 10));
  const results = await Promise.all(
    chunks.map((chunk) => kv.getMany<T[]>(chunk)),
  );
  return results.flat() as Deno.KvEntryMaybe<T>[];
}

/** `2^64 - 1`: summing it into a `KvU64` subtracts one (sum wraps). */
const MINUS_ONE = (1n << 64n) - 1n;

/** Adds `delta` (may be negative) to a `KvU64` counter with `sum`. */
export function addToCounter(
  op: Deno.AtomicOperation,
  key: Deno.KvKey,
  delta: number,
): Deno.AtomicOperation {
  if (delta === 0) return op;
  if (delta > 0) return op.sum(key, BigInt(delta));
  return op.sum(key, (MINUS_ONE * BigInt(-delta)) & MINUS_ONE);
}

/** Reads a `KvU64` counter as a number (0 when absent). */
export function counterValue(entry: Deno.KvEntryMaybe<unknown>): number {
  const value = entry.value;
  if (value instanceof Deno.KvU64) {
    // A counter decremented below zero by a bug would wrap; show 0, not 2^64.
    return value.value > (1n << 63n) ? 0 : Number(value.value);
  }
  return 0;
}

/** Size in bytes of a value as KV will roughly store it (JSON-encoded). */
export function jsonSize(value: unknown): number {
  return new TextEncoder().encode(JSON.stringify(value) ?? "").length;
}

/** KV's value limit is 64 KiB; keep a margin for the structured encoding. */
export const MAX_CELL_BYTES = 60 * 1024;

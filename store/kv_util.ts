/**
 * Small helpers over Deno KV that the stores share.
 *
 * @module
 */
import { isBusyError } from "./busy_retry.ts";

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

/**
 * Reads the entries at `keys`, best given in KV order, with one bounded
 * `list` over their range instead of a `getMany` per 10 keys: a page of a
 * registry read this way costs one KV request, not ten. The scan stops after
 * `scanFactor` × `keys.length` entries (a sparse range); keys it did not find
 * (beyond that, out of order, or absent) are read with `getMany`, so the
 * result is `getMany`'s whatever the order. Like {@linkcode getManyChunked},
 * the result is not one snapshot.
 */
export async function getManyByRange<T>(
  kv: Deno.Kv,
  keys: readonly Deno.KvKey[],
  scanFactor = 4,
): Promise<Deno.KvEntryMaybe<T>[]> {
  if (keys.length < 2) return await getManyChunked<T>(kv, keys);
  const found = new Map<string, Deno.KvEntry<T>>();
  try {
    for await (
      const entry of kv.list<T>({
        start: keys[0]!,
        // Just past the last key: a longer key with the same parts sorts
        // after.
        end: [...keys.at(-1)!, ""],
      }, { limit: keys.length * scanFactor })
    ) found.set(keyId(entry.key), entry);
  } catch (error) {
    // Another process holds the SQLite file's lock: `list` is not retried
    // (store/busy_retry.ts), `getMany` is. Read it all that way.
    if (!isBusyError(error)) throw error;
    return await getManyChunked<T>(kv, keys);
  }
  const result: (Deno.KvEntryMaybe<T> | null)[] = keys.map((key) =>
    found.get(keyId(key)) ?? null
  );
  const missing = keys.flatMap((_, i) => result[i] === null ? [i] : []);
  const reread = await getManyChunked<T>(kv, missing.map((i) => keys[i]!));
  missing.forEach((i, j) => (result[i] = reread[j]!));
  return result as Deno.KvEntryMaybe<T>[];
}

/**
 * A KV key as a string, equal exactly for equal keys (for maps and sets):
 * each part tagged with its type and length, so no two keys share one.
 */
export function keyId(key: Deno.KvKey): string {
  let id = "";
  for (const part of key) {
    const text = part instanceof Uint8Array
      ? Array.from(part).join(",")
      : Object.is(part, -0)
      ? "-0"
      : String(part);
    const type = part instanceof Uint8Array ? "u" : (typeof part)[0];
    id += `${type}${text.length}:${text}`;
  }
  return id;
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

/**
 * KV's refusal of an atomic operation over its limits (checks, mutations,
 * bytes).
 */
export function isTooLargeError(error: unknown): boolean {
  return error instanceof TypeError &&
    /too many|too large/i.test(error.message);
}

/** Checks one atomic operation may make on a local (SQLite) KV. */
export const LOCAL_MAX_CHECKS = 100;

/** Checks one atomic operation may make over KV Connect (remote KV). */
export const REMOTE_MAX_CHECKS = 10;

/** KV's value limit is 64 KiB; keep a margin for the structured encoding. */
export const MAX_CELL_BYTES = 60 * 1024;

/**
 * A cell's size against {@linkcode MAX_CELL_BYTES}: the larger of its JSON
 * size (what users see) and an upper bound of its size as KV stores it (V8's
 * structured serialization, where a number takes up to 9 bytes: 15,000
 * doubles are 60 KB of JSON but over KV's 64 KiB).
 */
export function cellSize(value: unknown): number {
  return Math.max(jsonSize(value), serializedSizeBound(value));
}

/**
 * An upper bound of `value`'s size in V8's structured serialization, for
 * JSON-like values: 9 bytes a number, a tag, a length and two bytes a
 * character for strings (one for Latin-1), tags and counts for objects and
 * arrays. A Latin-1 string V8 keeps at two bytes a character (one sliced from
 * a string that is not Latin-1) takes twice what this counts: cells are
 * stored as copies through JSON (`encodeCell`), whose strings are not.
 * Written here, not taken from a library: Deno exposes no way to serialize a
 * value as KV does without writing it.
 */
export function serializedSizeBound(value: unknown): number {
  return 2 + _bound(value);
}

const VARINT = 5;

function _bound(value: unknown): number {
  if (value === null || value === undefined || typeof value === "boolean") {
    return 1;
  }
  if (typeof value === "number") return 9;
  if (typeof value === "bigint") {
    return 1 + VARINT + 8 * Math.ceil(value.toString(16).length / 16);
  }
  if (typeof value === "string") {
    // deno-lint-ignore no-control-regex
    const latin1 = /^[\u0000-\u00ff]*$/.test(value);
    return 2 + VARINT + (latin1 ? value.length : 2 * value.length);
  }
  if (Array.isArray(value)) {
    let size = 1 + 3 * VARINT;
    for (const item of value) size += _bound(item);
    return size;
  }
  if (value instanceof Date) return 9;
  if (typeof value === "object") {
    let size = 2 + VARINT;
    for (const [key, item] of Object.entries(value)) {
      size += _bound(key) + _bound(item);
    }
    return size;
  }
  return 9;
}

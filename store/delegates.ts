/**
 * Space delegates: identities a space's owner has granted access to the
 * space's charms. A space's owner is the identity whose DID is the space.
 *
 * @module
 */
import type { DidKey } from "../charm/did.ts";
import { ConflictError } from "../lib/errors.ts";
import {
  spaceDelegateKey,
  spaceDelegatesPrefix,
  spaceDelegatesVersionKey,
} from "./keys.ts";

/** A stored grant, at `spaceDelegateKey(space, did)`. */
export interface Delegate {
  did: DidKey;
  /** When it was granted, epoch ms. */
  addedAt: number;
  /** Who granted it: the space's owner or `operator`. */
  addedBy: string;
}

/** The most delegates one space may have (keeps listings and checks cheap). */
export const MAX_DELEGATES_PER_SPACE = 100;

/**
 * Grants `did` access to `space`; a no-op when it already has it.
 *
 * @returns `added: false` when the grant existed.
 * @throws {RangeError} when the space already has
 *   {@linkcode MAX_DELEGATES_PER_SPACE} delegates.
 * @throws {ConflictError} when other grants in the space kept winning.
 */
export async function addDelegate(
  kv: Deno.Kv,
  space: DidKey,
  did: DidKey,
  addedBy: string,
  nowMs: number,
): Promise<{ added: boolean }> {
  const key = spaceDelegateKey(space, did);
  const versionKey = spaceDelegatesVersionKey(space);
  for (let attempt = 0; attempt < 20; attempt++) {
    // The version with the grant, before the count: a grant committed after
    // this read fails our check, so the count below cannot miss it.
    const [version, grant] = await kv.getMany([versionKey, key]);
    if (grant.value !== null) return { added: false };
    const existing = await listDelegates(kv, space);
    if (existing.length >= MAX_DELEGATES_PER_SPACE) {
      throw new RangeError(
        `Cannot add delegate ${did} to space ${space}: it already has ${MAX_DELEGATES_PER_SPACE}, the most allowed`,
      );
    }
    const delegate: Delegate = { did, addedAt: nowMs, addedBy };
    const { ok } = await kv.atomic()
      .check(version)
      .check({ key, versionstamp: null })
      .sum(versionKey, 1n)
      .set(key, delegate)
      .commit();
    if (ok) return { added: true };
    // Another grant in this space committed meanwhile: count again.
  }
  throw new ConflictError(
    `Cannot add delegate ${did} to space ${space}: too many grants at once; try again`,
  );
}

/** Revokes `did`'s access to `space`; `false` when it had none. */
export async function removeDelegate(
  kv: Deno.Kv,
  space: DidKey,
  did: DidKey,
): Promise<boolean> {
  const entry = await kv.get(spaceDelegateKey(space, did));
  if (entry.value === null) return false;
  const { ok } = await kv.atomic().check(entry).delete(entry.key).commit();
  // A failed check means it changed or went meanwhile; either way it is gone
  // or re-added by a later request, which wins.
  return ok;
}

/**
 * A space's delegates: at most {@linkcode MAX_DELEGATES_PER_SPACE}, but
 * listed up to a page of 1000, so grants an older version let past the cap
 * (two at once) still show, to be revoked.
 */
export async function listDelegates(
  kv: Deno.Kv,
  space: DidKey,
): Promise<Delegate[]> {
  const delegates: Delegate[] = [];
  for await (
    const entry of kv.list<Delegate>({ prefix: spaceDelegatesPrefix(space) }, {
      limit: 1000,
    })
  ) {
    delegates.push(entry.value);
  }
  return delegates;
}

/** `true` when `space` granted `did` access. */
export async function isDelegate(
  kv: Deno.Kv,
  space: string,
  did: string,
): Promise<boolean> {
  return (await kv.get(spaceDelegateKey(space, did))).value !== null;
}

/**
 * `did:key` validation for spaces.
 *
 * A space is named by an Ed25519 `did:key`: `did:key:z` + base58btc of the
 * multicodec prefix `0xed 0x01` followed by the 32-byte public key.
 *
 * @module
 */
import { base58 } from "@scure/base";

/** A `did:key` string that passed {@linkcode parseDidKey}. */
export type DidKey = `did:key:z${string}`;

const PREFIX = "did:key:z";
const ED25519_MULTICODEC = [0xed, 0x01] as const;

/**
 * Checks that `value` is an Ed25519 `did:key` and returns it typed, or throws
 * a `TypeError` saying what is wrong.
 *
 * @example
 * ```ts
 * parseDidKey("did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY");
 * ```
 */
export function parseDidKey(value: string): DidKey {
  _decode(value);
  return value as DidKey;
}

/**
 * The 32-byte Ed25519 public key a `did:key` holds: the inverse of
 * {@linkcode didKeyFromPublicKey}.
 *
 * @throws {TypeError} like {@linkcode parseDidKey} when `did` is not an
 *   Ed25519 `did:key`.
 */
export function publicKeyFromDidKey(did: string): Uint8Array<ArrayBuffer> {
  return _decode(did).slice(ED25519_MULTICODEC.length);
}

/** The multicodec-prefixed key bytes of an Ed25519 `did:key`, else throws. */
function _decode(value: string): Uint8Array {
  if (!value.startsWith(PREFIX)) {
    throw new TypeError(
      `"${_clip(value)}" is not a did:key: it must start with "${PREFIX}"`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = base58.decode(value.slice(PREFIX.length));
  } catch {
    throw new TypeError(
      `"${
        _clip(value)
      }" is not a did:key: the part after "did:key:z" is not base58btc`,
    );
  }
  if (
    bytes.length !== 34 || bytes[0] !== ED25519_MULTICODEC[0] ||
    bytes[1] !== ED25519_MULTICODEC[1]
  ) {
    throw new TypeError(
      `"${
        _clip(value)
      }" is not an Ed25519 did:key: expected 0xed01 and a 32-byte key`,
    );
  }
  return bytes;
}

/**
 * DIDs `isDidKey` accepted lately. Every queue message names its space, and a
 * service has few spaces: remembering them saves a base58 decode per message
 * (a few percent of a run's CPU in the benchmark). Cleared when full.
 */
const _validDids = new Set<string>();
const _VALID_DIDS_MAX = 1024;

/** `true` when `value` is a valid Ed25519 `did:key`. */
export function isDidKey(value: string): value is DidKey {
  if (_validDids.has(value)) return true;
  try {
    parseDidKey(value);
  } catch {
    return false;
  }
  if (_validDids.size >= _VALID_DIDS_MAX) _validDids.clear();
  _validDids.add(value);
  return true;
}

/** Builds the `did:key` of a 32-byte Ed25519 public key. */
export function didKeyFromPublicKey(publicKey: Uint8Array): DidKey {
  if (publicKey.length !== 32) {
    throw new RangeError(
      `Cannot build a did:key: public key has ${publicKey.length} bytes, expected 32`,
    );
  }
  const bytes = new Uint8Array(34);
  bytes.set(ED25519_MULTICODEC, 0);
  bytes.set(publicKey, 2);
  return `${PREFIX}${base58.encode(bytes)}` as DidKey;
}

function _clip(value: string): string {
  return value.length > 80 ? `${value.slice(0, 77)}...` : value;
}

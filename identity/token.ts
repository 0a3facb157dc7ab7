/**
 * Minting the short-lived API tokens an identity presents: a compact JWS
 * (EdDSA over Ed25519) whose `iss` is the identity's DID and whose `aud` is
 * the service's DID. `http/auth.ts` verifies them (with `jose`).
 *
 * @module
 */
import { base64urlnopad } from "@scure/base";
import type { DidKey } from "../charm/did.ts";
import type { Identity } from "./identity.ts";

/** The longest lifetime a token may have: the service refuses longer. */
export const MAX_TOKEN_TTL_SECONDS = 3600;

/** The lifetime `mintToken` uses when none is given. */
const DEFAULT_TOKEN_TTL_SECONDS = 3600;

/** Options for {@linkcode mintToken}. */
export interface MintTokenOptions {
  /** The service's DID (the token's `aud`). */
  audience: DidKey | string;
  /** Lifetime, seconds; 1 to {@linkcode MAX_TOKEN_TTL_SECONDS}. */
  ttlSeconds?: number;
  /** The current time, epoch ms (default `Date.now()`). */
  nowMs?: number;
}

/** A minted token and its claims. */
export interface MintedToken {
  token: string;
  iss: DidKey;
  aud: string;
  /** Issued at, epoch seconds. */
  iat: number;
  /** Expires at, epoch seconds. */
  exp: number;
}

/**
 * Mints a token for `identity` to present to the service named by
 * `audience`.
 *
 * @example
 * ```ts ignore
 * const me = await Identity.fromPassphrase("my space passphrase");
 * const { token } = await mintToken(me, { audience: serviceDid });
 * await fetch(url, { headers: { authorization: `Bearer ${token}` } });
 * ```
 * @throws {RangeError} when `ttlSeconds` is out of range.
 */
export async function mintToken(
  identity: Identity,
  options: MintTokenOptions,
): Promise<MintedToken> {
  const ttl = options.ttlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TOKEN_TTL_SECONDS) {
    throw new RangeError(
      `Cannot mint a token: ttl ${ttl} s is not a whole number from 1 to ${MAX_TOKEN_TTL_SECONDS}`,
    );
  }
  const iat = Math.floor((options.nowMs ?? Date.now()) / 1000);
  const claims = {
    iss: identity.did,
    aud: options.audience,
    iat,
    exp: iat + ttl,
  };
  const token = await signJws(identity, claims);
  return { token, ...claims };
}

/**
 * Signs `payload` as a compact JWS with `alg: EdDSA` (tests use it to build
 * tokens with unusual claims).
 */
export async function signJws(
  identity: Identity,
  payload: Record<string, unknown>,
  header: Record<string, unknown> = {},
): Promise<string> {
  const encoder = new TextEncoder();
  const head = base64urlnopad.encode(
    encoder.encode(JSON.stringify({ alg: "EdDSA", typ: "JWT", ...header })),
  );
  const body = base64urlnopad.encode(encoder.encode(JSON.stringify(payload)));
  const signature = await identity.sign(encoder.encode(`${head}.${body}`));
  return `${head}.${body}.${base64urlnopad.encode(signature)}`;
}

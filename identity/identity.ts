/**
 * Ed25519 identities named by `did:key`, compatible with the charm
 * ecosystem's own: the same passphrase or key file gives the same DID here
 * and there.
 *
 * - {@linkcode Identity.fromPassphrase}: the seed is SHA-256 of the UTF-8
 *   passphrase (no salt, no normalisation).
 * - {@linkcode Identity.derive}: the child seed is SHA-256 of the parent's
 *   Ed25519 signature over the UTF-8 name.
 * - {@linkcode Identity.fromPkcs8Pem}: a PKCS#8 PEM Ed25519 private key.
 *
 * The seed stays in a private field: it is never serialised (`toJSON`,
 * `Deno.inspect` and `String()` show only the DID), so an identity that ends
 * up in a log line or a response body leaks nothing.
 *
 * @module
 */
import * as ed from "@noble/ed25519";
import { base64 } from "@scure/base";
import { type DidKey, didKeyFromPublicKey } from "../charm/did.ts";

/** The DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows. */
export const PKCS8_ED25519_PREFIX: Uint8Array = new Uint8Array([
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
]);

const PEM_LABEL = "PRIVATE KEY";

/** An Ed25519 key pair and its `did:key`. */
export class Identity {
  /** The `did:key` naming this identity. */
  readonly did: DidKey;
  /** The 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array;
  readonly #seed: Uint8Array;

  private constructor(seed: Uint8Array, publicKey: Uint8Array) {
    this.#seed = seed;
    this.publicKey = publicKey;
    this.did = didKeyFromPublicKey(publicKey);
  }

  /**
   * The identity whose private key is the 32-byte `seed`.
   *
   * @throws {RangeError} when `seed` is not 32 bytes.
   */
  static async fromSeed(seed: Uint8Array): Promise<Identity> {
    if (seed.length !== 32) {
      throw new RangeError(
        `Cannot build an identity: the seed has ${seed.length} bytes, expected 32`,
      );
    }
    const copy = Uint8Array.from(seed);
    return new Identity(copy, await ed.getPublicKeyAsync(copy));
  }

  /**
   * The identity of a passphrase: seed = SHA-256(UTF-8 passphrase).
   *
   * @example
   * ```ts
   * const id = await Identity.fromPassphrase("common user");
   * id.did; // "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY"
   * ```
   * @throws {TypeError} when the passphrase is empty.
   */
  static async fromPassphrase(passphrase: string): Promise<Identity> {
    if (passphrase === "") {
      throw new TypeError("Cannot build an identity: the passphrase is empty");
    }
    return await Identity.fromSeed(
      await _sha256(new TextEncoder().encode(passphrase)),
    );
  }

  /**
   * The identity in a PKCS#8 PEM Ed25519 private key (`-----BEGIN PRIVATE
   * KEY-----`), as `openssl genpkey -algorithm ed25519` writes it.
   *
   * @throws {TypeError} naming what is wrong when it is not one. The message
   *   never quotes the key.
   */
  static async fromPkcs8Pem(pem: string): Promise<Identity> {
    const match = pem.match(
      /-----BEGIN PRIVATE KEY-----([\s\S]*?)-----END PRIVATE KEY-----/,
    );
    if (match === null) {
      throw new TypeError(
        `not a PEM key: expected a "-----BEGIN ${PEM_LABEL}-----" block`,
      );
    }
    let der: Uint8Array;
    try {
      der = base64.decode(match[1]!.replace(/\s+/g, ""));
    } catch {
      throw new TypeError("not a PEM key: the body is not base64");
    }
    const prefix = PKCS8_ED25519_PREFIX;
    if (
      der.length !== prefix.length + 32 ||
      prefix.some((byte, i) => der[i] !== byte)
    ) {
      throw new TypeError(
        `not a PKCS#8 Ed25519 private key (expected ${
          prefix.length + 32
        } DER bytes starting 302e020100300506032b657004220420, got ${der.length} bytes)`,
      );
    }
    return await Identity.fromSeed(der.slice(prefix.length));
  }

  /** A fresh random identity. */
  static async generate(): Promise<Identity> {
    return await Identity.fromSeed(crypto.getRandomValues(new Uint8Array(32)));
  }

  /**
   * A child identity: seed = SHA-256(this identity's signature over the UTF-8
   * `name`). Deterministic: the same parent and name give the same child.
   *
   * @example
   * ```ts
   * const parent = await Identity.fromPassphrase("common user");
   * (await parent.derive("toolshed-system")).did;
   * // "did:key:z6Mkfuw7h6jDwqVb6wimYGys14JFcyTem4Kqvdj9DjpFhY88"
   * ```
   */
  async derive(name: string): Promise<Identity> {
    const signature = await this.sign(new TextEncoder().encode(name));
    return await Identity.fromSeed(await _sha256(signature));
  }

  /** Signs `message` (plain Ed25519); returns the 64-byte signature. */
  async sign(message: Uint8Array): Promise<Uint8Array> {
    return await ed.signAsync(message, this.#seed);
  }

  /**
   * This identity's private key as a PKCS#8 PEM file. The only way key
   * material leaves the object: for writing a key file the user asked for.
   */
  toPkcs8Pem(): string {
    const der = new Uint8Array(PKCS8_ED25519_PREFIX.length + 32);
    der.set(PKCS8_ED25519_PREFIX, 0);
    der.set(this.#seed, PKCS8_ED25519_PREFIX.length);
    const body = base64.encode(der).match(/.{1,64}/g)!.join("\n");
    return `-----BEGIN ${PEM_LABEL}-----\n${body}\n-----END ${PEM_LABEL}-----\n`;
  }

  /** Only the DID: an identity serialised by accident carries no key. */
  toJSON(): { did: DidKey } {
    return { did: this.did };
  }

  /** The DID. */
  toString(): string {
    return this.did;
  }

  [Symbol.for("Deno.customInspect")](): string {
    return `Identity(${this.did})`;
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `Identity(${this.did})`;
  }
}

/**
 * Checks an Ed25519 signature by the key of `did`'s public key bytes.
 * Returns `false` (never throws) for a malformed signature.
 */
export async function verifySignature(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  try {
    return await ed.verifyAsync(signature, message, publicKey);
  } catch {
    return false;
  }
}

async function _sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
}

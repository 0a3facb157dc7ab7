/**
 * Encryption at rest for the cell fields a recipe marks secret (OAuth tokens):
 * AES-256-GCM under a key derived from `SECRETS_KEY` with HKDF-SHA-256.
 *
 * A sealed value is stored in place of the field as
 * `{"$enc": "v1", "kid": "<8 hex>", "iv": "<base64url>", "ct": "<base64url>"}`:
 * `kid` names the key (the first 8 hex digits of SHA-256 of the derived key),
 * `iv` is 12 random bytes, fresh per encryption, and `ct` is the ciphertext of
 * the field's JSON with the 16-byte tag. The additional data binds it to its
 * place (space, charm, cell, field path), so a sealed value copied to another
 * charm or field does not open.
 *
 * Rotation: with `SECRETS_KEY_PREVIOUS` set, values sealed under the previous
 * key still open; every write seals under the current key.
 *
 * @module
 */
import { base64urlnopad } from "@scure/base";
import { isDeployed } from "../identity/load_identity.ts";
import { ConfigError, NonRetriableError } from "./errors.ts";

/** Shortest `SECRETS_KEY` accepted, characters. */
const MIN_SECRETS_KEY_LENGTH = 32;

/** The HKDF `info`: changing it changes every derived key. */
const HKDF_INFO = "background-charm-service cell secrets v1";

/** The envelope format version. */
const ENVELOPE_VERSION = "v1";

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** One derived key and its id. */
export interface SecretKey {
  /** First 8 hex digits of SHA-256 of the derived key: safe to log. */
  kid: string;
  /** Which variable it came from, for messages. */
  source: "SECRETS_KEY" | "SECRETS_KEY_PREVIOUS";
  /** The AES-256-GCM key (not extractable). */
  key: CryptoKey;
}

/** The keys in use: seal with `current`, open with either. */
export interface SecretKeys {
  current: SecretKey;
  /** `SECRETS_KEY_PREVIOUS` during a rotation; `null` otherwise. */
  previous: SecretKey | null;
}

/** A sealed field value, as stored in KV. */
export interface SealedValue {
  $enc: typeof ENVELOPE_VERSION;
  kid: string;
  iv: string;
  ct: string;
}

/**
 * A sealed value that cannot be opened: unknown key, no key configured,
 * or a ciphertext that does not authenticate. Retrying cannot help (the
 * operator must fix the key), so a run that meets it fails without retries.
 */
export class SecretDecryptionError extends NonRetriableError {
  override name = "SecretDecryptionError";
}

/**
 * Builds the keys from `SECRETS_KEY` and `SECRETS_KEY_PREVIOUS`.
 *
 * @returns `null` when `SECRETS_KEY` is unset and not deployed (secrets are
 *   then stored in plaintext; the caller warns).
 * @throws {ConfigError} naming the variable when `SECRETS_KEY` is unset on
 *   Deno Deploy, a key is shorter than 32 characters,
 *   `SECRETS_KEY_PREVIOUS` is set without `SECRETS_KEY`, or both are equal.
 *   Messages never quote key material.
 */
export async function loadSecretKeys(
  env: Record<string, string | undefined>,
): Promise<SecretKeys | null> {
  const current = env.SECRETS_KEY ?? "";
  const previous = env.SECRETS_KEY_PREVIOUS ?? "";
  if (current === "") {
    if (previous !== "") {
      throw new ConfigError(
        "SECRETS_KEY_PREVIOUS: set without SECRETS_KEY; during a rotation set SECRETS_KEY to the new key and SECRETS_KEY_PREVIOUS to the old one",
      );
    }
    if (isDeployed(env)) {
      throw new ConfigError(
        "SECRETS_KEY: not set; OAuth tokens would be stored in plaintext on Deno Deploy (DENO_DEPLOYMENT_ID is set): set SECRETS_KEY to a random secret of at least 32 characters (openssl rand -base64 32)",
      );
    }
    return null;
  }
  for (
    const [name, value] of [["SECRETS_KEY", current], [
      "SECRETS_KEY_PREVIOUS",
      previous,
    ]] as const
  ) {
    if (value !== "" && value.length < MIN_SECRETS_KEY_LENGTH) {
      throw new ConfigError(
        `${name}: ${value.length} characters is too short; use a random secret of at least ${MIN_SECRETS_KEY_LENGTH} characters (openssl rand -base64 32)`,
      );
    }
  }
  if (previous === current) {
    throw new ConfigError(
      "SECRETS_KEY_PREVIOUS: the same as SECRETS_KEY; set it to the old key during a rotation, or unset it",
    );
  }
  return {
    current: await deriveSecretKey(current, "SECRETS_KEY"),
    previous: previous === ""
      ? null
      : await deriveSecretKey(previous, "SECRETS_KEY_PREVIOUS"),
  };
}

/** Derives the AES-256-GCM key of `secret` (HKDF-SHA-256, fixed info). */
export async function deriveSecretKey(
  secret: string,
  source: SecretKey["source"] = "SECRETS_KEY",
): Promise<SecretKey> {
  const material = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    "HKDF",
    false,
    ["deriveBits"],
  );
  const bits = new Uint8Array(
    await crypto.subtle.deriveBits(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new Uint8Array(0),
        info: new TextEncoder().encode(HKDF_INFO),
      },
      material,
      256,
    ),
  );
  try {
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", bits),
    );
    const kid = [...digest.slice(0, 4)]
      .map((b) => b.toString(16).padStart(2, "0"))
      .join("");
    const key = await crypto.subtle.importKey(
      "raw",
      bits,
      { name: "AES-GCM" },
      false,
      ["encrypt", "decrypt"],
    );
    return { kid, source, key };
  } finally {
    bits.fill(0);
  }
}

/** Whether `value` has the shape of a {@linkcode SealedValue}. */
export function isSealed(value: unknown): value is SealedValue {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return false;
  }
  const v = value as Record<string, unknown>;
  return v.$enc === ENVELOPE_VERSION && typeof v.kid === "string" &&
    typeof v.iv === "string" && typeof v.ct === "string";
}

/**
 * Seals `value` (any JSON value) under the current key.
 *
 * @param context binds the sealed value to its place (additional data)
 */
export async function sealValue(
  keys: SecretKeys,
  value: unknown,
  context: string,
): Promise<SealedValue> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      {
        name: "AES-GCM",
        iv,
        additionalData: new TextEncoder().encode(context),
      },
      keys.current.key,
      new TextEncoder().encode(JSON.stringify(value)),
    ),
  );
  return {
    $enc: ENVELOPE_VERSION,
    kid: keys.current.kid,
    iv: base64urlnopad.encode(iv),
    ct: base64urlnopad.encode(ct),
  };
}

/**
 * Opens a sealed value with whichever configured key its `kid` names.
 *
 * @param keys `null` when `SECRETS_KEY` is not set
 * @param context the same additional data it was sealed with
 * @param where names the field in messages (`argument.auth.token of charm …`)
 * @throws {SecretDecryptionError} naming `SECRETS_KEY` when no configured key
 *   has that id, or when the ciphertext does not authenticate.
 */
export async function openValue(
  keys: SecretKeys | null,
  sealed: SealedValue,
  context: string,
  where: string,
): Promise<unknown> {
  if (keys === null) {
    throw new SecretDecryptionError(
      `Cannot decrypt ${where}: it is encrypted (key ${sealed.kid}) and SECRETS_KEY is not set; set SECRETS_KEY to the key it was written with`,
    );
  }
  const key = [keys.current, keys.previous].find((k) => k?.kid === sealed.kid);
  if (key === undefined || key === null) {
    throw new SecretDecryptionError(
      `Cannot decrypt ${where}: it was encrypted with key ${sealed.kid}, which is neither SECRETS_KEY (key ${keys.current.kid}) nor SECRETS_KEY_PREVIOUS (${
        keys.previous === null ? "not set" : `key ${keys.previous.kid}`
      }); set SECRETS_KEY_PREVIOUS to the key it was written with`,
    );
  }
  const unauthentic = () =>
    new SecretDecryptionError(
      `Cannot decrypt ${where} with ${key.source} (key ${key.kid}): the ciphertext does not authenticate (altered, or copied from another charm or field)`,
    );
  let iv: Uint8Array;
  let ct: Uint8Array;
  try {
    iv = base64urlnopad.decode(sealed.iv);
    ct = base64urlnopad.decode(sealed.ct);
  } catch {
    throw unauthentic();
  }
  if (iv.length !== IV_BYTES || ct.length < TAG_BYTES) throw unauthentic();
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: iv as Uint8Array<ArrayBuffer>,
        additionalData: new TextEncoder().encode(context),
      },
      key.key,
      ct as Uint8Array<ArrayBuffer>,
    );
  } catch {
    throw unauthentic();
  }
  try {
    return JSON.parse(new TextDecoder().decode(plain));
  } catch {
    throw unauthentic();
  }
}

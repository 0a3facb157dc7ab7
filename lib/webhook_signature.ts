/**
 * Signatures on outbound webhook requests, so a receiver can tell the
 * service sent them: a detached JWS (RFC 7515 with RFC 7797's unencoded
 * payload) by the operator identity over the exact request body.
 *
 * Headers of a signed request:
 *
 * - `BCS-Signature: <protected>..<signature>`: the JWS compact form with the
 *   payload left out. The protected header is
 *   `{"alg":"EdDSA","b64":false,"crit":["b64"],"kid":"<did:key>","iat":<epoch s>,"htu":"<url>"}`;
 *   the signature is Ed25519 over the ASCII bytes of `<protected>.` followed
 *   by the body bytes, as sent.
 * - `BCS-Key: <did:key>`: the signer, the same as `kid`. Receivers check it
 *   is the DID they trust (the service's `GET /health` → `did`), never just
 *   any key.
 *
 * `iat` bounds replay (receivers refuse old ones) and `htu` names the URL the
 * request was sent to. `docs/webhooks.md` shows how to verify.
 *
 * @module
 */
import { base64urlnopad } from "@scure/base";
import type { DidKey } from "../charm/did.ts";

/** Signs bytes with an Ed25519 key named by a `did:key` (an `Identity`). */
export interface Signer {
  readonly did: DidKey;
  /** Plain Ed25519 over `message`: the 64-byte signature. */
  sign(message: Uint8Array): Promise<Uint8Array>;
}

/** The header carrying the detached JWS. */
export const SIGNATURE_HEADER = "BCS-Signature";

/** The header naming the signer's `did:key`. */
export const KEY_HEADER = "BCS-Key";

/** The JWS protected header of a webhook signature. */
export interface WebhookSignatureHeader {
  alg: "EdDSA";
  b64: false;
  crit: ["b64"];
  /** The signer's `did:key`. */
  kid: DidKey;
  /** When it was signed, epoch seconds. */
  iat: number;
  /** The URL the request is sent to. */
  htu: string;
}

/**
 * The headers that sign `body` for a request to `url`.
 *
 * @example
 * ```ts ignore
 * const headers = await signWebhookBody(identity, bytes, {
 *   url: "https://example.com/hook",
 *   nowMs: Date.now(),
 * });
 * // {"BCS-Signature": "eyJhbGciOi...", "BCS-Key": "did:key:z6Mk..."}
 * ```
 */
export async function signWebhookBody(
  signer: Signer,
  body: Uint8Array,
  options: { url: string; nowMs: number },
): Promise<Record<string, string>> {
  const header: WebhookSignatureHeader = {
    alg: "EdDSA",
    b64: false,
    crit: ["b64"],
    kid: signer.did,
    iat: Math.floor(options.nowMs / 1000),
    htu: options.url,
  };
  const protectedPart = base64urlnopad.encode(
    new TextEncoder().encode(JSON.stringify(header)),
  );
  const prefix = new TextEncoder().encode(`${protectedPart}.`);
  const input = new Uint8Array(prefix.length + body.length);
  input.set(prefix, 0);
  input.set(body, prefix.length);
  const signature = await signer.sign(input);
  return {
    [SIGNATURE_HEADER]: `${protectedPart}..${base64urlnopad.encode(signature)}`,
    [KEY_HEADER]: signer.did,
  };
}

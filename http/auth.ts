/**
 * Who is asking, and may they: the API's authentication and authorization.
 *
 * A request carries `Authorization: Bearer <token>`, one of:
 *
 * - the operator's `ADMIN_TOKEN` (compared in constant time): the operator;
 * - a short-lived JWS (EdDSA) signed by a `did:key` identity, with `iss` =
 *   that DID, `aud` = the service's DID, `iat`, and `exp` at most an hour
 *   ahead. Its holder acts on the space whose DID is `iss` and on spaces that
 *   made it a delegate. A token signed by the service's own operator identity
 *   is the operator.
 *
 * With no token, a request is anonymous, except in local development (no
 * `ADMIN_TOKEN`, not exposed), where it is the operator, as the service
 * always behaved there; a token presented is still checked.
 *
 * Failures throw {@linkcode UnauthenticatedError} (401) or
 * {@linkcode ForbiddenError} (403); `http/app.ts` maps them.
 *
 * @module
 */
import {
  base64url,
  decodeJwt,
  errors as joseErrors,
  importJWK,
  jwtVerify,
} from "jose";
import { type DidKey, parseDidKey, publicKeyFromDidKey } from "../charm/did.ts";
import { toError } from "../lib/errors.ts";
import { classifyAddress } from "../lib/net_guard.ts";
import { MAX_TOKEN_TTL_SECONDS } from "../identity/token.ts";
import { isDelegate } from "../store/delegates.ts";

/** Who a request is from. */
export type Principal =
  | {
    kind: "operator";
    /** How: the admin token, the operator identity's JWS, or open access. */
    via: "admin-token" | "operator-identity" | "open";
  }
  | { kind: "identity"; did: DidKey }
  | { kind: "anonymous" };

/** Why a request is not authenticated; `reason` in the 401 body. */
export type AuthFailure =
  | "missing_token"
  | "malformed_header"
  | "invalid_token"
  | "bad_signature"
  | "expired"
  | "not_yet_valid"
  | "wrong_audience"
  | "exp_too_far"
  | "bad_issuer";

/** The request is not authenticated (HTTP 401). */
export class UnauthenticatedError extends Error {
  override name = "UnauthenticatedError";
  /** A stable code for the failure. */
  readonly reason: AuthFailure;

  constructor(reason: AuthFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** The request is authenticated but may not do this (HTTP 403). */
export class ForbiddenError extends Error {
  override name = "ForbiddenError";
}

/** What {@linkcode authenticate} needs. */
export interface AuthOptions {
  /** The operator's static token; `null` when none is configured. */
  adminToken: string | null;
  /** The service's DID: tokens must name it as `aud`. */
  serviceDid: DidKey;
  /** Anonymous requests are the operator (local development only). */
  openAccess: boolean;
  /** Epoch ms. */
  now(): number;
}

/** Clock skew tolerated on `iat` and `exp`, seconds. */
export const CLOCK_SKEW_SECONDS = 60;

/**
 * Whether a request may use open access (local development, no
 * `ADMIN_TOKEN`): it names this machine (`Host` is `localhost` or a
 * loopback address, so a DNS name rebound to 127.0.0.1 gets nothing), and,
 * unless it only reads, it does not come from another site's page (its
 * `Origin` is its own host, and the browser does not say `cross-site`).
 * A request a proxy forwarded (it says so in `Forwarded` or
 * `X-Forwarded-For`) comes from elsewhere, whatever its `Host`. Requests
 * without these headers (curl, the CLI) are local.
 */
export function isLocalRequest(request: {
  method: string;
  url: string;
  host?: string;
  origin?: string;
  secFetchSite?: string;
  forwarded?: boolean;
}): boolean {
  if (request.forwarded) return false;
  const host = _host(request.host ?? new URL(request.url).host);
  if (host === null || !_isLoopbackHost(host)) return false;
  if (request.method === "GET" || request.method === "HEAD") return true;
  if (request.secFetchSite === "cross-site") return false;
  if (request.origin === undefined) return true;
  // "null" (a sandboxed frame, a file) is another site too.
  return URL.canParse(request.origin) &&
    new URL(request.origin).host === host;
}

/**
 * Whether a `Host` header value names this machine: `localhost` or a
 * loopback address, any port. In local development the service answers
 * nothing else, so a page whose DNS name was rebound to 127.0.0.1 (same
 * origin with itself, free to send any header) reaches nothing.
 */
export function namesThisMachine(host: string | undefined): boolean {
  const normal = host === undefined ? null : _host(host);
  return normal !== null && _isLoopbackHost(normal);
}

/** Whether a normalized `host[:port]` (see `_host`) is this machine's. */
function _isLoopbackHost(host: string): boolean {
  const name = new URL(`http://${host}`).hostname.replace(/^\[(.*)\]$/, "$1")
    .replace(/\.$/, "");
  return name === "localhost" || classifyAddress(name) === "loopback";
}

/**
 * A `Host` header value as a URL writes it (lower case, default port
 * dropped), or `null` when it is not just `host[:port]`.
 */
function _host(host: string): string | null {
  if (!URL.canParse(`http://${host}`)) return null;
  const url = new URL(`http://${host}`);
  if (url.username || url.password || url.pathname !== "/") return null;
  return url.host;
}

/**
 * Resolves the `Authorization` header to a principal.
 *
 * @throws {UnauthenticatedError} when a token is presented and is not valid
 *   (never for a missing header: that is anonymous, refused later if the
 *   route needs more).
 */
export async function authenticate(
  header: string | undefined,
  options: AuthOptions,
): Promise<Principal> {
  if (header === undefined || header.trim() === "") {
    return options.openAccess
      ? { kind: "operator", via: "open" }
      : { kind: "anonymous" };
  }
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (match === null) {
    throw new UnauthenticatedError(
      "malformed_header",
      'Authorization header must be "Bearer <token>"',
    );
  }
  const token = match[1]!;
  if (
    options.adminToken !== null &&
    (await _isAdminToken(token, options.adminToken))
  ) {
    return { kind: "operator", via: "admin-token" };
  }
  if (!_looksLikeJws(token)) {
    throw new UnauthenticatedError(
      "invalid_token",
      "invalid bearer token: neither the admin token nor a JWS",
    );
  }
  const did = await _verifyIdentityToken(token, {
    audience: options.serviceDid,
    nowMs: options.now(),
  });
  return did === options.serviceDid
    ? { kind: "operator", via: "operator-identity" }
    : { kind: "identity", did };
}

/**
 * Verifies an identity token and returns its issuer's DID.
 *
 * The key comes from the token's own `iss` (a `did:key` holds its public
 * key), so the signature proves the issuer; jose then checks the signature,
 * `alg`, `aud`, `exp` and `iat`, and this function the lifetime bound.
 *
 * @throws {UnauthenticatedError} naming the reason.
 */
async function _verifyIdentityToken(
  token: string,
  options: { audience: DidKey; nowMs: number },
): Promise<DidKey> {
  let claims;
  try {
    claims = decodeJwt(token);
  } catch (error) {
    throw new UnauthenticatedError(
      "invalid_token",
      `invalid token: ${toError(error).message}`,
      { cause: error },
    );
  }
  let iss: DidKey;
  try {
    if (typeof claims.iss !== "string") {
      throw new TypeError("the iss claim is missing");
    }
    iss = parseDidKey(claims.iss);
  } catch (error) {
    throw new UnauthenticatedError(
      "bad_issuer",
      `invalid token: iss must be the signer's Ed25519 did:key (${
        toError(error).message
      })`,
    );
  }
  // jose's own JWK import: Ed25519 via WebCrypto, which Deno implements.
  const key = await importJWK({
    kty: "OKP",
    crv: "Ed25519",
    x: base64url.encode(publicKeyFromDidKey(iss)),
  }, "EdDSA");
  const nowSeconds = Math.floor(options.nowMs / 1000);
  let payload;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ["EdDSA", "Ed25519"],
      audience: options.audience,
      requiredClaims: ["iss", "aud", "exp", "iat"],
      currentDate: new Date(options.nowMs),
      clockTolerance: CLOCK_SKEW_SECONDS,
      maxTokenAge: MAX_TOKEN_TTL_SECONDS,
    }));
  } catch (error) {
    throw _describeJoseError(error, options.audience);
  }
  const exp = payload.exp!;
  if (exp - nowSeconds > MAX_TOKEN_TTL_SECONDS + CLOCK_SKEW_SECONDS) {
    throw new UnauthenticatedError(
      "exp_too_far",
      `token expires too far ahead: exp is ${
        exp - nowSeconds
      } s from now, at most ${MAX_TOKEN_TTL_SECONDS} s is accepted`,
    );
  }
  return iss;
}

/**
 * Requires the operator.
 *
 * @throws {UnauthenticatedError} for an anonymous request.
 * @throws {ForbiddenError} for an identity.
 */
export function requireOperator(principal: Principal, action: string): void {
  if (principal.kind === "operator") return;
  if (principal.kind === "anonymous") throw missingToken();
  throw new ForbiddenError(
    `Cannot ${action}: only the operator may; identity ${principal.did} is not the operator`,
  );
}

/**
 * Requires access to `space`: the operator, the space's own identity, or one
 * of its delegates (when `allowDelegates`).
 *
 * @throws {UnauthenticatedError} for an anonymous request.
 * @throws {ForbiddenError} for any other identity.
 */
export async function requireSpace(
  kv: Deno.Kv,
  principal: Principal,
  space: DidKey,
  action: string,
  allowDelegates = true,
): Promise<void> {
  if (principal.kind === "operator") return;
  if (principal.kind === "anonymous") throw missingToken();
  if (principal.did === space) return;
  if (allowDelegates && await isDelegate(kv, space, principal.did)) return;
  throw new ForbiddenError(
    `Cannot ${action}: identity ${principal.did} is not space ${space}${
      allowDelegates ? " nor one of its delegates" : " (only its owner may)"
    }`,
  );
}

/** The 401 of a request with no token where one is needed. */
export function missingToken(): UnauthenticatedError {
  return new UnauthenticatedError(
    "missing_token",
    "missing bearer token: send Authorization: Bearer <token>",
  );
}

/** Who acted, for logs and a charm's `disabledReason`. */
export function principalName(principal: Principal): string {
  return principal.kind === "identity" ? principal.did : principal.kind;
}

/**
 * Compares two strings in time independent of where they differ: both are
 * hashed first, so the comparison runs over equal-length digests.
 */
export async function timingSafeEqual(a: string, b: string): Promise<boolean> {
  const [da, db] = await Promise.all([_sha256(a), _sha256(b)]);
  return _equalDigests(da, db);
}

function _equalDigests(da: ArrayBuffer, db: ArrayBuffer): boolean {
  const x = new Uint8Array(da);
  const y = new Uint8Array(db);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ y[i]!;
  return diff === 0;
}

function _sha256(text: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
}

// The configured token's digest is the same on every request: hashing it
// each time was half the server's busy time on cheap routes
// (docs/benchmarks.md). Only the last one is kept.
let _adminDigestCache: { token: string; digest: Promise<ArrayBuffer> } | null =
  null;

/** `timingSafeEqual(token, adminToken)`, hashing the admin token once. */
async function _isAdminToken(
  token: string,
  adminToken: string,
): Promise<boolean> {
  if (_adminDigestCache?.token !== adminToken) {
    _adminDigestCache = { token: adminToken, digest: _sha256(adminToken) };
  }
  const [da, db] = await Promise.all([
    _sha256(token),
    _adminDigestCache.digest,
  ]);
  return _equalDigests(da, db);
}

function _looksLikeJws(token: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token);
}

function _describeJoseError(
  error: unknown,
  audience: DidKey,
): UnauthenticatedError {
  const cause = { cause: error };
  if (error instanceof joseErrors.JWTExpired) {
    return error.claim === "iat"
      ? new UnauthenticatedError(
        "expired",
        `token expired: issued more than ${MAX_TOKEN_TTL_SECONDS} s ago`,
        cause,
      )
      : new UnauthenticatedError(
        "expired",
        "token expired: its exp is in the past; mint a new one",
        cause,
      );
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new UnauthenticatedError(
      "bad_signature",
      "invalid token signature: it does not verify with the key of its iss",
      cause,
    );
  }
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === "aud") {
      return new UnauthenticatedError(
        "wrong_audience",
        `token audience is not this service: aud must be ${audience}`,
        cause,
      );
    }
    if (error.claim === "iat" && error.reason === "check_failed") {
      return new UnauthenticatedError(
        "not_yet_valid",
        "token not yet valid: its iat is in the future",
        cause,
      );
    }
    return new UnauthenticatedError(
      "invalid_token",
      `invalid token: ${error.message}`,
      cause,
    );
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) {
    return new UnauthenticatedError(
      "invalid_token",
      "invalid token: alg must be EdDSA",
      cause,
    );
  }
  return new UnauthenticatedError(
    "invalid_token",
    `invalid token: ${toError(error).message}`,
    cause,
  );
}

/**
 * Keeps a charm's Google access token fresh: reads `argument.auth` from KV,
 * refreshes the token when it is missing, expires within 10 minutes or was
 * just refused, and writes the new token back into the argument cell.
 *
 * Only one refresh per charm runs at a time, across processes: the refresher
 * first claims a short KV lease (`authRefreshLeaseKey`). Another caller that
 * finds the lease held waits (on `kv.watch`, bounded by the run's signal) for
 * the holder to write the new token or let go, then uses what it wrote. Two
 * concurrent refreshes are not harmless in general: an endpoint that rotates
 * refresh tokens invalidates the one the loser used.
 *
 * The write-back checks the argument's versionstamp, so an argument replaced
 * meanwhile (new auth through the API) wins over the refresh.
 *
 * The argument cell is read and written through `store/cell_codec.ts`: the
 * tokens are sealed in KV (the recipe's `secretPaths`), plaintext here.
 *
 * @module
 */
import { type CharmRef, formatCharmRef } from "../charm/charm.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import { NeedsReauthError, NonRetriableError } from "../lib/errors.ts";
import type { SecretKeys } from "../lib/secrets.ts";
import { decodeCell, encodeCell } from "../store/cell_codec.ts";
import { authRefreshLeaseKey, cellKey } from "../store/keys.ts";
import { type GoogleAuth, googleAuthSchema, tokenIsExpiring } from "./auth.ts";
import type { GoogleConfig } from "./config.ts";
import { type RefreshedToken, refreshGoogleToken } from "./oauth.ts";

/** The refresh lease, at `authRefreshLeaseKey(charm)`. */
export interface AuthRefreshLease {
  owner: string;
  /** Epoch ms; a lease past it is free to take (KV expiry is lazy). */
  expiresAt: number;
}

/** How long a refresh may hold the lease. */
export const REFRESH_LEASE_MS = 30_000;

/** Bounds the read-claim-write loop (each round waits for a change). */
const MAX_ROUNDS = 10;

/** What {@linkcode freshGoogleAuth} needs. */
export interface FreshAuthDeps {
  kv: Deno.Kv;
  config: GoogleConfig;
  fetch: typeof fetch;
  /** The run's signal: bounds waiting for another refresher, and the fetch. */
  signal: AbortSignal;
  now(): number;
  /** Keys sealing the argument's secret fields (`null`: plaintext). */
  secrets: SecretKeys | null;
  /** The charm's recipe: its `secretPaths` name the sealed fields. */
  recipe: Pick<AnyRecipe, "secretPaths">;
}

/** Options for {@linkcode freshGoogleAuth}. */
export interface FreshAuthOptions {
  /**
   * An access token the API just refused (401): refresh even though it has
   * not expired, unless the cell already holds another one.
   */
  rejectedToken?: string;
}

/**
 * Returns the charm's `auth` with an access token that is fresh, refreshing
 * and writing it back if needed.
 *
 * @throws {NeedsReauthError} when there is no refresh token to refresh with,
 *   or the token endpoint says the grant is invalid.
 * @throws {NonRetriableError} when the argument has no valid `auth` object.
 * @throws {Error} (retriable) when the refresh fails transiently.
 */
export async function freshGoogleAuth(
  deps: FreshAuthDeps,
  ref: CharmRef,
  options: FreshAuthOptions = {},
): Promise<GoogleAuth> {
  const { kv } = deps;
  const what = formatCharmRef(ref);
  const argumentKey = cellKey(ref, "argument");
  const leaseKey = authRefreshLeaseKey(ref);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    deps.signal.throwIfAborted();
    const [argumentEntry, leaseEntry] = await kv.getMany<
      [unknown, AuthRefreshLease]
    >([argumentKey, leaseKey]);
    const argument = await decodeCell(
      deps.secrets,
      deps.recipe,
      ref,
      "argument",
      argumentEntry.value,
    ) as Record<string, unknown> | null;
    const auth = _authOf(argument, what);
    const now = deps.now();
    const refused = options.rejectedToken !== undefined &&
      auth.token === options.rejectedToken;
    if (!refused && !tokenIsExpiring(auth, now)) return auth;
    if (auth.refreshToken === "") {
      // Nothing to refresh with: an unexpired-looking token may still work.
      if (auth.token !== "" && !refused) return auth;
      throw new NeedsReauthError(
        `Cannot refresh the Google token of charm ${what}: its auth has no refresh token (the user must sign in to Google)`,
      );
    }

    const lease = leaseEntry.value;
    if (lease !== null && lease.expiresAt > now) {
      await _waitForChange(
        kv,
        [argumentKey, leaseKey],
        [argumentEntry.versionstamp, leaseEntry.versionstamp],
        deps.signal,
      );
      continue;
    }
    const claim = await kv.atomic()
      .check(leaseEntry)
      .set(
        leaseKey,
        {
          owner: crypto.randomUUID(),
          expiresAt: now + REFRESH_LEASE_MS,
        } satisfies AuthRefreshLease,
        { expireIn: REFRESH_LEASE_MS },
      )
      .commit();
    if (!claim.ok) continue;
    const ours = { key: leaseKey, versionstamp: claim.versionstamp };

    let written = false;
    try {
      const refreshed = await refreshGoogleToken(
        deps.config,
        auth.refreshToken,
        deps,
        what,
      );
      const next = _withRefreshed(auth, refreshed);
      const stored = await encodeCell(
        deps.secrets,
        deps.recipe,
        ref,
        "argument",
        { ...argument, auth: next },
      );
      const commit = await kv.atomic()
        .check(argumentEntry)
        .check(ours)
        .set(argumentKey, stored)
        .delete(leaseKey)
        .commit();
      written = commit.ok;
      if (written) return next;
      // The argument was replaced meanwhile (new auth through the API) or
      // the lease lapsed: drop this token and look again.
    } finally {
      if (!written) {
        await kv.atomic().check(ours).delete(leaseKey).commit();
      }
    }
  }
  throw new Error(
    `Cannot refresh the Google token of charm ${what}: its argument kept changing`,
  );
}

/** The `auth` of an argument cell value, defaults applied. */
function _authOf(argument: unknown, what: string): GoogleAuth {
  if (argument === null || typeof argument !== "object") {
    throw new NonRetriableError(
      `Cannot read the Google auth of charm ${what}: its argument cell is missing`,
    );
  }
  const parsed = googleAuthSchema.safeParse(
    (argument as Record<string, unknown>).auth ?? {},
  );
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new NonRetriableError(
      `Cannot read the Google auth of charm ${what}: argument.auth${
        issue?.path.length ? `.${issue.path.join(".")}` : ""
      } ${issue?.message ?? "is invalid"}`,
    );
  }
  return parsed.data;
}

/** `auth` with a refreshed token; the refresh token only if it was rotated. */
function _withRefreshed(
  auth: GoogleAuth,
  refreshed: RefreshedToken,
): GoogleAuth {
  const scope = refreshed.scope === null
    ? auth.scope
    : Array.isArray(auth.scope)
    ? refreshed.scope.split(" ").filter((s) => s !== "")
    : refreshed.scope;
  return {
    ...auth,
    token: refreshed.token,
    tokenType: refreshed.tokenType,
    scope,
    expiresIn: refreshed.expiresIn,
    expiresAt: refreshed.expiresAt,
    refreshToken: refreshed.refreshToken ?? auth.refreshToken,
  };
}

/**
 * Resolves once any of `keys` no longer has the versionstamp it had, or the
 * signal aborts (the caller's loop then throws).
 */
async function _waitForChange(
  kv: Deno.Kv,
  keys: Deno.KvKey[],
  versionstamps: (string | null)[],
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) return;
  const reader = kv.watch(keys).getReader();
  const stop = () => void reader.cancel().catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value.some((entry, i) => entry.versionstamp !== versionstamps[i])) {
        return;
      }
    }
  } finally {
    signal.removeEventListener("abort", stop);
    await reader.cancel().catch(() => {});
  }
}

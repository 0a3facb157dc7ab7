/**
 * Refreshing a Google access token: the OAuth `refresh_token` grant at the
 * token endpoint (through `oauth4webapi`), or, when a toolshed is configured,
 * its `POST /api/integrations/google-oauth/refresh`, which holds the client
 * secret instead of this service.
 *
 * Failures are sorted for the run dispatcher: `invalid_grant` (revoked,
 * expired, password changed) is a {@linkcode NeedsReauthError}; a 429, 5xx
 * or network error is retriable (honouring `Retry-After`); anything else the
 * endpoint refuses is a {@linkcode NonRetriableError}. Messages never carry a
 * token.
 *
 * @module
 */
import * as oauth from "oauth4webapi";
import {
  NeedsReauthError,
  NonRetriableError,
  parseRetryAfter,
  RetryAfterError,
  toError,
} from "../lib/errors.ts";
import { type GoogleConfig, isLoopbackHost } from "./config.ts";

/** A refreshed access token, in the `auth` cell's field names. */
export interface RefreshedToken {
  token: string;
  tokenType: string;
  /** Space-separated, as Google sends it; `null` when not sent. */
  scope: string | null;
  expiresIn: number;
  expiresAt: number;
  /** A new refresh token, only when the endpoint rotated it. */
  refreshToken: string | null;
}

/** What a refresh needs besides the configuration. */
export interface RefreshIo {
  fetch: typeof fetch;
  signal: AbortSignal;
  now(): number;
}

/**
 * Google's issuer, as oauth4webapi's authorization server. Replies' ID
 * tokens are dropped before it would check them (`_withoutIdToken`).
 */
const GOOGLE_ISSUER = "https://accounts.google.com";

/**
 * The token endpoint's reply without its `id_token`. The service never uses
 * one, and oauth4webapi would hold it to `GOOGLE_ISSUER` exactly, while
 * Google also issues the legacy form `accounts.google.com`: the refresh,
 * and a refresh token it rotated, would be lost on a check that matters
 * for nothing here.
 */
async function _withoutIdToken(response: Response): Promise<Response> {
  if (!response.ok) return response;
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  const headers = new Headers(response.headers);
  headers.delete("content-length");
  let out = text;
  if (body !== null && typeof body === "object" && "id_token" in body) {
    const { id_token: _dropped, ...rest } = body as Record<string, unknown>;
    out = JSON.stringify(rest);
  }
  return new Response(out, {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}

/** Google access tokens live an hour; used when a reply omits `expires_in`. */
const DEFAULT_EXPIRES_IN_S = 3600;

/**
 * Exchanges `refreshToken` for a new access token.
 *
 * @param what Names the charm in error messages (`space/charmId`).
 * @throws {NeedsReauthError} when the grant is invalid (`invalid_grant`).
 * @throws {RetryAfterError} on 429 or 5xx with `Retry-After`.
 * @throws {NonRetriableError} when the endpoint refuses for another reason
 *   (a bad client id or secret, say) or the client is not configured.
 * @throws {Error} (retriable) on 5xx, network errors and malformed replies.
 */
export async function refreshGoogleToken(
  config: GoogleConfig,
  refreshToken: string,
  io: RefreshIo,
  what: string,
): Promise<RefreshedToken> {
  const action = `Cannot refresh the Google token of charm ${what}`;
  return config.toolshedApiUrl !== null
    ? await _refreshViaToolshed(
      config.toolshedApiUrl,
      refreshToken,
      io,
      action,
    )
    : await _refreshAtTokenEndpoint(config, refreshToken, io, action);
}

async function _refreshAtTokenEndpoint(
  config: GoogleConfig,
  refreshToken: string,
  io: RefreshIo,
  action: string,
): Promise<RefreshedToken> {
  if (config.clientId === null || config.clientSecret === null) {
    throw new NonRetriableError(
      `${action}: GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET must be set (or TOOLSHED_API_URL)`,
    );
  }
  const tokenUrl = new URL(config.tokenUrl);
  const as: oauth.AuthorizationServer = {
    issuer: GOOGLE_ISSUER,
    token_endpoint: config.tokenUrl,
  };
  const client: oauth.Client = { client_id: config.clientId };
  const options: oauth.TokenEndpointRequestOptions = {
    signal: io.signal,
    [oauth.customFetch]: (url, init) => io.fetch(url, init),
    // oauth4webapi refuses plain http. The configuration only accepts http on
    // a loopback host (the tests' fake Google), where nothing leaves the
    // machine; everywhere else the endpoint is https and this stays off.
    [oauth.allowInsecureRequests]: tokenUrl.protocol === "http:" &&
      isLoopbackHost(tokenUrl.hostname),
  };
  let response: Response;
  try {
    response = await oauth.refreshTokenGrantRequest(
      as,
      client,
      oauth.ClientSecretPost(config.clientSecret),
      refreshToken,
      options,
    );
  } catch (error) {
    throw new Error(
      `${action}: the token endpoint is unreachable: ${toError(error).message}`,
      { cause: error },
    );
  }
  _throwIfRetriable(response, io, action);

  let body: oauth.TokenEndpointResponse;
  try {
    body = await oauth.processRefreshTokenResponse(
      as,
      client,
      await _withoutIdToken(response),
    );
  } catch (error) {
    if (error instanceof oauth.ResponseBodyError) {
      const detail =
        `the token endpoint returned ${error.status} ${error.error}`;
      if (error.error === "invalid_grant") {
        throw new NeedsReauthError(
          `${action}: ${detail} (the user must sign in to Google again)`,
          { cause: error },
        );
      }
      throw new NonRetriableError(`${action}: ${detail}`, { cause: error });
    }
    if (error instanceof oauth.WWWAuthenticateChallengeError) {
      throw new NonRetriableError(
        `${action}: the token endpoint refused the client (${error.status})`,
        { cause: error },
      );
    }
    // No `cause`: oauth4webapi attaches the whole reply to it, tokens and
    // all, and a cause is one `{error}` log away from the log.
    throw new Error(
      `${action}: the token endpoint's reply is malformed (${response.status}): ${
        toError(error).message
      }`,
    );
  }
  const expiresIn = body.expires_in ?? DEFAULT_EXPIRES_IN_S;
  return {
    token: body.access_token,
    // oauth4webapi lowercases it; Google and the charm ecosystem say "Bearer".
    tokenType: body.token_type === "bearer" ? "Bearer" : body.token_type,
    scope: body.scope ?? null,
    expiresIn,
    expiresAt: io.now() + expiresIn * 1000,
    refreshToken: body.refresh_token ?? null,
  };
}

async function _refreshViaToolshed(
  toolshedApiUrl: string,
  refreshToken: string,
  io: RefreshIo,
  action: string,
): Promise<RefreshedToken> {
  let response: Response;
  try {
    response = await io.fetch(
      `${toolshedApiUrl}/api/integrations/google-oauth/refresh`,
      {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "application/json",
        },
        body: JSON.stringify({ refreshToken }),
        signal: io.signal,
      },
    );
  } catch (error) {
    throw new Error(
      `${action}: the toolshed is unreachable: ${toError(error).message}`,
      { cause: error },
    );
  }
  _throwIfRetriable(response, io, action);
  const text = await response.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Judged below by the status.
  }
  const reply = (body ?? {}) as {
    success?: unknown;
    error?: unknown;
    tokenInfo?: Record<string, unknown>;
  };
  const info = reply.tokenInfo;
  if (
    response.ok && reply.success === true && info &&
    typeof info.token === "string" && info.token !== ""
  ) {
    const expiresIn = typeof info.expiresIn === "number"
      ? info.expiresIn
      : DEFAULT_EXPIRES_IN_S;
    return {
      token: info.token,
      tokenType: typeof info.tokenType === "string" ? info.tokenType : "Bearer",
      scope: Array.isArray(info.scope)
        ? info.scope.join(" ")
        : typeof info.scope === "string"
        ? info.scope
        : null,
      expiresIn,
      expiresAt: typeof info.expiresAt === "number"
        ? info.expiresAt
        : io.now() + expiresIn * 1000,
      refreshToken: typeof info.refreshToken === "string" &&
          info.refreshToken !== "" && info.refreshToken !== refreshToken
        ? info.refreshToken
        : null,
    };
  }
  const error = typeof reply.error === "string" ? reply.error : "";
  const detail = `the toolshed returned ${response.status}${
    error ? ` (${error.slice(0, 200)})` : ""
  }`;
  if (
    /invalid_grant/.test(error) || /invalid_grant/.test(text.slice(0, 2000))
  ) {
    throw new NeedsReauthError(
      `${action}: ${detail} (the user must sign in to Google again)`,
    );
  }
  if (response.ok) {
    throw new Error(`${action}: ${detail} without a token`);
  }
  throw new NonRetriableError(`${action}: ${detail}`);
}

/** 429 and 5xx are retriable: thrown here, before the body is read. */
function _throwIfRetriable(
  response: Response,
  io: RefreshIo,
  action: string,
): void {
  if (response.status !== 429 && response.status < 500) return;
  void response.body?.cancel();
  const what = `${action}: the endpoint returned ${response.status}`;
  const retryAfterMs = parseRetryAfter(
    response.headers.get("retry-after"),
    io.now(),
  );
  if (retryAfterMs !== undefined) throw new RetryAfterError(what, retryAfterMs);
  throw new Error(what);
}

/**
 * A run's authorized Google session: what the `gmail` and `gcal`
 * integrations' `prepare` hands the importer recipes (as `ctx.prepared`).
 *
 * It sends requests with the charm's fresh access token and the run's signal.
 * A 401 (the token was revoked or expired early) refreshes the token once per
 * run, through the same KV lease as `prepare`, and retries that request once;
 * a second 401 is left to the caller.
 *
 * @module
 */
import type { CharmRef } from "../charm/charm.ts";
import { formatCharmRef } from "../charm/charm.ts";
import { NonRetriableError } from "../lib/errors.ts";
import type { GoogleAuth } from "./auth.ts";
import { type FreshAuthDeps, freshGoogleAuth } from "./auth_refresh.ts";
import type { GoogleConfig } from "./config.ts";

/** An authorized Google session for one run of one charm. */
export class GoogleSession {
  readonly #deps: FreshAuthDeps;
  readonly #ref: CharmRef;
  #auth: GoogleAuth;
  #refresh: Promise<unknown> | null = null;

  /** Use {@linkcode openGoogleSession}. */
  constructor(deps: FreshAuthDeps, ref: CharmRef, auth: GoogleAuth) {
    this.#deps = deps;
    this.#ref = ref;
    this.#auth = auth;
  }

  /** Endpoints (API roots) this session talks to. */
  get config(): GoogleConfig {
    return this.#deps.config;
  }

  /** The charm, for messages. */
  get charm(): string {
    return formatCharmRef(this.#ref);
  }

  /** The service clock, epoch ms. */
  now(): number {
    return this.#deps.now();
  }

  /**
   * GETs `url` with the access token and the run's signal; on a 401,
   * refreshes the token once per run (requests in flight at the same time
   * share that refresh) and sends the request once more with the new token.
   */
  async get(url: string): Promise<Response> {
    const sent = this.#auth.token;
    const response = await this.#send(url, sent);
    if (response.status !== 401) return response;
    this.#refresh ??= freshGoogleAuth(this.#deps, this.#ref, {
      rejectedToken: sent,
    }).then((auth) => (this.#auth = auth));
    await this.#refresh;
    // Refused again after the refresh: the caller sees that 401.
    if (this.#auth.token === sent) return response;
    await response.body?.cancel();
    return await this.#send(url, this.#auth.token);
  }

  async #send(url: string, token: string): Promise<Response> {
    try {
      return await this.#deps.fetch(url, {
        headers: {
          authorization: `Bearer ${token}`,
          accept: "application/json",
        },
        signal: this.#deps.signal,
      });
    } catch (error) {
      if (this.#deps.signal.aborted) throw error;
      // Not the URL: its query carries sync and page tokens.
      throw new Error(
        `Cannot reach Google at ${new URL(url).origin} for charm ${this.charm}`,
        { cause: error },
      );
    }
  }
}

/**
 * Opens a session for a run: makes sure the charm's token is fresh (see
 * `freshGoogleAuth`) and returns the session over it.
 */
export async function openGoogleSession(
  deps: FreshAuthDeps,
  ref: CharmRef,
): Promise<GoogleSession> {
  const auth = await freshGoogleAuth(deps, ref);
  return new GoogleSession(deps, ref, auth);
}

/**
 * The session a run's `prepare` opened.
 *
 * @throws {NonRetriableError} when there is none: the run did not come
 *   through a Google integration (a run by hand of a charm registered
 *   with none, say).
 */
export function googleSessionOf(
  ctx: {
    prepared: unknown;
    space: string;
    charmId: string;
    integration: string | null;
  },
  recipe: string,
): GoogleSession {
  if (ctx.prepared instanceof GoogleSession) return ctx.prepared;
  throw new NonRetriableError(
    `Cannot run recipe "${recipe}" for charm ${ctx.space}/${ctx.charmId}: it needs the Google session the gmail or gcal integration prepares, and this run came through ${
      ctx.integration === null ? "a manual run" : `"${ctx.integration}"`
    }; register the charm with the integration instead`,
  );
}

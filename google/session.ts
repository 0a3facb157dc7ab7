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
  #refreshedAfter401 = false;

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
   * GETs `url` with the access token and the run's signal; on the run's first
   * 401, refreshes the token and sends it once more.
   */
  async get(url: string): Promise<Response> {
    const response = await this.#send(url);
    if (response.status !== 401 || this.#refreshedAfter401) return response;
    await response.body?.cancel();
    this.#refreshedAfter401 = true;
    this.#auth = await freshGoogleAuth(this.#deps, this.#ref, {
      rejectedToken: this.#auth.token,
    });
    return await this.#send(url);
  }

  #send(url: string): Promise<Response> {
    return this.#deps.fetch(url, {
      headers: {
        authorization: `Bearer ${this.#auth.token}`,
        accept: "application/json",
      },
      signal: this.#deps.signal,
    });
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
 *   through a Google integration (a manual run, say).
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

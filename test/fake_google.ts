/**
 * A fake Google for tests, on 127.0.0.1 with an ephemeral port: the OAuth
 * token endpoint, the toolshed's refresh endpoint, and the Gmail and Calendar
 * endpoints the importers call, with Google's documented request and reply
 * shapes and failure modes. Dispose to stop it.
 *
 * - **Token endpoint** `POST /token` (form, `client_secret_post` or basic):
 *   the `refresh_token` grant; `invalid_client` (401) for a wrong client,
 *   `invalid_grant` (400) for an unknown or revoked refresh token.
 * - **Toolshed** `POST /api/integrations/google-oauth/refresh` (JSON
 *   `{refreshToken}`): `{success, tokenInfo}`.
 * - **Gmail** under `/gmail/v1/users/me`: `profile`, `messages` (paged,
 *   `labelIds`, a simple `q`), `messages/{id}?format=metadata`, `history`
 *   (paged; 404 for a `startHistoryId` older than the kept history).
 * - **Calendar** under `/calendar/v3/calendars/{id}/events`: `singleEvents`,
 *   `timeMin`/`timeMax`, paging, `nextSyncToken` on the last page, `syncToken`
 *   (changes since, cancelled events included; 410 once invalidated; 400 when
 *   combined with `timeMin`/`timeMax`).
 * - API calls need a bearer token this fake issued and has not invalidated
 *   (else 401 with Google's body and `WWW-Authenticate`).
 *
 * Tests script it: the next replies of a route ({@linkcode FakeGoogle.failNext}),
 * holding a route's requests until released ({@linkcode FakeGoogle.hold}),
 * revoking grants, invalidating tokens, a page size cap to force paging, and
 * mailbox and calendar changes. Every request is recorded.
 *
 * @module
 */

/** Routes the fake serves, for scripting and counting. */
export type FakeRoute =
  | "token"
  | "toolshed"
  | "gmail.profile"
  | "gmail.messages.list"
  | "gmail.messages.get"
  | "gmail.history.list"
  | "calendar.events.list";

/** A scripted reply. */
export interface FakeReply {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

/** One request the fake received. */
export interface FakeCall {
  route: FakeRoute | "unknown";
  method: string;
  path: string;
  query: URLSearchParams;
  /** The bearer token sent, if any. */
  token: string | null;
  /** The form or JSON body of token requests. */
  body: Record<string, string> | null;
}

/** A message in the fake mailbox. */
export interface FakeMessage {
  id: string;
  threadId: string;
  labelIds: string[];
  snippet: string;
  /** Epoch ms. */
  internalDate: number;
  from: string;
  to: string;
  subject: string;
}

/** An event in the fake calendar (Google's shape, subset). */
export interface FakeEvent {
  id: string;
  status: "confirmed" | "tentative" | "cancelled";
  summary: string;
  location?: string;
  start: { dateTime?: string; date?: string };
  end: { dateTime?: string; date?: string };
  updated?: string;
}

/** Options for {@linkcode startFakeGoogle}. */
export interface FakeGoogleOptions {
  clientId?: string;
  clientSecret?: string;
  /** Clock for `expiresAt` in toolshed replies (default `Date.now`). */
  now?: () => number;
  /** Lifetime of issued access tokens, seconds (default 3599). */
  tokenLifetimeS?: number;
  email?: string;
}

/** The fake's mailbox. */
export interface FakeMailbox {
  /** The current history id. */
  readonly historyId: number;
  messages(): FakeMessage[];
  /** Adds a message (recorded in history as `messageAdded`). */
  add(message: Partial<FakeMessage> & { id: string }): FakeMessage;
  /** Deletes a message (`messageDeleted`). */
  remove(id: string): void;
  /** Adds and removes labels (`labelAdded` / `labelRemoved`). */
  relabel(id: string, add: string[], remove: string[]): void;
  /** Forgets all history so far: older start ids get a 404. */
  forgetHistory(): void;
}

/** The fake's calendar. */
export interface FakeCalendar {
  events(): FakeEvent[];
  /** Adds or replaces an event. */
  put(
    event: Omit<FakeEvent, "status"> & { status?: FakeEvent["status"] },
  ): void;
  /** Cancels (deletes) an event. */
  cancel(id: string): void;
  /** Invalidates every sync token issued so far (they get 410). */
  invalidateSyncTokens(): void;
}

/** A running fake Google. */
export interface FakeGoogle extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`. */
  url: string;
  clientId: string;
  clientSecret: string;
  /** Variables pointing the integrations here. */
  env(): Record<string, string>;
  calls: FakeCall[];
  /** Requests to `route` so far. */
  count(route: FakeRoute): number;
  /** The next `times` requests to `route` get `reply` instead. */
  failNext(route: FakeRoute, reply: FakeReply, times?: number): void;
  /**
   * Holds requests to `route` until `release()`; `arrived` resolves when the
   * first held request is in.
   */
  hold(route: FakeRoute): { arrived: Promise<void>; release(): void };
  /** Registers a refresh token the token endpoint accepts. */
  grant(refreshToken: string): void;
  /** Revokes a refresh token: the endpoint answers `invalid_grant`. */
  revoke(refreshToken: string): void;
  /** Issues a valid access token directly (to seed a charm). */
  issueAccessToken(): string;
  /** Invalidates every access token issued so far (API calls get 401). */
  invalidateAccessTokens(): void;
  /** Every access token ever issued. */
  issuedTokens: string[];
  /** The token endpoint returns this new refresh token on the next grants. */
  /**
   * When set, token replies carry an `id_token` with this issuer, as Google's
   * do for a grant with the `openid` scope (Google also sends the legacy
   * `accounts.google.com`, without a scheme). Unsigned: as the token
   * endpoint's own reply over TLS, it is not verified.
   */
  idTokenIssuer: string | null;
  rotateRefreshTokenTo: string | null;
  /** Caps every page size (to force paging). */
  pageSizeCap: number;
  mailbox: FakeMailbox;
  calendar: FakeCalendar;
}

const SCOPES =
  "https://www.googleapis.com/auth/gmail.readonly https://www.googleapis.com/auth/calendar.readonly";

/** Starts a fake Google on 127.0.0.1. */
export function startFakeGoogle(options: FakeGoogleOptions = {}): FakeGoogle {
  const clientId = options.clientId ?? "fake-client.apps.googleusercontent.com";
  const clientSecret = options.clientSecret ?? "fake-client-secret";
  const now = options.now ?? Date.now;
  const email = options.email ?? "user@example.com";
  const calls: FakeCall[] = [];
  const scripted = new Map<FakeRoute, FakeReply[]>();
  const holds = new Map<
    FakeRoute,
    { gate: Promise<void>; arrived: () => void; release: () => void }
  >();
  const refreshTokens = new Map<string, "valid" | "revoked">();
  const accessTokens = new Set<string>();
  let tokenSerial = 0;

  // Gmail state.
  const messages = new Map<string, FakeMessage>();
  type HistoryRecord = { id: number } & Record<string, unknown>;
  const history: HistoryRecord[] = [];
  let historyId = 1000;
  let oldestHistoryId = historyId;

  // Calendar state: each change bumps `seq`; sync tokens carry a generation.
  const events = new Map<string, { event: FakeEvent; seq: number }>();
  let seq = 0;
  let syncGeneration = 1;

  const fake: FakeGoogle = {
    url: "",
    clientId,
    clientSecret,
    env: () => ({
      GOOGLE_CLIENT_ID: clientId,
      GOOGLE_CLIENT_SECRET: clientSecret,
      GOOGLE_TOKEN_URL: `${fake.url}/token`,
      GMAIL_API_URL: `${fake.url}/gmail/v1`,
      GCAL_API_URL: `${fake.url}/calendar/v3`,
    }),
    calls,
    count: (route) => calls.filter((c) => c.route === route).length,
    failNext(route, reply, times = 1) {
      const queue = scripted.get(route) ?? [];
      for (let i = 0; i < times; i++) queue.push(reply);
      scripted.set(route, queue);
    },
    hold(route) {
      let open!: () => void;
      let arrived!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const arrival = new Promise<void>((r) => (arrived = r));
      const release = () => {
        if (holds.get(route)?.gate === gate) holds.delete(route);
        open();
      };
      holds.set(route, { gate, arrived, release });
      return { arrived: arrival, release };
    },
    grant: (token) => void refreshTokens.set(token, "valid"),
    revoke: (token) => void refreshTokens.set(token, "revoked"),
    issueAccessToken,
    invalidateAccessTokens: () => accessTokens.clear(),
    issuedTokens: [],
    rotateRefreshTokenTo: null,
    idTokenIssuer: null,
    pageSizeCap: 1000,
    mailbox: {
      get historyId() {
        return historyId;
      },
      messages: () => [...messages.values()],
      add(partial) {
        const message: FakeMessage = {
          threadId: partial.id,
          labelIds: ["INBOX"],
          snippet: `Snippet of ${partial.id}`,
          internalDate: now(),
          from: "Alice <alice@example.com>",
          to: email,
          subject: `Subject ${partial.id}`,
          ...partial,
        };
        messages.set(message.id, message);
        _record({ messagesAdded: [{ message: _ref(message) }] });
        return message;
      },
      remove(id) {
        const message = messages.get(id);
        if (!message) return;
        messages.delete(id);
        _record({ messagesDeleted: [{ message: _ref(message) }] });
      },
      relabel(id, add, remove) {
        const message = messages.get(id);
        if (!message) return;
        if (add.length) {
          message.labelIds = [...new Set([...message.labelIds, ...add])];
          _record({ labelsAdded: [{ message: _ref(message), labelIds: add }] });
        }
        if (remove.length) {
          message.labelIds = message.labelIds.filter((l) =>
            !remove.includes(l)
          );
          _record({
            labelsRemoved: [{ message: _ref(message), labelIds: remove }],
          });
        }
      },
      forgetHistory() {
        history.length = 0;
        oldestHistoryId = historyId;
      },
    },
    calendar: {
      events: () => [...events.values()].map((e) => e.event),
      put(event) {
        events.set(event.id, {
          event: { status: "confirmed", ...event },
          seq: ++seq,
        });
      },
      cancel(id) {
        const entry = events.get(id);
        if (!entry) return;
        events.set(id, {
          event: { ...entry.event, status: "cancelled" },
          seq: ++seq,
        });
      },
      invalidateSyncTokens: () => void syncGeneration++,
    },
    async [Symbol.asyncDispose]() {
      for (const hold of [...holds.values()]) hold.release();
      await server.shutdown();
    },
  };

  function issueAccessToken(): string {
    const token = `ya29.fake-${++tokenSerial}-${crypto.randomUUID()}`;
    accessTokens.add(token);
    fake.issuedTokens.push(token);
    return token;
  }

  function _ref(message: FakeMessage) {
    return {
      id: message.id,
      threadId: message.threadId,
      labelIds: [...message.labelIds],
    };
  }

  function _record(change: Record<string, unknown>): void {
    historyId++;
    history.push({ id: historyId, ...change });
  }

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      const route = _route(request.method, url.pathname);
      const auth = request.headers.get("authorization");
      const token = auth?.startsWith("Bearer ") ? auth.slice(7) : null;
      let body: Record<string, string> | null = null;
      if (route === "token") {
        body = Object.fromEntries(new URLSearchParams(await request.text()));
      } else if (route === "toolshed") {
        body = await request.json().catch(() => null);
      }
      calls.push({
        route: route ?? "unknown",
        method: request.method,
        path: url.pathname,
        query: url.searchParams,
        token,
        body,
      });
      if (route === null) {
        return _google(404, "NOT_FOUND", "notFound", "Not Found");
      }
      const hold = holds.get(route);
      if (hold) {
        hold.arrived();
        await hold.gate;
      }
      const reply = scripted.get(route)?.shift();
      if (reply) {
        return new Response(
          reply.body === undefined ? null : JSON.stringify(reply.body),
          {
            status: reply.status,
            headers: { "content-type": "application/json", ...reply.headers },
          },
        );
      }
      if (route === "token") return _token(request, body!);
      if (route === "toolshed") return _toolshed(body);
      if (token === null || !accessTokens.has(token)) {
        return _google(
          401,
          "UNAUTHENTICATED",
          "authError",
          "Request had invalid authentication credentials.",
          {
            "www-authenticate":
              'Bearer realm="https://accounts.google.com/", error="invalid_token"',
          },
        );
      }
      switch (route) {
        case "gmail.profile":
          return Response.json({
            emailAddress: email,
            messagesTotal: messages.size,
            threadsTotal: messages.size,
            historyId: String(historyId),
          });
        case "gmail.messages.list":
          return _listMessages(url.searchParams);
        case "gmail.messages.get":
          return _getMessage(url);
        case "gmail.history.list":
          return _listHistory(url.searchParams);
        case "calendar.events.list":
          return _listEvents(url);
        default:
          return _google(404, "NOT_FOUND", "notFound", "Not Found");
      }
    },
  );
  fake.url = `http://127.0.0.1:${server.addr.port}`;
  return fake;

  function _token(request: Request, form: Record<string, string>): Response {
    let id = form.client_id;
    let secret = form.client_secret;
    const basic = request.headers.get("authorization");
    if (basic?.startsWith("Basic ")) {
      const [u, p] = atob(basic.slice(6)).split(":");
      id = decodeURIComponent(u ?? "");
      secret = decodeURIComponent(p ?? "");
    }
    if (id !== clientId || secret !== clientSecret) {
      return _oauthError(
        401,
        "invalid_client",
        "The OAuth client was not found.",
      );
    }
    if (form.grant_type !== "refresh_token") {
      return _oauthError(400, "unsupported_grant_type", "Invalid grant_type");
    }
    if (refreshTokens.get(form.refresh_token ?? "") !== "valid") {
      return _oauthError(
        400,
        "invalid_grant",
        "Token has been expired or revoked.",
      );
    }
    const lifetime = options.tokenLifetimeS ?? 3599;
    const rotated = fake.rotateRefreshTokenTo;
    if (rotated !== null) {
      refreshTokens.set(rotated, "valid");
      refreshTokens.set(form.refresh_token!, "revoked");
    }
    return Response.json({
      access_token: issueAccessToken(),
      expires_in: lifetime,
      scope: SCOPES,
      token_type: "Bearer",
      ...(rotated !== null ? { refresh_token: rotated } : {}),
      ...(fake.idTokenIssuer !== null
        ? { id_token: _idToken(fake.idTokenIssuer, clientId) }
        : {}),
    }, { headers: { "cache-control": "no-store" } });
  }

  function _idToken(issuer: string, audience: string): string {
    const part = (value: unknown) =>
      btoa(JSON.stringify(value)).replaceAll("=", "").replaceAll("+", "-")
        .replaceAll("/", "_");
    // oauth4webapi checks it against the real clock.
    const iat = Math.floor(Date.now() / 1000);
    return `${part({ alg: "RS256", typ: "JWT" })}.${
      part({ iss: issuer, aud: audience, sub: "1234", iat, exp: iat + 3600 })
    }.c2ln`;
  }

  function _toolshed(body: Record<string, string> | null): Response {
    const refreshToken = body?.refreshToken ?? "";
    if (refreshTokens.get(refreshToken) !== "valid") {
      return Response.json({
        success: false,
        error: "invalid_grant: Token has been expired or revoked.",
      }, { status: 401 });
    }
    const lifetime = options.tokenLifetimeS ?? 3599;
    return Response.json({
      success: true,
      tokenInfo: {
        token: issueAccessToken(),
        tokenType: "Bearer",
        scope: SCOPES.split(" "),
        expiresIn: lifetime,
        refreshToken,
        expiresAt: now() + lifetime * 1000,
      },
    });
  }

  function _pageSize(params: URLSearchParams, fallback: number, max: number) {
    const asked = Number(params.get("maxResults") ?? fallback);
    return Math.max(1, Math.min(asked || fallback, max, fake.pageSizeCap));
  }

  function _page<T>(items: T[], params: URLSearchParams, size: number) {
    const offset = Number(params.get("pageToken") ?? "0") || 0;
    const slice = items.slice(offset, offset + size);
    const next = offset + size < items.length ? String(offset + size) : null;
    return { slice, next };
  }

  function _listMessages(params: URLSearchParams): Response {
    const labels = params.getAll("labelIds");
    const q = (params.get("q") ?? "").toLowerCase().split(/\s+/).filter(
      Boolean,
    );
    const matching = [...messages.values()]
      .filter((m) => labels.every((l) => m.labelIds.includes(l)))
      .filter((m) =>
        ["SPAM", "TRASH"].every((hidden) =>
          labels.includes(hidden) || !m.labelIds.includes(hidden)
        )
      )
      .filter((m) => {
        const text = `${m.from} ${m.to} ${m.subject} ${m.snippet}`
          .toLowerCase();
        return q.every((term) =>
          term.startsWith("from:")
            ? m.from.toLowerCase().includes(term.slice(5))
            : text.includes(term)
        );
      })
      .sort((a, b) => b.internalDate - a.internalDate);
    const { slice, next } = _page(
      matching,
      params,
      _pageSize(params, 100, 500),
    );
    return Response.json({
      ...(slice.length
        ? { messages: slice.map((m) => ({ id: m.id, threadId: m.threadId })) }
        : {}),
      ...(next !== null ? { nextPageToken: next } : {}),
      resultSizeEstimate: matching.length,
    });
  }

  function _getMessage(url: URL): Response {
    const id = decodeURIComponent(url.pathname.split("/").at(-1)!);
    const message = messages.get(id);
    if (!message) {
      return _google(
        404,
        "NOT_FOUND",
        "notFound",
        "Requested entity was not found.",
      );
    }
    if (url.searchParams.get("format") !== "metadata") {
      return _google(
        400,
        "INVALID_ARGUMENT",
        "invalidArgument",
        "The importer asks for format=metadata",
      );
    }
    const wanted = url.searchParams.getAll("metadataHeaders").map((h) =>
      h.toLowerCase()
    );
    const headers = [
      { name: "From", value: message.from },
      { name: "To", value: message.to },
      { name: "Subject", value: message.subject },
      { name: "Date", value: new Date(message.internalDate).toUTCString() },
      { name: "Message-ID", value: `<${message.id}@example.com>` },
    ].filter((h) =>
      wanted.length === 0 || wanted.includes(h.name.toLowerCase())
    );
    return Response.json({
      id: message.id,
      threadId: message.threadId,
      labelIds: message.labelIds,
      snippet: message.snippet,
      historyId: String(historyId),
      internalDate: String(message.internalDate),
      sizeEstimate: 1024,
      payload: { mimeType: "text/plain", headers },
    });
  }

  function _listHistory(params: URLSearchParams): Response {
    const start = Number(params.get("startHistoryId"));
    if (!params.has("startHistoryId") || !Number.isFinite(start)) {
      return _google(
        400,
        "INVALID_ARGUMENT",
        "invalidArgument",
        "Missing startHistoryId",
      );
    }
    if (start < oldestHistoryId) {
      return _google(
        404,
        "NOT_FOUND",
        "notFound",
        "Requested entity was not found.",
      );
    }
    const types = params.getAll("historyTypes");
    const typeKeys: Record<string, string> = {
      messageAdded: "messagesAdded",
      messageDeleted: "messagesDeleted",
      labelAdded: "labelsAdded",
      labelRemoved: "labelsRemoved",
    };
    const records = history
      .filter((r) => r.id > start)
      .map((r) => {
        const out: Record<string, unknown> = {
          id: String(r.id),
          messages: [],
        };
        for (const [type, key] of Object.entries(typeKeys)) {
          if (r[key] && (types.length === 0 || types.includes(type))) {
            out[key] = r[key];
            out.messages = (r[key] as { message: unknown }[]).map((c) =>
              c.message
            );
          }
        }
        return out;
      })
      .filter((r) => Object.keys(r).length > 2);
    const { slice, next } = _page(records, params, _pageSize(params, 100, 500));
    return Response.json({
      ...(slice.length ? { history: slice } : {}),
      ...(next !== null ? { nextPageToken: next } : {}),
      historyId: String(historyId),
    });
  }

  function _listEvents(url: URL): Response {
    const params = url.searchParams;
    const calendarId = decodeURIComponent(url.pathname.split("/")[4] ?? "");
    if (calendarId !== "primary" && calendarId !== email) {
      return _google(404, "NOT_FOUND", "notFound", "Not Found");
    }
    const syncToken = params.get("syncToken");
    let items: FakeEvent[];
    if (syncToken !== null) {
      if (
        params.has("timeMin") || params.has("timeMax") || params.has("orderBy")
      ) {
        return _google(
          400,
          "INVALID_ARGUMENT",
          "invalid",
          "Invalid sync token combination",
        );
      }
      const match = /^sync:(\d+):(\d+)$/.exec(syncToken);
      if (match === null || Number(match[1]) !== syncGeneration) {
        return _google(
          410,
          "GONE",
          "fullSyncRequired",
          "Sync token is no longer valid, a full sync is required.",
        );
      }
      const since = Number(match[2]);
      items = [...events.values()].filter((e) => e.seq > since).map((e) =>
        e.event.status === "cancelled"
          ? { id: e.event.id, status: "cancelled" } as FakeEvent
          : e.event
      );
    } else {
      const timeMin = Date.parse(params.get("timeMin") ?? "") || -Infinity;
      const timeMax = Date.parse(params.get("timeMax") ?? "") || Infinity;
      items = [...events.values()]
        .map((e) => e.event)
        .filter((e) => e.status !== "cancelled")
        .filter((e) => _ms(e.end) > timeMin && _ms(e.start) < timeMax)
        .sort((a, b) => _ms(a.start) - _ms(b.start));
    }
    const { slice, next } = _page(items, params, _pageSize(params, 250, 2500));
    return Response.json({
      kind: "calendar#events",
      summary: email,
      timeZone: "UTC",
      items: slice.map((e) => ({
        kind: "calendar#event",
        etag: `"${e.id}"`,
        htmlLink: `https://calendar.google.com/event?eid=${e.id}`,
        updated: e.updated ?? new Date(now()).toISOString(),
        organizer: { email },
        ...e,
      })),
      ...(next !== null
        ? { nextPageToken: next }
        : { nextSyncToken: `sync:${syncGeneration}:${seq}` }),
    });
  }
}

function _ms(time: { dateTime?: string; date?: string } | undefined): number {
  return Date.parse(time?.dateTime ?? time?.date ?? "") || 0;
}

function _route(method: string, path: string): FakeRoute | null {
  if (method === "POST" && path === "/token") return "token";
  if (method === "POST" && path === "/api/integrations/google-oauth/refresh") {
    return "toolshed";
  }
  if (method !== "GET") return null;
  if (path === "/gmail/v1/users/me/profile") return "gmail.profile";
  if (path === "/gmail/v1/users/me/messages") return "gmail.messages.list";
  if (path.startsWith("/gmail/v1/users/me/messages/")) {
    return "gmail.messages.get";
  }
  if (path === "/gmail/v1/users/me/history") return "gmail.history.list";
  if (/^\/calendar\/v3\/calendars\/[^/]+\/events$/.test(path)) {
    return "calendar.events.list";
  }
  return null;
}

/** Google's JSON error body. */
function _google(
  code: number,
  status: string,
  reason: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return Response.json({
    error: {
      code,
      message,
      status,
      errors: [{ domain: "global", reason, message }],
    },
  }, { status: code, headers });
}

/** An OAuth error reply (RFC 6749 §5.2). */
function _oauthError(
  status: number,
  error: string,
  description: string,
): Response {
  return Response.json({ error, error_description: description }, {
    status,
    headers: { "cache-control": "no-store" },
  });
}

/** A Google error body, for {@linkcode FakeGoogle.failNext}. */
export function googleError(
  code: number,
  reason: string,
  message = reason,
): unknown {
  return {
    error: {
      code,
      message,
      status: code === 429 ? "RESOURCE_EXHAUSTED" : "ERROR",
      errors: [{ domain: "usageLimits", reason, message }],
    },
  };
}

/**
 * The operator's dashboard at `GET /`: server-rendered HTML, no build step.
 *
 * Everyone sees the service's health, counters and the runs of the last
 * hour. The operator also sees the charms (failing and disabled first) with
 * buttons to run now, enable and disable. The page works with JavaScript off
 * and refreshes itself:
 *
 * - **With JavaScript**, the operator token is entered once and kept in
 *   `sessionStorage` (this tab, this session); the page refreshes and acts
 *   with `fetch` and `Authorization: Bearer`, through the JSON API.
 * - **Without JavaScript**, the token goes in a form field: `POST /` shows
 *   the operator view, whose forms carry the token back to
 *   `POST /dashboard/charms/:space/:charmId/:action`. In local development
 *   (no token needed) those forms redirect back to `/`, which refreshes
 *   itself with `<meta http-equiv="refresh">`.
 *
 * Every value from a charm, the store or the request is HTML-escaped by the
 * {@linkcode html} template; a Content-Security-Policy with a per-response
 * nonce allows only the page's own script and style.
 *
 * @module
 */
import type { DidKey } from "../charm/did.ts";
import { HTTPException } from "hono/http-exception";
import type { Context, Hono } from "hono";
import {
  CHARM_STATUSES,
  type CharmRef,
  type CharmStatus,
  formatCharmRef,
  parseCharmId,
} from "../charm/charm.ts";
import { parseDidKey } from "../charm/did.ts";
import { ConflictError, NotFoundError, toError } from "../lib/errors.ts";
import type { ServiceDeps } from "../service/deps.ts";
import { type CharmSummary, listCharms } from "../store/charms.ts";
import { countRecentRuns, type RecentRuns } from "../store/recent_runs.ts";
import type { QueueDepth } from "../queue/queue.ts";
import { readServiceState, type ServiceState } from "../store/service_state.ts";
import type { AppEnv, AppOptions } from "./app.ts";
import {
  authenticate,
  type Principal,
  principalName,
  requireSpace,
} from "./auth.ts";
import { enqueueManualRun, setDisabledByHand } from "./charm_actions.ts";
import { type Health, readHealth } from "./health.ts";

/** How often the page refreshes itself, seconds. */
const DASHBOARD_REFRESH_SECONDS = 10;

/** The most charms the table shows (the API and CLI list them all). */
export const DASHBOARD_MAX_CHARMS = 300;

/** The `sessionStorage` key that holds the operator token. */
const TOKEN_STORAGE_KEY = "bcs.operatorToken";

const ACTIONS = ["run", "enable", "disable"] as const;
type Action = typeof ACTIONS[number];

/** Adds the dashboard routes to `app`. */
export function registerDashboard(
  app: Hono<AppEnv>,
  deps: ServiceDeps,
  options: AppOptions,
): void {
  app.get("/", async (c) => {
    return await _page(c, deps, options, c.get("principal"), {});
  });

  // The operator view without JavaScript: the token arrives as a form field.
  app.post("/", async (c) => {
    const form = await c.req.parseBody();
    const token = _formToken(form);
    if (token === null) {
      return await _page(c, deps, options, c.get("principal"), {
        notice: { kind: "error", text: "Enter the operator token." },
      }, 401);
    }
    const principal = await _formPrincipal(token, deps, options);
    return await _page(c, deps, options, principal, { formToken: token });
  });

  app.post("/dashboard/charms/:space/:charmId/:action", async (c) => {
    // Forms post without a preflight: refuse one sent from another site
    // (browsers name it in Origin), so a page elsewhere cannot press these
    // buttons for a local operator who needs no token.
    const origin = c.req.header("origin");
    if (origin !== undefined) {
      const host = c.req.header("host") ?? new URL(c.req.url).host;
      // "null" (a sandboxed frame, a file) is another site too.
      if (!URL.canParse(origin) || new URL(origin).host !== host) {
        throw new HTTPException(403, {
          message: `origin: ${origin} may not post dashboard forms`,
        });
      }
    }
    const form = await c.req.parseBody();
    const token = _formToken(form);
    const principal = token === null
      ? c.get("principal")
      : await _formPrincipal(token, deps, options);
    const action = ACTIONS.find((a) => a === c.req.param("action"));
    if (action === undefined) {
      throw new NotFoundError(
        `action: "${c.req.param("action")}" is not one of ${
          ACTIONS.join(", ")
        }`,
      );
    }
    const ref: CharmRef = {
      space: _field("space", parseDidKey, c.req.param("space")),
      charmId: _field("charmId", parseCharmId, c.req.param("charmId")),
    };
    await requireSpace(
      deps.kv,
      principal,
      ref.space,
      `${action} ${formatCharmRef(ref)}`,
    );
    let notice: Notice;
    try {
      notice = {
        kind: "ok",
        text: await _act(deps, action, ref, principal),
      };
    } catch (error) {
      if (
        !(error instanceof NotFoundError || error instanceof ConflictError)
      ) {
        throw error;
      }
      notice = { kind: "error", text: error.message };
    }
    if (token !== null) {
      // The token lives only in this exchange: answer with the operator view
      // rather than redirect to a page that would not have it.
      return await _page(c, deps, options, principal, {
        formToken: token,
        notice,
      });
    }
    const query = new URLSearchParams({ [notice.kind]: notice.text });
    return c.redirect(`/?${query}`, 303);
  });
}

/** A message shown above the table after an action. */
interface Notice {
  kind: "ok" | "error";
  text: string;
}

/** What a page shows beyond the state. */
interface PageExtras {
  /** The token from a form (no-JavaScript operator view). */
  formToken?: string;
  notice?: Notice;
}

/** Everything a page shows, read from KV. */
interface DashboardData {
  version: string;
  did: string;
  nowMs: number;
  health: Health;
  state: ServiceState | null;
  recent: RecentRuns | null;
  /** `null` when the viewer may not see charms. */
  charms: CharmSummary[] | null;
  /** `true` when there are more charms than shown. */
  charmsTruncated: boolean;
  /** The queue's backlog, for the operator, where the driver can see it. */
  queue?: { driver: string; depth: QueueDepth | null };
}

async function _page(
  c: Context<AppEnv>,
  deps: ServiceDeps,
  options: AppOptions,
  principal: Principal,
  extras: PageExtras,
  status: 200 | 401 = 200,
): Promise<Response> {
  const nowMs = deps.now();
  const health = await readHealth(deps.kv, nowMs, options);
  const data: DashboardData = {
    version: options.version,
    did: options.serviceDid,
    nowMs,
    health,
    state: null,
    recent: null,
    charms: null,
    charmsTruncated: false,
  };
  if (health.kv === "ok") {
    // The table is read before the counters. KV reads are not one snapshot,
    // and a run's outcome commit writes both; in this order a row that shows
    // a run comes with counters that count it.
    if (principal.kind === "identity") {
      // A space holder sees the charms of their own space.
      ({ charms: data.charms, truncated: data.charmsTruncated } =
        await _charmsForTable(deps.kv, principal.did));
    }
    if (principal.kind === "operator") {
      ({ charms: data.charms, truncated: data.charmsTruncated } =
        await _charmsForTable(deps.kv));
      data.queue = {
        driver: deps.queue.name,
        depth: deps.queue.depth ? await deps.queue.depth() : null,
      };
    }
    [data.state, data.recent] = await Promise.all([
      readServiceState(deps.kv),
      countRecentRuns(deps.kv, nowMs - 3_600_000),
    ]);
  }
  const notice = extras.notice ?? _noticeFromQuery(c);
  const nonce = _nonce();
  const body = _renderDashboard(data, {
    principal,
    nonce,
    ...(extras.formToken !== undefined ? { formToken: extras.formToken } : {}),
    ...(notice !== undefined ? { notice } : {}),
  });
  return c.html(body, status, {
    "Cache-Control": "no-store",
    "Content-Security-Policy": [
      "default-src 'none'",
      `script-src 'nonce-${nonce}'`,
      `style-src 'nonce-${nonce}'`,
      "connect-src 'self'",
      "form-action 'self'",
      "base-uri 'none'",
      "frame-ancestors 'none'",
    ].join("; "),
    // same-origin, not no-referrer: under no-referrer browsers send
    // "Origin: null" with the page's own form posts, which the origin check
    // of the form route must refuse.
    "Referrer-Policy": "same-origin",
  });
}

/**
 * The charms the table shows: failing first, then disabled, then the other
 * statuses, `ok` last; at most {@linkcode DASHBOARD_MAX_CHARMS}.
 */
async function _charmsForTable(
  kv: Deno.Kv,
  space?: DidKey,
): Promise<{ charms: CharmSummary[]; truncated: boolean }> {
  if (space !== undefined) {
    const page = await listCharms(kv, { space, limit: DASHBOARD_MAX_CHARMS });
    const rank = (c: CharmSummary) =>
      c.status === "failing"
        ? 0
        : c.status === "ok"
        ? 3
        : c.status === "disabled"
        ? 1
        : 2;
    return {
      charms: page.charms.sort((a, b) => rank(a) - rank(b)),
      truncated: page.cursor !== null,
    };
  }
  const order: CharmStatus[] = [
    ...CHARM_STATUSES.filter((s) => s === "failing"),
    ...CHARM_STATUSES.filter((s) => s === "disabled"),
    ...CHARM_STATUSES.filter((s) =>
      s !== "failing" && s !== "disabled" && s !== "ok"
    ),
    "ok",
  ];
  const charms: CharmSummary[] = [];
  let truncated = false;
  for (const status of order) {
    const room = DASHBOARD_MAX_CHARMS - charms.length;
    if (room <= 0) {
      truncated = true;
      break;
    }
    const page = await listCharms(kv, { status, limit: room });
    charms.push(...page.charms);
    if (page.cursor !== null) truncated = true;
  }
  return { charms, truncated };
}

/** How the page is rendered for one viewer. */
interface RenderOptions {
  principal: Principal;
  /** The CSP nonce of the page's script and style. */
  nonce: string;
  formToken?: string;
  notice?: Notice;
}

/** Renders the dashboard page. Pure: the data in, HTML out. */
function _renderDashboard(
  data: DashboardData,
  options: RenderOptions,
): string {
  const { principal, nonce, formToken } = options;
  const fromForm = formToken !== undefined;
  return html`
    <!doctype html>
    <html lang="en">
      <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Background Charm Service</title>
    ${fromForm
      ? ""
      : html`<noscript><meta http-equiv="refresh" content="${
        String(DASHBOARD_REFRESH_SECONDS)
      }"></noscript>`}
    <style nonce="${nonce}">${raw(_CSS)}</style>
      </head>
      <body>
        <main id="dashboard" data-token-mode="${fromForm
          ? "form"
          : principal.kind === "operator"
          ? principal.via
          : "none"}">
    <header>
      <h1>Background Charm Service</h1>
      <p class="meta">version ${data.version} · service DID <code>${data
        .did}</code>
      · rendered <time datetime="${_iso(data.nowMs)}">${_iso(
        data.nowMs,
      )}</time></p>
    </header>
    <p id="notice" class="notice ${options.notice?.kind ??
      ""}" role="status">${options.notice?.text ?? ""}</p>
    ${_healthSection(data)}
    ${_countersSection(data)}
    ${_accessSection(principal, formToken)}
    ${data.charms === null ? "" : _charmsSection(data.charms, data, formToken)}
        </main>
        <script nonce="${nonce}">${raw(_script())}</script>
      </body>
    </html>
  `.toString();
}

function _healthSection(data: DashboardData): SafeHtml {
  const h = data.health;
  return html`<section class="health ${h.ok ? "ok" : "bad"}">
  <h2>Health: <span id="health-status">${h.ok ? "ok" : "not ok"}</span></h2>
  <p>KV ${h.kv}${
    h.reason
      ? html`
        · ${h.reason}
      `
      : ""
  } · last cron tick ${h.lastTickAt ? _iso(h.lastTickAt) : "none yet"}</p>
</section>`;
}

function _countersSection(data: DashboardData): SafeHtml {
  const s = data.state;
  const r = data.recent;
  if (s === null || r === null) return html``;
  const cell = (label: string, value: string | number, id: string) =>
    html`
      <div
        class="counter"><span class="label">${label}</span><span class="value" id="${id}">${String(
          value,
        )}</span></div>
    `;
  return html`<section class="counters">
  <h2>Counters</h2>
  <div class="grid">
    ${cell("charms", s.charms.total, "count-charms")}
    ${cell("enabled", s.charms.enabled, "count-enabled")}
    ${cell("disabled", s.charms.disabled, "count-disabled")}
    ${cell("cycles", s.cyclesCompleted, "count-cycles")}
    ${cell("successes (all time)", s.totalSuccesses, "count-successes")}
    ${cell("failures (all time)", s.totalFailures, "count-failures")}
    ${cell("dead letters (all time)", s.deadLetters, "count-dead-letters")}
  </div>
  <h2>Runs in the last hour</h2>
  <div class="grid">
    ${cell("succeeded", r.succeeded, "hour-succeeded")}
    ${cell("failed", r.failed, "hour-failed")}
  </div>
  ${_queueSection(data)}
</section>`;
}

function _queueSection(data: DashboardData): SafeHtml {
  if (data.queue === undefined) return html``;
  const d = data.queue.depth;
  const cell = (label: string, value: string | number, id: string) =>
    html`<div class="counter"><span class="label">${label}</span><span
        class="value" id="${id}">${String(value)}</span></div>`;
  if (d === null) {
    return html`
      <h2>Queue</h2>
      <p id="queue-driver">${data.queue
        .driver} driver (its backlog is not visible)</p>
    `;
  }
  const more = d.truncated ? "≥ " : "";
  return html`
    <h2>Queue</h2>
    <p id="queue-driver">${data.queue.driver} driver</p>
    <div class="grid">
        ${cell("due now", `${more}${d.dueNow}`, "queue-due")}
        ${cell("delayed", `${more}${d.delayed}`, "queue-delayed")}
        ${cell("leased", `${more}${d.leased}`, "queue-leased")}
        ${cell(
          "oldest due",
          `${Math.round(d.oldestDueAgeMs / 1000)} s`,
          "queue-oldest",
        )}
      </div>
  `;
}

function _accessSection(
  principal: Principal,
  formToken: string | undefined,
): SafeHtml {
  if (principal.kind === "operator") {
    const how = formToken !== undefined
      ? html`
        Operator view from the token you entered (not kept: without JavaScript each action sends it again).
          <form method="post"
          action="/"><input type="hidden" name="token" value="${formToken}"><button type="submit">Refresh</button></form>
      `
      : principal.via === "open"
      ? html`Open access: no <code>ADMIN_TOKEN</code> is set (local development).`
      : principal.via === "admin-token"
      ? html`
        Signed in with the operator token, kept for this browser session. <button
          type="button" id="forget-token">Forget it</button>
      `
      : html`
        Signed in with the operator identity's token. <button type="button"
          id="forget-token">Forget it</button>
      `;
    return html`
      <section class="access">
        <p>${how}</p>
      </section>
    `;
  }
  const who = principal.kind === "identity"
    ? html`<p id="signed-in-as">Signed in as ${principal.did}: the charms of your space.</p>`
    : html``;
  return html`<section class="access">
  ${who}
  <form id="token-form" method="post" action="/">
    <label>Token (the operator's, or your space's from <code>deno task charms token</code>) <input type="password" name="token" autocomplete="current-password" required></label>
    <button type="submit">Show charms</button>
  </form>
  <p class="hint">The token is kept in this tab's session storage (with JavaScript) and sent only to this service.</p>
</section>`;
}

function _charmsSection(
  charms: CharmSummary[],
  data: DashboardData,
  formToken: string | undefined,
): SafeHtml {
  const rows = charms.map((charm) => _charmRow(charm, formToken));
  return html`<section class="charms">
  <h2>Charms</h2>
  ${
    data.charmsTruncated
      ? html`
        <p
          class="hint">Showing the first ${String(
            charms.length,
          )}; list them all with <code>deno task charms list</code> or <code>GET /api/charms</code>.</p>
      `
      : ""
  }
  ${
    charms.length === 0 ? html`<p>No charms yet.</p>` : html`
      <table>
        <thead>
          <tr>
            <th>status</th>
            <th>charm</th>
            <th>recipe</th>
            <th>last run</th>
            <th>consecutive failures</th>
            <th>last error</th>
            <th>actions</th>
          </tr>
        </thead>
        <tbody>
      ${rows}
          </tbody>
      </table>
    `
  }
</section>`;
}

function _charmRow(
  charm: CharmSummary,
  formToken: string | undefined,
): SafeHtml {
  const ref = formatCharmRef(charm);
  const state = charm.state;
  const path = `${encodeURIComponent(charm.space)}/${
    encodeURIComponent(charm.charmId)
  }`;
  const button = (action: Action, label: string, disabled = false) =>
    html`
      <form method="post" action="/dashboard/charms/${path}/${action}"
        data-api="/api/charms/${path}/${action}"
        data-done="${label}: ${charm.charmId}">${formToken !== undefined
          ? html`<input type="hidden" name="token" value="${formToken}">`
          : ""}<button type="submit"${disabled
          ? raw(" disabled")
          : ""} data-action="${action}">${label}</button></form>
    `;
  return html`
    <tr data-charm="${ref}" class="status-${charm.status}">
      <td><span class="badge ${charm.status}">${charm.status}</span></td>
      <td><span class="space" title="${charm.space}">${_shortDid(
        charm.space,
      )}</span> / <strong>${charm.charmId}</strong></td>
      <td>${charm.recipe}</td>
      <td class="last-run">${state.lastExecuted === null
        ? "never"
        : html`<time datetime="${_iso(state.lastExecuted)}">${
          _iso(state.lastExecuted)
        }</time>`}</td>
      <td class="failures">${String(state.consecutiveFailures)}</td>
      <td class="last-error">${state.lastError ?? ""}${_reason(state)
        ? html`<div class="reason">${_reason(state)}</div>`
        : ""}</td>
      <td class="actions">${button(
        "run",
        "Run now",
        state.disabled,
      )}${state.disabled
        ? button("enable", "Enable")
        : button("disable", "Disable")}</td>
    </tr>
  `;
}

/** Why a charm does not run, if it does not. */
function _reason(state: CharmSummary["state"]): string | null {
  return state.disabledReason ?? state.needsReauthReason ?? null;
}

/** HTML that is already safe: {@linkcode html} inserts it unescaped. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

/** Marks a trusted constant as HTML (never for data). */
function raw(value: string): SafeHtml {
  return new SafeHtml(value);
}

/**
 * A template tag that escapes every interpolated value unless it is
 * {@linkcode SafeHtml} (the result of another `html` template); arrays are
 * joined.
 */
export function html(
  strings: TemplateStringsArray,
  ...values: unknown[]
): SafeHtml {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) {
    out += _insert(values[i]) + strings[i + 1]!;
  }
  return new SafeHtml(out);
}

function _insert(value: unknown): string {
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(_insert).join("");
  if (value === null || value === undefined || value === false) return "";
  return escapeHtml(String(value));
}

/** Escapes `& < > " '` for HTML text and quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replaceAll("&", "&amp;").replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;").replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

function _iso(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function _shortDid(did: string): string {
  return did.length > 24 ? `${did.slice(0, 14)}…${did.slice(-6)}` : did;
}

function _nonce(): string {
  return btoa(
    String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
  );
}

function _formToken(form: Record<string, unknown>): string | null {
  const token = form.token;
  return typeof token === "string" && token.trim() !== "" ? token.trim() : null;
}

async function _formPrincipal(
  token: string,
  deps: ServiceDeps,
  options: AppOptions,
): Promise<Principal> {
  return await authenticate(`Bearer ${token}`, {
    adminToken: options.adminToken,
    serviceDid: options.serviceDid,
    openAccess: false,
    now: deps.now,
  });
}

async function _act(
  deps: ServiceDeps,
  action: Action,
  ref: CharmRef,
  principal: Principal,
): Promise<string> {
  if (action === "run") {
    const { runId } = await enqueueManualRun(deps, ref);
    return `Run now: ${ref.charmId} (run ${runId} enqueued)`;
  }
  await setDisabledByHand(
    deps,
    ref,
    action === "disable",
    principalName(principal),
  );
  return `${action === "enable" ? "Enabled" : "Disabled"}: ${ref.charmId}`;
}

/**
 * Shows a notice passed back by a redirect (`?ok=` or `?error=`): only in
 * local development, the one place the forms redirect with one, and only to
 * a page this site led to, so a link elsewhere cannot put its own words on
 * the service's page (a browser says where a navigation came from in
 * `Sec-Fetch-Site`).
 */
function _noticeFromQuery(c: Context<AppEnv>): Notice | undefined {
  const principal = c.get("principal");
  if (principal.kind !== "operator" || principal.via !== "open") {
    return undefined;
  }
  const from = c.req.header("sec-fetch-site");
  if (from !== undefined && from !== "same-origin") return undefined;
  const ok = c.req.query("ok");
  if (ok) return { kind: "ok", text: ok.slice(0, 200) };
  const error = c.req.query("error");
  if (error) return { kind: "error", text: error.slice(0, 200) };
  return undefined;
}

function _field<T>(name: string, parse: (value: string) => T, value: string) {
  try {
    return parse(value);
  } catch (error) {
    throw new TypeError(`${name}: ${toError(error).message}`, { cause: error });
  }
}

const _CSS = `
:root { font-family: system-ui, sans-serif; color: #1d1d1f; background: #f6f7f9; }
body { margin: 0 auto; max-width: 72rem; padding: 1rem 1.5rem 3rem; }
h1 { margin: 0.2rem 0; font-size: 1.5rem; }
h2 { font-size: 1.05rem; margin: 1.2rem 0 0.5rem; }
code, .space { font-family: ui-monospace, monospace; font-size: 0.85em; }
.meta, .hint { color: #555; font-size: 0.9rem; }
.notice:empty { display: none; }
.notice { padding: 0.5rem 0.8rem; border-radius: 6px; }
.notice.ok { background: #e3f6e8; }
.notice.error { background: #fde4e1; }
.health { padding: 0.2rem 1rem; border-radius: 8px; border-left: 6px solid; background: #fff; }
.health.ok { border-color: #2e9b4f; }
.health.bad { border-color: #d1392b; }
.grid { display: flex; flex-wrap: wrap; gap: 0.6rem; }
.counter { background: #fff; border-radius: 8px; padding: 0.5rem 0.9rem; min-width: 7rem; }
.counter .label { display: block; color: #555; font-size: 0.8rem; }
.counter .value { font-size: 1.4rem; font-weight: 600; }
.access form { display: inline-flex; gap: 0.5rem; align-items: center; }
table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 8px; }
th, td { text-align: left; padding: 0.45rem 0.6rem; border-bottom: 1px solid #e5e5ea; vertical-align: top; }
th { font-size: 0.8rem; color: #555; font-weight: 600; }
td.last-error { max-width: 22rem; overflow-wrap: anywhere; font-size: 0.85rem; color: #8a1f14; }
td.last-error .reason { color: #555; }
td.actions { white-space: nowrap; }
td.actions form { display: inline; margin-right: 0.3rem; }
.badge { display: inline-block; padding: 0.1rem 0.5rem; border-radius: 999px; font-size: 0.8rem; font-weight: 600; color: #fff; background: #b7791f; }
.badge.ok { background: #2e9b4f; }
.badge.failing { background: #d1392b; }
.badge.disabled { background: #6e6e73; }
tr.status-failing { background: #fff5f4; }
tr.status-disabled { background: #f2f2f4; }
button { cursor: pointer; }
`;

/** The page's script: keeps the token, refreshes, acts through the API. */
function _script(): string {
  return `
(() => {
  const KEY = ${JSON.stringify(TOKEN_STORAGE_KEY)};
  const token = () => sessionStorage.getItem(KEY);
  const headers = () => token() ? { authorization: "Bearer " + token() } : {};
  function show(kind, text) {
    const el = document.getElementById("notice");
    if (!el) return;
    el.className = "notice " + kind;
    el.textContent = text;
  }
  async function refresh(notice) {
    let res;
    try {
      res = await fetch("/", { headers: headers(), cache: "no-store" });
    } catch (error) {
      show("error", "Cannot reach the service: " + error.message);
      return;
    }
    if (res.status === 401 && token()) {
      sessionStorage.removeItem(KEY);
      await refresh({ kind: "error", text: "The operator token was refused; enter it again." });
      return;
    }
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    const next = doc.getElementById("dashboard");
    const current = document.getElementById("dashboard");
    if (next && current) current.replaceWith(next);
    if (notice) show(notice.kind, notice.text);
  }
  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.id === "token-form") {
      event.preventDefault();
      sessionStorage.setItem(KEY, form.elements.token.value.trim());
      await refresh();
      return;
    }
    if (form.dataset.api && !form.querySelector("input[name=token]")) {
      event.preventDefault();
      const res = await fetch(form.dataset.api, { method: "POST", headers: headers() });
      const body = await res.json().catch(() => ({}));
      await refresh(res.ok
        ? { kind: "ok", text: form.dataset.done }
        : { kind: "error", text: body.error || ("HTTP " + res.status) });
    }
  });
  document.addEventListener("click", async (event) => {
    if (event.target instanceof Element && event.target.id === "forget-token") {
      sessionStorage.removeItem(KEY);
      await refresh({ kind: "ok", text: "Forgot the operator token." });
    }
  });
  setInterval(() => refresh(), ${DASHBOARD_REFRESH_SECONDS * 1000});
  if (token() && document.getElementById("dashboard").dataset.tokenMode === "none") refresh();
})();
`;
}

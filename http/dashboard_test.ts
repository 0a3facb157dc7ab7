import assert from "node:assert/strict";
import { type Charm, initialCharmState } from "../charm/charm.ts";
import { setCharmDisabled, writeCharmState } from "../store/charms.ts";
import { charmKey, charmStateKey } from "../store/keys.ts";
import { countRun } from "../store/recent_runs.ts";
import { SPACE } from "../test/test_deps.ts";
import { escapeHtml, html } from "./dashboard.ts";
import {
  ADMIN_TOKEN,
  createCounter,
  type Harness,
  harness,
  spaceIdentity,
  T0,
} from "./test_harness.ts";

const OPERATOR = { authorization: `Bearer ${ADMIN_TOKEN}` };
const EVIL = `<img src=x onerror="alert('pwned')"><script>alert(1)</script>`;

async function _page(
  h: Harness,
  init: RequestInit & { path?: string } = {},
): Promise<{ res: Response; text: string }> {
  const res = await h.app.request(init.path ?? "/", init);
  return { res, text: await res.text() };
}

function _form(fields: Record<string, string>): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields).toString(),
  };
}

/** The `tr` of a charm, as text. */
function _row(text: string, charmId: string): string {
  const match = text.match(
    new RegExp(`<tr data-charm="${SPACE}/${charmId}"[\\s\\S]*?</tr>`),
  );
  assert.ok(match, `row of ${charmId}`);
  return match[0];
}

Deno.test("GET / shows health, counters and charms, failing and disabled first", async () => {
  await using h = await harness();
  for (const id of ["a-ok", "b-disabled", "c-failing"]) {
    await createCounter(h, id);
  }
  await setCharmDisabled(
    h.deps.kv,
    { space: SPACE, charmId: "b-disabled" },
    true,
    "by test",
  );
  const failingRef = { space: SPACE, charmId: "c-failing" };
  await writeCharmState(
    h.deps.kv.atomic(),
    (await h.deps.kv.get<Charm>(charmKey(failingRef))).value!,
    initialCharmState(),
    {
      ...initialCharmState(),
      consecutiveFailures: 2,
      lastError: "Error: boom",
      lastExecuted: T0 - 5_000,
    },
  ).commit();
  const { res, text } = await _page(h);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assert.equal(res.headers.get("cache-control"), "no-store");
  assert.match(
    res.headers.get("content-security-policy") ?? "",
    /script-src 'nonce-[^']+'/,
  );
  assert.match(
    text,
    /<noscript><meta http-equiv="refresh" content="10"><\/noscript>/,
  );
  assert.match(text, /id="health-status">ok</);
  assert.match(text, /id="count-charms">3</);
  assert.match(text, /id="count-disabled">1</);
  const order = [...text.matchAll(/<tr data-charm="[^/]+\/([^"]+)"/g)].map((
    m,
  ) => m[1]);
  assert.deepEqual(order, ["c-failing", "b-disabled", "a-ok"]);
  const failing = _row(text, "c-failing");
  assert.match(failing, /class="badge failing"/);
  assert.match(failing, /<td class="failures">2<\/td>/);
  assert.match(failing, /Error: boom/);
  assert.match(failing, /2025-01-01 12:00:25Z/);
  const disabled = _row(text, "b-disabled");
  assert.match(disabled, /data-action="enable"/);
  assert.match(disabled, /<button type="submit" disabled data-action="run">/);
  assert.match(_row(text, "a-ok"), /<td class="last-run">never<\/td>/);
});

Deno.test("GET / escapes charm content: no HTML injection", async () => {
  await using h = await harness();
  await createCounter(h, "evil");
  const ref = { space: SPACE, charmId: "evil" } as const;
  await setCharmDisabled(h.deps.kv, ref, true, EVIL);
  const entry = await h.deps.kv.get<ReturnType<typeof initialCharmState>>(
    charmStateKey(ref),
  );
  await h.deps.kv.set(charmStateKey(ref), {
    ...entry.value!,
    lastError: EVIL,
  });
  const { text } = await _page(h, {
    path: `/?error=${encodeURIComponent(EVIL)}`,
  });
  assert.ok(!text.includes("<img"), "no raw <img>");
  assert.ok(!text.includes("<script>alert"), "no raw <script>");
  assert.ok(text.includes(escapeHtml(EVIL)));
  // The only script is the page's own, with its nonce.
  assert.equal([...text.matchAll(/<script\b/g)].length, 1);
  assert.match(text, /<script nonce="[^"]+">/);
});

Deno.test("html`` escapes interpolations and nests safely", () => {
  const inner = html`<b>${"<i>"}</b>`;
  assert.equal(
    html`<p title="${`"'`}">${inner}${["<", html`<br>`]}</p>`.toString(),
    `<p title="&quot;&#39;"><b>&lt;i&gt;</b>&lt;<br></p>`,
  );
});

Deno.test("with an admin token, GET / shows the public view and a token form until the token is given", async () => {
  await using h = await harness({ adminToken: ADMIN_TOKEN });
  await createCounter(h, "c1", SPACE, OPERATOR);
  const anonymous = await _page(h);
  assert.equal(anonymous.res.status, 200);
  assert.match(anonymous.text, /id="count-charms">1</);
  assert.match(
    anonymous.text,
    /<form id="token-form" method="post" action="\/">/,
  );
  assert.doesNotMatch(anonymous.text, /data-charm=/);

  // With JavaScript: the page fetches itself with the bearer token.
  const viaHeader = await _page(h, { headers: OPERATOR });
  assert.match(viaHeader.text, /data-charm="[^"]+\/c1"/);
  assert.doesNotMatch(viaHeader.text, /name="token"/);
  assert.match(viaHeader.text, /data-token-mode="admin-token"/);

  // A space's own token is not the operator: it sees its own space's charms.
  const holder = await spaceIdentity();
  const space = await h.tokenFor(holder);
  const asSpace = await _page(h, {
    headers: { authorization: `Bearer ${space}` },
  });
  assert.match(asSpace.text, /data-token-mode="none"/);
  if (holder.did === SPACE) {
    assert.match(asSpace.text, /data-charm="[^"]+\/c1"/);
  } else {
    assert.doesNotMatch(asSpace.text, /data-charm=/);
  }

  // A wrong token is refused.
  const wrong = await _page(h, { headers: { authorization: "Bearer nope" } });
  assert.equal(wrong.res.status, 401);
});

Deno.test("without JavaScript, the token travels in form fields and actions answer with the operator view", async () => {
  await using h = await harness({ adminToken: ADMIN_TOKEN });
  await createCounter(h, "c1", SPACE, OPERATOR);
  const view = await _page(h, { ..._form({ token: ADMIN_TOKEN }) });
  assert.equal(view.res.status, 200);
  assert.match(view.text, /data-charm="[^"]+\/c1"/);
  assert.doesNotMatch(view.text, /http-equiv="refresh"/);
  assert.match(
    view.text,
    /<input type="hidden" name="token" value="s3cret-admin-token">/,
  );

  const action = `/dashboard/charms/${encodeURIComponent(SPACE)}/c1/run`;
  const ran = await _page(h, {
    path: action,
    ..._form({ token: ADMIN_TOKEN }),
  });
  assert.equal(ran.res.status, 200);
  assert.match(
    ran.text,
    /class="notice ok"[^>]*>Run now: c1 \(run [0-9a-f-]+ enqueued\)/,
  );
  assert.equal(h.sent.length, 1);

  const disable = `/dashboard/charms/${encodeURIComponent(SPACE)}/c1/disable`;
  const disabled = await _page(h, {
    path: disable,
    ..._form({ token: ADMIN_TOKEN }),
  });
  assert.match(_row(disabled.text, "c1"), /class="badge disabled"/);

  // No token, or a wrong one: refused, nothing done.
  const none = await _page(h, { path: action, ..._form({}) });
  assert.equal(none.res.status, 401);
  const wrong = await _page(h, { path: action, ..._form({ token: "nope" }) });
  assert.equal(wrong.res.status, 401);
  const empty = await _page(h, { ..._form({ token: "" }) });
  assert.equal(empty.res.status, 401);
  assert.equal(h.sent.length, 1);
});

Deno.test("in local development, dashboard forms redirect back to / with a notice", async () => {
  await using h = await harness();
  await createCounter(h, "c1");
  const base = `/dashboard/charms/${encodeURIComponent(SPACE)}/c1`;
  const { res } = await _page(h, { path: `${base}/disable`, ..._form({}) });
  assert.equal(res.status, 303);
  const location = res.headers.get("location") ?? "";
  assert.match(location, /^\/\?ok=Disabled/);
  // The browser follows the redirect from this site.
  const back = await _page(h, {
    path: location,
    headers: { "sec-fetch-site": "same-origin" },
  });
  assert.match(back.text, /class="notice ok"[^>]*>Disabled: c1</);
  // A link from elsewhere with its own words shows nothing of them.
  const lure = "Session expired: paste your token at evil.example";
  const linked = await _page(h, {
    path: `/?error=${encodeURIComponent(lure)}`,
    headers: { "sec-fetch-site": "cross-site" },
  });
  assert.ok(!linked.text.includes("evil.example"));
  assert.doesNotMatch(linked.text, /class="notice (ok|error)"/);
  // An exposed service's forms never redirect with a notice: a link's text
  // shows nowhere, whatever the browser sends or does not.
  await using exposed = await harness({ exposed: true });
  const shown = await _page(exposed, {
    path: `/?error=${encodeURIComponent(lure)}`,
  });
  assert.ok(!shown.text.includes("evil.example"));
  // Running a disabled charm: the conflict comes back as an error notice.
  const conflict = await _page(h, { path: `${base}/run`, ..._form({}) });
  assert.equal(conflict.res.status, 303);
  assert.match(conflict.res.headers.get("location") ?? "", /^\/\?error=/);
  const unknown = await _page(h, { path: `${base}/explode`, ..._form({}) });
  assert.equal(unknown.res.status, 404);
});

Deno.test("GET / counts the runs that finished in the last hour", async () => {
  await using h = await harness();
  await createCounter(h, "c1");
  // As run outcomes count them, in their commits.
  const op = h.deps.kv.atomic();
  countRun(op, T0 - 10_000, "succeeded");
  countRun(op, T0 - 20_000, "succeeded");
  countRun(op, T0 - 30_000, "failed");
  countRun(op, T0 - 3_700_000, "succeeded");
  await op.commit();
  const { text } = await _page(h);
  assert.match(text, /id="hour-succeeded">2</);
  assert.match(text, /id="hour-failed">1</);
});

Deno.test("POST /dashboard/charms/… refuses a form sent from another site", async () => {
  await using h = await harness();
  await createCounter(h, "x1");
  for (const origin of ["https://evil.example", "null"]) {
    const res = await h.app.request(
      `http://127.0.0.1:8000/dashboard/charms/${SPACE}/x1/disable`,
      {
        method: "POST",
        headers: {
          origin,
          host: "127.0.0.1:8000",
          "content-type": "application/x-www-form-urlencoded",
        },
        body: "",
      },
    );
    assert.equal(res.status, 403, origin);
  }
  const detail = await (await h.call("GET", `/api/charms/${SPACE}/x1`)).json();
  assert.equal(detail.status, "ok");
  // The dashboard's own form (same origin) still works.
  const own = await h.app.request(
    `http://127.0.0.1:8000/dashboard/charms/${SPACE}/x1/disable`,
    {
      method: "POST",
      headers: {
        origin: "http://127.0.0.1:8000",
        host: "127.0.0.1:8000",
        "content-type": "application/x-www-form-urlencoded",
      },
      body: "",
    },
  );
  assert.equal(own.status, 303);
});

Deno.test("GET / shows the kv queue's backlog to the operator", async () => {
  const { kvQueue } = await import("../queue/kv_queue.ts");
  await using h = await harness({
    adminToken: ADMIN_TOKEN,
    queue: (kv) =>
      kvQueue(kv, {
        owner: "t",
        leaseMs: 1_000,
        maxInFlight: 1,
        now: () => Date.now(),
      }),
  });
  await createCounter(h, "q1", SPACE, OPERATOR);
  assert.equal(
    (await h.call("POST", `/api/charms/${SPACE}/q1/run`, undefined, OPERATOR))
      .status,
    202,
  );
  const page = await (await h.app.request("/", { headers: OPERATOR })).text();
  assert.match(page, /id="queue-driver">kv driver</);
  assert.match(page, /id="queue-due">1</);
  const publicPage = await (await h.app.request("/")).text();
  assert.doesNotMatch(publicPage, /queue-driver/);
});

Deno.test("GET / shows a space holder their own space's charms, and only those", async () => {
  const { spaceIdentity, otherSpaceIdentity } = await import(
    "./test_harness.ts"
  );
  await using h = await harness({ adminToken: ADMIN_TOKEN });
  const mine = await spaceIdentity();
  const other = await otherSpaceIdentity();
  await createCounter(h, "mine-1", mine.did, OPERATOR);
  await createCounter(h, "theirs-1", other.did, OPERATOR);
  const token = await h.tokenFor(mine);
  const page = await (await h.app.request("/", {
    headers: { authorization: `Bearer ${token}` },
  })).text();
  assert.match(page, /id="signed-in-as"/);
  assert.match(page, /mine-1/);
  assert.doesNotMatch(page, /theirs-1/);
  // Without JavaScript: a form with the token acts on their own charm only.
  const form = (charmSpace: string, charmId: string) =>
    h.app.request(
      `http://127.0.0.1:8000/dashboard/charms/${charmSpace}/${charmId}/disable`,
      {
        method: "POST",
        headers: {
          origin: "http://127.0.0.1:8000",
          host: "127.0.0.1:8000",
          "content-type": "application/x-www-form-urlencoded",
        },
        body: new URLSearchParams({ token }).toString(),
      },
    );
  assert.equal((await form(mine.did, "mine-1")).status, 200);
  const disabled = await (await h.call(
    "GET",
    `/api/charms/${mine.did}/mine-1`,
    undefined,
    OPERATOR,
  )).json();
  assert.equal(disabled.state.disabledReason, `disabled by ${mine.did}`);
  assert.equal((await form(other.did, "theirs-1")).status, 403);
  const theirs = await (await h.call(
    "GET",
    `/api/charms/${other.did}/theirs-1`,
    undefined,
    OPERATOR,
  )).json();
  assert.equal(theirs.status, "ok");
});

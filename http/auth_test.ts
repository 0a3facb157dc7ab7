import assert from "node:assert/strict";
import { SignJWT } from "jose";
import { Identity } from "../identity/identity.ts";
import { signJws } from "../identity/token.ts";
import { OTHER_SPACE, SPACE } from "../test/test_deps.ts";
import { authenticate, timingSafeEqual } from "./auth.ts";
import {
  ADMIN_TOKEN,
  charmPath,
  createCounter,
  expectStatus,
  harness,
  operatorIdentity,
  otherSpaceIdentity,
  spaceIdentity,
  strangerIdentity,
  T0,
} from "./test_harness.ts";

const OPERATOR = { authorization: `Bearer ${ADMIN_TOKEN}` };

/** A harness with an admin token, a charm in each space, and their tokens. */
async function _spaces(options: { exposed?: boolean; adminToken?: string } = {
  adminToken: ADMIN_TOKEN,
}) {
  const h = await harness(options);
  const operatorHeaders = options.adminToken ? OPERATOR : {};
  await createCounter(h, "mine", SPACE, operatorHeaders);
  await createCounter(h, "theirs", OTHER_SPACE, operatorHeaders);
  const owner = await spaceIdentity();
  const other = await otherSpaceIdentity();
  return {
    h,
    ownerToken: await h.tokenFor(owner),
    otherToken: await h.tokenFor(other),
    strangerToken: await h.tokenFor(await strangerIdentity()),
    [Symbol.asyncDispose]: () => h[Symbol.asyncDispose](),
  };
}

async function _refused(
  status: 401 | 403,
  reason: string,
  response: Promise<Response>,
): Promise<string> {
  const res = await response;
  const body = await expectStatus(status, Promise.resolve(res));
  assert.equal(body.reason, reason, JSON.stringify(body));
  assert.equal(typeof body.error, "string");
  if (status === 401) {
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer /);
  }
  return String(body.error);
}

Deno.test("a space's own token reads, runs, disables and enables its charms", async () => {
  await using s = await _spaces();
  const { h, ownerToken } = s;
  const detail = await expectStatus(
    200,
    h.callAs(ownerToken, "GET", charmPath("mine")),
  );
  assert.equal(detail.charmId, "mine");
  await expectStatus(
    202,
    h.callAs(ownerToken, "POST", charmPath("mine", "/run")),
  );
  const disabled = await expectStatus(
    200,
    h.callAs(ownerToken, "POST", charmPath("mine", "/disable")),
  );
  assert.equal(
    (disabled.state as { disabledReason: string }).disabledReason,
    `disabled by ${SPACE}`,
  );
  await expectStatus(
    200,
    h.callAs(ownerToken, "POST", charmPath("mine", "/enable")),
  );
  await expectStatus(
    201,
    h.callAs(ownerToken, "POST", "/api/charms", {
      space: SPACE,
      recipe: "counter",
      charmId: "new",
    }),
  );
  await expectStatus(
    200,
    h.callAs(ownerToken, "POST", "/api/integrations/manual/charms", {
      space: SPACE,
      charmId: "new",
    }),
  );
  await expectStatus(
    200,
    h.callAs(
      ownerToken,
      "DELETE",
      `/api/integrations/manual/charms/${SPACE}/new`,
    ),
  );
  const page = await expectStatus(
    200,
    h.callAs(ownerToken, "GET", `/api/charms?space=${SPACE}`),
  );
  assert.deepEqual(
    (page.charms as { charmId: string }[]).map((c) => c.charmId),
    ["mine", "new"],
  );
});

Deno.test("refused: missing token 401", async () => {
  await using s = await _spaces();
  const error = await _refused(
    401,
    "missing_token",
    s.h.call("GET", charmPath("mine")),
  );
  assert.match(error, /^missing bearer token/);
});

Deno.test("refused: bad signature 401", async () => {
  await using s = await _spaces();
  // The payload names SPACE as issuer, but another key signed it.
  const forged = await signJws(await strangerIdentity(), {
    iss: SPACE,
    aud: s.h.serviceDid,
    iat: T0 / 1000,
    exp: T0 / 1000 + 600,
  });
  const error = await _refused(
    401,
    "bad_signature",
    s.h.callAs(forged, "GET", charmPath("mine")),
  );
  assert.match(error, /^invalid token signature/);
  // A tampered payload under a genuine signature fails the same way.
  const [head, , signature] = s.ownerToken.split(".");
  const body = btoa(JSON.stringify({
    iss: SPACE,
    aud: s.h.serviceDid,
    iat: T0 / 1000,
    exp: T0 / 1000 + 3000,
  })).replaceAll("=", "").replaceAll("+", "-").replaceAll("/", "_");
  await _refused(
    401,
    "bad_signature",
    s.h.callAs(`${head}.${body}.${signature}`, "GET", charmPath("mine")),
  );
});

Deno.test("refused: expired 401, also for a token that worked before (replay)", async () => {
  await using s = await _spaces();
  const { h } = s;
  const token = await h.tokenFor(await spaceIdentity(), 300);
  await expectStatus(200, h.callAs(token, "GET", charmPath("mine")));
  h.clock.t = T0 + 300_000 + 61_000; // past exp and the 60 s skew allowance
  const error = await _refused(
    401,
    "expired",
    h.callAs(token, "GET", charmPath("mine")),
  );
  assert.match(error, /^token expired/);
});

Deno.test("refused: wrong audience 401", async () => {
  await using s = await _spaces();
  const me = await spaceIdentity();
  const token = await signJws(me, {
    iss: me.did,
    aud: OTHER_SPACE,
    iat: T0 / 1000,
    exp: T0 / 1000 + 600,
  });
  const error = await _refused(
    401,
    "wrong_audience",
    s.h.callAs(token, "GET", charmPath("mine")),
  );
  assert.ok(error.includes(s.h.serviceDid), error);
});

Deno.test("refused: exp more than an hour ahead 401", async () => {
  await using s = await _spaces();
  const me = await spaceIdentity();
  const token = await signJws(me, {
    iss: me.did,
    aud: s.h.serviceDid,
    iat: T0 / 1000,
    exp: T0 / 1000 + 2 * 3600,
  });
  const error = await _refused(
    401,
    "exp_too_far",
    s.h.callAs(token, "GET", charmPath("mine")),
  );
  assert.match(error, /at most 3600 s/);
});

Deno.test("refused: another space's charm 403", async () => {
  await using s = await _spaces();
  const { h, ownerToken } = s;
  for (
    const [method, path, body] of [
      ["GET", charmPath("theirs", "", OTHER_SPACE), undefined],
      ["POST", charmPath("theirs", "/run", OTHER_SPACE), undefined],
      ["POST", charmPath("theirs", "/disable", OTHER_SPACE), undefined],
      ["POST", "/api/charms", { space: OTHER_SPACE, recipe: "counter" }],
      ["POST", "/api/integrations/manual/charms", {
        space: OTHER_SPACE,
        charmId: "theirs",
      }],
      ["GET", `/api/charms?space=${OTHER_SPACE}`, undefined],
    ] as const
  ) {
    const error = await _refused(
      403,
      "forbidden",
      h.callAs(ownerToken, method, path, body),
    );
    assert.ok(error.includes(SPACE) && error.includes(OTHER_SPACE), error);
  }
  assert.equal(h.sent.length, 0, "nothing was enqueued");
});

Deno.test("refused: malformed tokens 401 naming why", async (t) => {
  await using s = await _spaces();
  const me = await spaceIdentity();
  const claims = {
    iss: me.did,
    aud: s.h.serviceDid,
    iat: T0 / 1000,
    exp: T0 / 1000 + 600,
  };
  const cases: [string, () => Promise<string>, string, RegExp][] = [
    ["not a token", () => Promise.resolve("nope"), "invalid_token", /neither/],
    [
      "garbage JWS",
      () => Promise.resolve("eyJhbGc.eyJpc3M.c2ln"),
      "invalid_token",
      /^invalid token/,
    ],
    [
      "iss not a did:key",
      () => signJws(me, { ...claims, iss: "alice" }),
      "bad_issuer",
      /iss must be the signer's Ed25519 did:key/,
    ],
    [
      "no exp",
      () => signJws(me, { iss: me.did, aud: s.h.serviceDid, iat: T0 / 1000 }),
      "invalid_token",
      /exp/,
    ],
    [
      "iat in the future",
      () =>
        signJws(me, {
          ...claims,
          iat: T0 / 1000 + 600,
          exp: T0 / 1000 + 900,
        }),
      "not_yet_valid",
      /iat is in the future/,
    ],
    [
      "alg none",
      () =>
        Promise.resolve(
          `${btoa('{"alg":"none"}').replaceAll("=", "")}.${
            btoa(JSON.stringify(claims)).replaceAll("=", "")
          }.`,
        ),
      "invalid_token",
      /./,
    ],
    [
      "HS256",
      () =>
        new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(
          new TextEncoder().encode("a shared secret of at least 32 bytes!!"),
        ),
      "invalid_token",
      /alg must be EdDSA/,
    ],
  ];
  for (const [name, make, reason, error] of cases) {
    await t.step(name, async () => {
      const message = await _refused(
        401,
        reason,
        s.h.callAs(await make(), "GET", charmPath("mine")),
      );
      assert.match(message, error);
    });
  }
});

Deno.test("a token made by jose itself (WebCrypto key) is accepted", async () => {
  await using h = await harness({ adminToken: ADMIN_TOKEN });
  const pair = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  const { didKeyFromPublicKey } = await import("../charm/did.ts");
  const did = didKeyFromPublicKey(raw);
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: "EdDSA" })
    .setIssuer(did)
    .setAudience(h.serviceDid)
    .setIssuedAt(T0 / 1000)
    .setExpirationTime(T0 / 1000 + 600)
    .sign(pair.privateKey);
  await expectStatus(
    201,
    h.callAs(token, "POST", "/api/charms", { space: did, recipe: "counter" }),
  );
});

Deno.test("operator-only routes refuse identities with 403 and anonymous with 401", async () => {
  await using s = await _spaces();
  const { h, ownerToken } = s;
  for (
    const [method, path] of [
      ["GET", "/api/charms"],
      ["POST", "/api/fanout"],
      ["GET", "/api/dead-letters"],
      ["POST", "/api/dead-letters/x/replay"],
    ] as const
  ) {
    await _refused(403, "forbidden", h.callAs(ownerToken, method, path));
    await _refused(401, "missing_token", h.call(method, path));
    const operator = await h.call(method, path, undefined, OPERATOR);
    assert.notEqual(operator.status, 401);
    assert.notEqual(operator.status, 403);
  }
});

Deno.test("a token signed by the service's own identity is the operator", async () => {
  await using s = await _spaces();
  const token = await s.h.tokenFor(await operatorIdentity());
  await expectStatus(200, s.h.callAs(token, "GET", "/api/charms"));
  await expectStatus(200, s.h.callAs(token, "GET", "/api/dead-letters"));
});

Deno.test("delegates: the owner grants and revokes access; only owner or operator manage them", async () => {
  await using s = await _spaces();
  const { h, ownerToken, otherToken, strangerToken } = s;
  const stranger = await strangerIdentity();
  const path = `/api/spaces/${SPACE}/delegates`;

  await _refused(
    403,
    "forbidden",
    h.callAs(strangerToken, "GET", charmPath("mine")),
  );
  const added = await expectStatus(
    201,
    h.callAs(ownerToken, "POST", path, { did: stranger.did }),
  );
  assert.deepEqual(added, { did: stranger.did, added: true });
  assert.deepEqual(
    await expectStatus(
      200,
      h.callAs(ownerToken, "POST", path, { did: stranger.did }),
    ),
    { did: stranger.did, added: false },
  );
  // The delegate now reads and runs the space's charms...
  await expectStatus(200, h.callAs(strangerToken, "GET", charmPath("mine")));
  await expectStatus(
    202,
    h.callAs(strangerToken, "POST", charmPath("mine", "/run")),
  );
  await expectStatus(
    200,
    h.callAs(strangerToken, "GET", `/api/charms?space=${SPACE}`),
  );
  // ...but cannot manage delegates, and another space cannot either.
  await _refused(403, "forbidden", h.callAs(strangerToken, "GET", path));
  await _refused(
    403,
    "forbidden",
    h.callAs(otherToken, "POST", path, { did: OTHER_SPACE }),
  );
  const list = await expectStatus(
    200,
    h.call("GET", path, undefined, OPERATOR),
  );
  assert.deepEqual(
    (list.delegates as { did: string; addedBy: string }[]).map((d) => [
      d.did,
      d.addedBy,
    ]),
    [[stranger.did, SPACE]],
  );
  // Revoked: refused again.
  assert.deepEqual(
    await expectStatus(
      200,
      h.callAs(ownerToken, "DELETE", `${path}/${stranger.did}`),
    ),
    { removed: true },
  );
  assert.deepEqual(
    await expectStatus(
      200,
      h.callAs(ownerToken, "DELETE", `${path}/${stranger.did}`),
    ),
    { removed: false },
  );
  await _refused(
    403,
    "forbidden",
    h.callAs(strangerToken, "GET", charmPath("mine")),
  );
});

Deno.test("delegates: bad DIDs are 400 naming the field", async () => {
  await using s = await _spaces();
  const { h, ownerToken } = s;
  const path = `/api/spaces/${SPACE}/delegates`;
  const bad = await expectStatus(
    400,
    h.callAs(ownerToken, "POST", path, { did: "did:key:nope" }),
  );
  assert.match(String(bad.error), /^did: must be an Ed25519 did:key/);
  const self = await expectStatus(
    400,
    h.callAs(ownerToken, "POST", path, { did: SPACE }),
  );
  assert.match(String(self.error), /^did: .* is the space itself/);
  const badSpace = await expectStatus(
    400,
    h.call("GET", "/api/spaces/did:key:zzz/delegates", undefined, OPERATOR),
  );
  assert.match(String(badSpace.error), /^space: /);
  const badParam = await expectStatus(
    400,
    h.call("GET", "/api/charms?space=alice", undefined, OPERATOR),
  );
  assert.match(String(badParam.error), /^space: "alice" is not a did:key/);
});

Deno.test("GET /api/status shows aggregate counts to the public and everything to the operator", async () => {
  await using s = await _spaces();
  const { h, ownerToken } = s;
  const pub = await expectStatus(200, h.call("GET", "/api/status"));
  assert.deepEqual(Object.keys(pub).sort(), [
    "charms",
    "cyclesCompleted",
    "did",
    "totalCharmsProcessed",
    "totalFailures",
    "totalSuccesses",
    "version",
  ]);
  assert.deepEqual(pub.charms, { total: 2, enabled: 2, disabled: 0 });
  const asSpace = await expectStatus(
    200,
    h.callAs(ownerToken, "GET", "/api/status"),
  );
  assert.deepEqual(asSpace, pub);
  const full = await expectStatus(
    200,
    h.call("GET", "/api/status", undefined, OPERATOR),
  );
  for (const field of ["queue", "integrations", "deadLetters", "lastTickAt"]) {
    assert.ok(field in full, `operator sees ${field}`);
  }
});

Deno.test("without ADMIN_TOKEN locally the API is open, yet a presented token is still checked", async () => {
  await using s = await _spaces({});
  const { h, ownerToken } = s;
  await expectStatus(200, h.call("GET", charmPath("theirs", "", OTHER_SPACE)));
  await expectStatus(200, h.call("GET", "/api/charms"));
  await _refused(
    403,
    "forbidden",
    h.callAs(ownerToken, "GET", charmPath("theirs", "", OTHER_SPACE)),
  );
  await _refused(
    401,
    "invalid_token",
    h.callAs("garbage", "GET", "/api/charms"),
  );
});

Deno.test("open access is for this machine: not a rebound Host, not another site's page", async () => {
  // Local development: no ADMIN_TOKEN, not exposed.
  await using h = await harness();
  await createCounter(h, "c1", SPACE, {});
  const disable = `/api/charms/${SPACE}/c1/disable`;
  // curl and the CLI send no Origin: the operator.
  await expectStatus(
    200,
    h.call("GET", "/api/charms", undefined, {
      host: "127.0.0.1:8000",
    }),
  );
  await expectStatus(
    200,
    h.call("POST", disable, undefined, {
      host: "localhost:8000",
    }),
  );
  // Forwarded by a proxy on this machine: from elsewhere, whatever its Host.
  await _refused(
    401,
    "missing_token",
    h.call("GET", "/api/charms", undefined, {
      host: "127.0.0.1:8000",
      "x-forwarded-for": "203.0.113.9",
    }),
  );
  // A DNS name rebound to 127.0.0.1 names another host: refused outright.
  await _refused(
    403,
    "forbidden",
    h.call("GET", "/api/charms", undefined, { host: "rebind.example:8000" }),
  );
  // A page on another site posting here (no preflight for a body-less
  // POST): nothing, whether the browser says so in Origin or Sec-Fetch-Site.
  await _refused(
    401,
    "missing_token",
    h.call("POST", disable, undefined, {
      host: "127.0.0.1:8000",
      origin: "https://evil.example",
    }),
  );
  await _refused(
    401,
    "missing_token",
    h.call("POST", disable, undefined, {
      host: "127.0.0.1:8000",
      "sec-fetch-site": "cross-site",
    }),
  );
  // The service's own pages post from their own origin.
  await expectStatus(
    200,
    h.call("POST", disable, undefined, {
      host: "127.0.0.1:8000",
      origin: "http://127.0.0.1:8000",
      "sec-fetch-site": "same-origin",
    }),
  );
  // Even with a token: the page behind a rebound name can sign one with the
  // public development identity, the operator's in local development.
  const operator = await h.tokenFor(await operatorIdentity());
  await _refused(
    403,
    "forbidden",
    h.call("GET", "/api/dead-letters", undefined, {
      host: "rebind.example:8000",
      authorization: `Bearer ${operator}`,
    }),
  );
  await expectStatus(
    200,
    h.call("GET", "/api/dead-letters", undefined, {
      host: "LOCALHOST.:8000",
      authorization: `Bearer ${operator}`,
    }),
  );
  // /health answers probes whatever they name.
  await expectStatus(
    200,
    h.call("GET", "/health", undefined, {
      host: "rebind.example:8000",
    }),
  );
});

Deno.test("exposed (deployed, or HOST beyond loopback) without ADMIN_TOKEN, anonymous requests get nothing", async () => {
  await using h = await harness({ exposed: true });
  await _refused(401, "missing_token", h.call("GET", "/api/charms"));
  await _refused(
    401,
    "missing_token",
    h.call("POST", "/api/charms", { space: SPACE, recipe: "counter" }),
  );
  // The operator identity's token still works, and a space's own token too.
  const operator = await h.tokenFor(await operatorIdentity());
  await expectStatus(200, h.callAs(operator, "GET", "/api/charms"));
  const owner = await h.tokenFor(await spaceIdentity());
  await expectStatus(
    201,
    h.callAs(owner, "POST", "/api/charms", { space: SPACE, recipe: "counter" }),
  );
  await expectStatus(200, h.call("GET", "/health"));
  // /health ignores whatever token a probe sends.
  await expectStatus(200, h.callAs("garbage", "GET", "/health"));
});

Deno.test("authenticate() resolves each kind of principal", async () => {
  const service = await operatorIdentity();
  const options = {
    adminToken: ADMIN_TOKEN,
    serviceDid: service.did,
    openAccess: false,
    now: () => T0,
  };
  assert.deepEqual(await authenticate(undefined, options), {
    kind: "anonymous",
  });
  assert.deepEqual(
    await authenticate(undefined, { ...options, openAccess: true }),
    { kind: "operator", via: "open" },
  );
  assert.deepEqual(await authenticate(`bearer ${ADMIN_TOKEN}`, options), {
    kind: "operator",
    via: "admin-token",
  });
  const me = await Identity.fromPassphrase("common user");
  const { mintToken } = await import("../identity/token.ts");
  const { token } = await mintToken(me, { audience: service.did, nowMs: T0 });
  assert.deepEqual(await authenticate(`Bearer ${token}`, options), {
    kind: "identity",
    did: me.did,
  });
});

Deno.test("timingSafeEqual() compares whole strings", async () => {
  assert.equal(await timingSafeEqual("abc", "abc"), true);
  assert.equal(await timingSafeEqual("abc", "abd"), false);
  assert.equal(await timingSafeEqual("abc", "abcd"), false);
  assert.equal(await timingSafeEqual("", ""), true);
});

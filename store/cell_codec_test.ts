import assert from "node:assert/strict";
import type { CharmRef } from "../charm/charm.ts";
import {
  charmPath,
  expectStatus,
  type Harness,
  harness,
} from "../http/test_harness.ts";
import { deriveSecretKey, isSealed, type SecretKeys } from "../lib/secrets.ts";
import { RECIPES } from "../recipes/mod.ts";
import {
  googleHarness,
  REFRESH_TOKEN,
  T0,
} from "../test/fake_google_harness.ts";
import { SPACE } from "../test/test_deps.ts";
import {
  decodeCell,
  describeReencryptReport,
  encodeCell,
  redactCell,
  REDACTED,
  reencryptSecrets,
} from "./cell_codec.ts";
import { createCharm, registerCharm } from "./charms.ts";
import { cellKey, charmKey } from "./keys.ts";
import { cellSize, MAX_CELL_BYTES } from "./kv_util.ts";

const GMAIL = RECIPES.get("gmail-importer")!;
const REF: CharmRef = { space: SPACE, charmId: "mail" };
const MINUTE = 60_000;

async function keys(current: string, previous?: string): Promise<SecretKeys> {
  return {
    current: await deriveSecretKey(current),
    previous: previous === undefined
      ? null
      : await deriveSecretKey(previous, "SECRETS_KEY_PREVIOUS"),
  };
}

const OLD_KEY = "old-cell-key-0123456789abcdef-0123456";
const NEW_KEY = "new-cell-key-0123456789abcdef-0123456";

function argument(token: string, refreshToken: string) {
  return {
    auth: {
      token,
      tokenType: "Bearer",
      scope: ["https://www.googleapis.com/auth/gmail.readonly"],
      expiresIn: 3600,
      expiresAt: T0 + 3600_000,
      refreshToken,
      user: { email: "user@example.com", name: "User", picture: "" },
    },
    labelIds: ["INBOX"],
    maxResults: 50,
    query: "",
  };
}

/** Creates the gmail charm `mail` in `SPACE` over the API, with `auth`. */
function _createMail(h: Harness, auth: Record<string, unknown>) {
  return h.call("POST", "/api/charms", {
    space: SPACE,
    recipe: "gmail-importer",
    charmId: "mail",
    argument: { auth },
  });
}

/** Fails naming the secret when any of `secrets` is in `stored`'s JSON. */
function assertNoPlaintext(stored: unknown, secrets: string[]): void {
  const text = JSON.stringify(stored);
  for (const secret of secrets) {
    assert.ok(!text.includes(secret), `KV holds "${secret}" in ${text}`);
  }
}

/** The `kid` of each sealed field of an argument cell as stored. */
function kidsOf(stored: unknown): string[] {
  const auth = (stored as { auth: Record<string, unknown> }).auth;
  return [auth.token, auth.refreshToken].map((field) => {
    assert.ok(isSealed(field), `sealed: ${JSON.stringify(field)}`);
    return field.kid;
  });
}

Deno.test("encodeCell() seals only the recipe's secret paths and decodeCell() restores them", async () => {
  const k = await keys(NEW_KEY);
  const plain = argument("ya29.access", "1//refresh");
  const stored = await encodeCell(k, GMAIL, REF, "argument", plain);
  assertNoPlaintext(stored, ["ya29.access", "1//refresh"]);
  assert.deepEqual(kidsOf(stored), [k.current.kid, k.current.kid]);
  const { auth, ...rest } = stored as ReturnType<typeof argument>;
  assert.deepEqual(rest, { labelIds: ["INBOX"], maxResults: 50, query: "" });
  assert.deepEqual(auth.user, plain.auth.user);
  assert.equal(auth.expiresAt, plain.auth.expiresAt);
  // The input is not mutated.
  assert.equal(plain.auth.token, "ya29.access");
  assert.deepEqual(
    await decodeCell(k, GMAIL, REF, "argument", stored),
    plain,
  );
  // Empty fields have nothing to hide and stay as they are; so do cells of
  // recipes without secret paths, and the result cell.
  const empty = await encodeCell(k, GMAIL, REF, "argument", argument("", ""));
  assert.equal((empty as ReturnType<typeof argument>).auth.token, "");
  const counter = { step: 1 };
  assert.deepEqual(
    await encodeCell(k, RECIPES.get("counter")!, REF, "argument", counter),
    counter,
  );
  // Without keys (SECRETS_KEY unset, local) values are stored as given (a
  // copy).
  assert.deepEqual(
    await encodeCell(null, GMAIL, REF, "argument", plain),
    plain,
  );
});

Deno.test("decodeCell() reads plaintext written before SECRETS_KEY was set, and a sealed field only in its own place", async () => {
  const k = await keys(NEW_KEY);
  const plain = argument("ya29.access", "1//refresh");
  assert.deepEqual(await decodeCell(k, GMAIL, REF, "argument", plain), plain);
  const stored = await encodeCell(k, GMAIL, REF, "argument", plain);
  await assert.rejects(
    decodeCell(k, GMAIL, { ...REF, charmId: "other" }, "argument", stored),
    /Cannot decrypt argument\.auth\.token of charm .*\/other with SECRETS_KEY .*does not authenticate/,
  );
});

Deno.test("rotation: values written with the old key are read with SECRETS_KEY_PREVIOUS set, and rewritten with the new key", async () => {
  const old = await keys(OLD_KEY);
  const rotating = await keys(NEW_KEY, OLD_KEY);
  const plain = argument("ya29.access", "1//refresh");
  const written = await encodeCell(old, GMAIL, REF, "argument", plain);
  assert.deepEqual(kidsOf(written), [old.current.kid, old.current.kid]);

  const read = await decodeCell(rotating, GMAIL, REF, "argument", written);
  assert.deepEqual(read, plain);
  const rewritten = await encodeCell(rotating, GMAIL, REF, "argument", read);
  assert.deepEqual(kidsOf(rewritten), [
    rotating.current.kid,
    rotating.current.kid,
  ]);
  // Once rewritten, the new key alone reads it; the old value needs the old
  // key, and the error says which variable to set.
  const newOnly = await keys(NEW_KEY);
  assert.deepEqual(
    await decodeCell(newOnly, GMAIL, REF, "argument", rewritten),
    plain,
  );
  await assert.rejects(
    decodeCell(newOnly, GMAIL, REF, "argument", written),
    /neither SECRETS_KEY \(key [0-9a-f]{8}\) nor SECRETS_KEY_PREVIOUS \(not set\); set SECRETS_KEY_PREVIOUS/,
  );
});

Deno.test("redactCell() hides the secret paths and any sealed value, decrypting nothing", async () => {
  const k = await keys(NEW_KEY);
  const plain = argument("ya29.access", "1//refresh");
  const stored = await encodeCell(k, GMAIL, REF, "argument", plain);
  for (const value of [plain, stored]) {
    const shown = redactCell(GMAIL, "argument", value) as typeof plain;
    assert.equal(shown.auth.token, REDACTED);
    assert.equal(shown.auth.refreshToken, REDACTED);
    assert.deepEqual(shown.auth.user, plain.auth.user);
    assert.deepEqual(shown.labelIds, ["INBOX"]);
  }
  // An empty token shows as empty: the user sees no token is set.
  const empty = redactCell(GMAIL, "argument", argument("", "1//r"));
  assert.equal((empty as typeof plain).auth.token, "");
  // A sealed value under an unknown recipe is still hidden.
  assert.deepEqual(redactCell(undefined, "argument", stored), {
    ...plain,
    auth: { ...plain.auth, token: REDACTED, refreshToken: REDACTED },
  });
});

Deno.test("POST /api/charms stores no plaintext token in KV; GET shows it redacted; PUT .../argument too", async () => {
  await using h = await harness();
  const token = "ya29.created-access-token";
  const refreshToken = "1//created-refresh-token";
  await expectStatus(
    201,
    _createMail(h, { token, refreshToken }),
  );
  const raw = await h.deps.kv.get(cellKey(REF, "argument"));
  assertNoPlaintext(raw.value, [token, refreshToken]);
  assert.deepEqual(kidsOf(raw.value), [
    h.deps.secrets!.current.kid,
    h.deps.secrets!.current.kid,
  ]);
  const shown = JSON.stringify(
    await expectStatus(200, h.call("GET", charmPath("mail"))),
  );
  assertNoPlaintext(shown, [token, refreshToken, '"$enc"']);
  assert.match(shown, /"token":"\[redacted\]","tokenType"/);

  const newToken = "ya29.replaced-access-token";
  await expectStatus(
    200,
    h.call("PUT", charmPath("mail", "/argument"), {
      auth: { token: newToken, refreshToken: "1//replaced-refresh" },
    }),
  );
  assertNoPlaintext((await h.deps.kv.get(cellKey(REF, "argument"))).value, [
    newToken,
    "1//replaced-refresh",
  ]);
});

Deno.test("an argument that fits as plaintext but not once sealed is a 400 naming the argument, writing nothing", async () => {
  await using h = await harness();
  // "ł" is two bytes as plaintext and in UTF-8; sealing the tokens (base64
  // of their UTF-8) grows them by a third, and the scopes (not secret) fill
  // the rest of the cell, the request staying under the 64 KiB body limit.
  const token = "ł".repeat(4096);
  const scope = Array.from({ length: 42 }, () => "ł".repeat(512));
  const create = await _createMail(h, {
    token,
    refreshToken: token,
    scope,
  });
  assert.equal(create.status, 400, await create.clone().text());
  assert.match(
    (await create.json()).error,
    /^argument: \d+ bytes once its secret fields are sealed, over the \d+-byte cell limit$/,
  );
  assert.equal((await h.deps.kv.get(cellKey(REF, "argument"))).value, null);
  // The same through PUT …/argument on a charm that exists.
  await expectStatus(
    201,
    _createMail(h, { token: "ya29.small", refreshToken: "1//r" }),
  );
  const before = await h.deps.kv.get(cellKey(REF, "argument"));
  const put = await h.call("PUT", charmPath("mail", "/argument"), {
    auth: { token, refreshToken: token, scope },
  });
  assert.equal(put.status, 400, await put.clone().text());
  assert.match(
    (await put.json()).error,
    /^argument: \d+ bytes once its secret/,
  );
  assert.equal(
    (await h.deps.kv.get(cellKey(REF, "argument"))).versionstamp,
    before.versionstamp,
  );
});

Deno.test("a token refresh writes the new token back sealed: KV holds no plaintext token", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const old = h.fake.issueAccessToken();
  const ref = await h.charm({
    recipe: "gmail-importer",
    auth: {
      ...argument(old, REFRESH_TOKEN).auth,
      expiresAt: T0 + 5 * MINUTE,
    },
  });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.equal(h.fake.count("token"), 1, "the token was refreshed");
  const fresh = h.fake.issuedTokens.at(-1)!;
  assert.notEqual(fresh, old);
  // The run saw plaintext (it called Gmail with the fresh token)...
  assert.equal((await h.argument(ref)).auth.token, fresh);
  // ...while KV holds none of the tokens, in any cell.
  for (const cell of ["argument", "result"] as const) {
    assertNoPlaintext((await h.deps.kv.get(cellKey(ref, cell))).value, [
      old,
      fresh,
      REFRESH_TOKEN,
      ...h.fake.issuedTokens,
    ]);
  }
  assert.deepEqual(
    kidsOf((await h.deps.kv.get(cellKey(ref, "argument"))).value),
    [h.deps.secrets!.current.kid, h.deps.secrets!.current.kid],
  );
});

Deno.test("rotation through a run: a charm sealed with the old key runs with SECRETS_KEY_PREVIOUS set and its refresh reseals it with the new key", async () => {
  const old = await keys(OLD_KEY);
  const rotating = await keys(NEW_KEY, OLD_KEY);
  await using h = await googleHarness({ deps: { secrets: rotating } });
  h.fake.mailbox.add({ id: "m1" });
  const ref = { space: SPACE, charmId: "mail" };
  await createCharm(
    h.deps.kv,
    ref,
    GMAIL,
    argument(h.fake.issueAccessToken(), REFRESH_TOKEN),
    T0,
    old,
  );
  await registerCharm(h.deps.kv, "gmail", ref, T0);
  // The token expires soon: the refresh rewrites the argument cell.
  h.clock.t = T0 + 3600_000 - 5 * MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const stored = (await h.deps.kv.get(cellKey(ref, "argument"))).value;
  assert.deepEqual(kidsOf(stored), [
    rotating.current.kid,
    rotating.current.kid,
  ]);
  assert.equal(
    ((await decodeCell(
      await keys(NEW_KEY),
      GMAIL,
      ref,
      "argument",
      stored,
    )) as {
      auth: { refreshToken: string };
    }).auth.refreshToken,
    REFRESH_TOKEN,
  );
});

Deno.test("a run whose secrets were sealed with another key fails at once, naming SECRETS_KEY, and calls nothing", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const ref = { space: SPACE, charmId: "mail" };
  await createCharm(
    h.deps.kv,
    ref,
    GMAIL,
    argument("ya29.x", REFRESH_TOKEN),
    T0,
    await keys(OLD_KEY),
  );
  await registerCharm(h.deps.kv, "gmail", ref, T0);
  assert.equal(await h.run(ref, "gmail"), "failed");
  const state = await h.state(ref);
  assert.match(
    state.lastError!,
    /^SecretDecryptionError: Cannot decrypt argument\.auth\.token of charm .*\/mail: it was encrypted with key [0-9a-f]{8}, which is neither SECRETS_KEY/,
  );
  assert.equal(h.sent.length, 0, "not retried");
  assert.equal(h.fake.calls.length, 0);
});

Deno.test("a tampered sealed token fails the run without retries", async () => {
  await using h = await googleHarness();
  const ref = await h.charm({ recipe: "gmail-importer" });
  const entry = await h.deps.kv.get<ReturnType<typeof argument>>(
    cellKey(ref, "argument"),
  );
  const sealed = entry.value!.auth.token as unknown as { ct: string };
  sealed.ct = (sealed.ct[0] === "A" ? "B" : "A") + sealed.ct.slice(1);
  await h.deps.kv.set(cellKey(ref, "argument"), entry.value);
  assert.equal(await h.run(ref, "gmail"), "failed");
  assert.match(
    (await h.state(ref)).lastError!,
    /SecretDecryptionError: .*with SECRETS_KEY \(key [0-9a-f]{8}\): the ciphertext does not authenticate/,
  );
  assert.equal(h.fake.calls.length, 0);
});

Deno.test("reencryptSecrets() reseals plaintext and old-key fields under the current key, idempotently", async () => {
  await using kv = await Deno.openKv(":memory:");
  const old = await keys(OLD_KEY);
  const rotating = await keys(NEW_KEY, OLD_KEY);
  const refs = ["plain", "old", "stranger"].map((charmId) => ({
    space: SPACE,
    charmId,
  }));
  await createCharm(kv, refs[0]!, GMAIL, argument("ya29.p", "1//p"), T0, null);
  await createCharm(kv, refs[1]!, GMAIL, argument("ya29.o", "1//o"), T0, old);
  await createCharm(
    kv,
    refs[2]!,
    GMAIL,
    argument("ya29.s", "1//s"),
    T0,
    await keys("a-third-key-nobody-configured-012345"),
  );
  await createCharm(
    kv,
    { space: SPACE, charmId: "count" },
    RECIPES.get("counter")!,
    {},
    T0,
  );
  const unreadable: string[] = [];
  const report = await reencryptSecrets(
    kv,
    RECIPES,
    rotating,
    (ref) => unreadable.push(ref.charmId),
  );
  assert.deepEqual(report, {
    checked: 3,
    rewritten: 2,
    unreadable: 1,
    tooLarge: 0,
  });
  assert.deepEqual(unreadable, ["stranger"]);
  for (const ref of refs.slice(0, 2)) {
    const stored = (await kv.get(cellKey(ref, "argument"))).value;
    assert.deepEqual(kidsOf(stored), [
      rotating.current.kid,
      rotating.current.kid,
    ]);
    assertNoPlaintext(stored, ["ya29.", "1//"]);
  }
  assert.deepEqual(
    await reencryptSecrets(kv, RECIPES, rotating),
    { checked: 3, rewritten: 0, unreadable: 1, tooLarge: 0 },
  );
});

Deno.test("reencryptSecrets() leaves a cell too large to seal in plaintext, reports it, and goes on", async () => {
  using kv = await Deno.openKv(":memory:");
  const recipe = { secretPaths: { argument: [["auth", "token"]] } };
  const recipes = new Map([["secretive", recipe]]);
  // Stored before SECRETS_KEY was set (plaintext): 50 KB fits as it is, not
  // once sealed (base64 and the envelope add a third).
  const big: CharmRef = { space: SPACE, charmId: "a-big" };
  const small: CharmRef = { space: SPACE, charmId: "b-small" };
  for (
    const [ref, token] of [[big, "x".repeat(50_000)], [small, "t"]] as const
  ) {
    await kv.set(charmKey(ref), { ...ref, recipe: "secretive" });
    await kv.set(cellKey(ref, "argument"), { auth: { token } });
  }
  const secrets = await keys(NEW_KEY);
  const reported: string[] = [];
  const report = await reencryptSecrets(
    kv,
    recipes,
    secrets,
    (ref, error) => reported.push(`${ref.charmId}: ${error.message}`),
  );
  assert.deepEqual(report, {
    checked: 2,
    rewritten: 1,
    unreadable: 0,
    tooLarge: 1,
  });
  assert.equal(reported.length, 1);
  assert.match(
    reported[0]!,
    /^a-big: argument: \d+ bytes once its secret fields are sealed/,
  );
  // The charm after it was sealed all the same.
  const after = await kv.get<{ auth: { token: unknown } }>(
    cellKey(small, "argument"),
  );
  assert.ok(isSealed(after.value?.auth.token));
  assert.match(
    describeReencryptReport(report, secrets),
    /, 1 too large to seal \(left in plaintext\)$/,
  );
});

Deno.test("encodeCell() stores a cell that cellSize() allows within KV's limit, however V8 holds its strings", async () => {
  // A Latin-1 string sliced from one that is not stays at two bytes a
  // character: 40,000 such characters are 40 KB by cellSize() but 80 KB as
  // V8 serializes them, over KV's 64 KiB.
  const text = ("\u20ac" + "a".repeat(40_000)).slice(1);
  const value = { text };
  assert.ok(cellSize(value) < MAX_CELL_BYTES);
  using kv = await Deno.openKv(":memory:");
  await assert.rejects(kv.set(["raw"], value), /too large/);
  for (const secrets of [null, await keys("k1")]) {
    const stored = await encodeCell(secrets, GMAIL, REF, "result", value);
    assert.deepEqual(stored, value);
    await kv.set(["stored"], stored);
    assert.deepEqual((await kv.get(["stored"])).value, value);
  }
});

import assert from "node:assert/strict";
import type { RunRecord } from "../handlers/run_charm.ts";
import { cellSize, jsonSize, MAX_CELL_BYTES } from "../store/kv_util.ts";
import { replaceCharmArgument } from "../store/charm_argument.ts";
import { cellKey, runKey } from "../store/keys.ts";
import { QUOTA_RETRY_MS } from "../google/api_error.ts";
import { googleError } from "../test/fake_google.ts";
import { googleHarness, T0 } from "../test/fake_google_harness.ts";
import type { Email } from "./gmail_importer.ts";

const MINUTE = 60_000;

function ids(result: { emails: Email[] }): string[] {
  return result.emails.map((e) => e.id);
}

Deno.test("gmail-importer imports the newest messages on the first run, paging, with metadata", async () => {
  await using h = await googleHarness();
  for (let i = 1; i <= 7; i++) {
    h.fake.mailbox.add({ id: `m${i}`, internalDate: T0 - (10 - i) * MINUTE });
  }
  h.fake.mailbox.add({
    id: "archived",
    labelIds: ["CATEGORY_UPDATES"],
    internalDate: T0,
  });
  h.fake.pageSizeCap = 3;
  const ref = await h.charm({
    recipe: "gmail-importer",
    argument: { maxResults: 5 },
  });

  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["m7", "m6", "m5", "m4", "m3"]);
  assert.deepEqual(result.emails[0], {
    id: "m7",
    threadId: "m7",
    labelIds: ["INBOX"],
    snippet: "Snippet of m7",
    internalDate: T0 - 3 * MINUTE,
    from: "Alice <alice@example.com>",
    to: "user@example.com",
    subject: "Subject m7",
    date: new Date(T0 - 3 * MINUTE).toUTCString(),
  });
  assert.equal(result.historyId, String(h.fake.mailbox.historyId));
  assert.equal(result.account, "user@example.com");
  assert.equal(result.fullSyncs, 1);
  // 3 + 2 ids over two pages, each page asking only for what is missing.
  const lists = h.fake.calls.filter((c) => c.route === "gmail.messages.list");
  assert.deepEqual(lists.map((c) => c.query.get("maxResults")), ["5", "2"]);
  assert.deepEqual(lists[0]!.query.getAll("labelIds"), ["INBOX"]);
  assert.equal(h.fake.count("gmail.messages.get"), 5);
  for (const call of h.fake.calls) {
    if (call.route !== "gmail.messages.get") continue;
    assert.equal(call.query.get("format"), "metadata");
    assert.deepEqual(call.query.getAll("metadataHeaders"), [
      "From",
      "To",
      "Subject",
      "Date",
    ]);
  }
});

Deno.test("gmail-importer applies history: adds, deletes and label changes only", async () => {
  await using h = await googleHarness();
  for (let i = 1; i <= 4; i++) {
    h.fake.mailbox.add({ id: `m${i}`, internalDate: T0 - (10 - i) * MINUTE });
  }
  const ref = await h.charm({ recipe: "gmail-importer" });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["m4", "m3", "m2", "m1"]);
  const getsBefore = h.fake.count("gmail.messages.get");
  const listsBefore = h.fake.count("gmail.messages.list");

  h.fake.mailbox.add({ id: "new1", internalDate: T0 + MINUTE });
  h.fake.mailbox.add({ id: "gone-again", internalDate: T0 + MINUTE });
  h.fake.mailbox.remove("gone-again");
  h.fake.mailbox.remove("m1");
  h.fake.mailbox.relabel("m2", ["STARRED"], []);
  h.fake.mailbox.relabel("m3", [], ["INBOX"]); // archived: leaves the window
  h.fake.mailbox.relabel("m4", ["TRASH"], []); // trashed: leaves too
  h.fake.mailbox.add({
    id: "spam",
    labelIds: ["INBOX", "SPAM"],
    internalDate: T0 + MINUTE,
  });
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");

  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["new1", "m2"]);
  assert.deepEqual(result.emails[1].labelIds, ["INBOX", "STARRED"]);
  assert.equal(result.historyId, String(h.fake.mailbox.historyId));
  assert.deepEqual([result.fullSyncs, result.incrementalSyncs], [1, 1]);
  // Only the added message was fetched. Messages left the window, so the
  // mailbox was listed once more to backfill it, but held nothing older.
  assert.equal(h.fake.count("gmail.messages.get") - getsBefore, 1);
  assert.equal(h.fake.count("gmail.messages.list") - listsBefore, 1);
  assert.equal(h.fake.count("gmail.profile"), 1);
  const history = h.fake.calls.find((c) => c.route === "gmail.history.list")!;
  assert.equal(history.query.get("startHistoryId"), "1004");
});

Deno.test("gmail-importer keeps its window at maxResults when history deletes or removes messages from it", async () => {
  await using h = await googleHarness();
  for (let i = 1; i <= 8; i++) {
    h.fake.mailbox.add({ id: `m${i}`, internalDate: T0 - (10 - i) * MINUTE });
  }
  h.fake.pageSizeCap = 3;
  const ref = await h.charm({
    recipe: "gmail-importer",
    argument: { maxResults: 5 },
  });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["m8", "m7", "m6", "m5", "m4"]);

  // Two leave the window (one deleted, one archived), one arrives: the
  // next-newest older message takes the free place.
  h.fake.mailbox.remove("m7");
  h.fake.mailbox.relabel("m6", [], ["INBOX"]);
  h.fake.mailbox.add({ id: "new1", internalDate: T0 + MINUTE });
  const callsBefore = h.fake.calls.length;
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  let result = await h.result(ref);
  assert.deepEqual(ids(result), ["new1", "m8", "m5", "m4", "m3"]);
  assert.deepEqual([result.fullSyncs, result.incrementalSyncs], [1, 1]);
  assert.equal(result.historyId, String(h.fake.mailbox.historyId));
  // The newest ids were listed again (two pages, the fake serving 3), and
  // only the new and the backfilled message fetched: the kept ones are not
  // fetched again.
  const calls = h.fake.calls.slice(callsBefore);
  assert.equal(
    calls.filter((c) => c.route === "gmail.messages.list").length,
    2,
  );
  assert.deepEqual(
    calls.filter((c) => c.route === "gmail.messages.get")
      .map((c) => c.path.split("/").at(-1)),
    ["new1", "m3"],
  );

  // A deletion alone, again: the window stays full.
  h.fake.mailbox.remove("m8");
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  result = await h.result(ref);
  assert.deepEqual(ids(result), ["new1", "m5", "m4", "m3", "m2"]);

  // Additions alone never list the mailbox: the window only grows.
  const lists = h.fake.count("gmail.messages.list");
  h.fake.mailbox.add({ id: "new2", internalDate: T0 + 2 * MINUTE });
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), [
    "new2",
    "new1",
    "m5",
    "m4",
    "m3",
  ]);
  assert.equal(h.fake.count("gmail.messages.list"), lists);
});

Deno.test("gmail-importer falls back to a full sync when history is gone (404)", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1", internalDate: T0 - MINUTE });
  const ref = await h.charm({ recipe: "gmail-importer" });
  assert.equal(await h.run(ref, "gmail"), "succeeded");

  h.fake.mailbox.add({ id: "m2", internalDate: T0 });
  h.fake.mailbox.remove("m1");
  h.fake.mailbox.forgetHistory();
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");

  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["m2"]);
  assert.equal(result.fullSyncs, 2);
  assert.equal(result.historyId, String(h.fake.mailbox.historyId));
  assert.equal(h.fake.count("gmail.history.list"), 1);
});

Deno.test("gmail-importer retries a 429 after Retry-After through the run's retry, then succeeds", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const ref = await h.charm({ recipe: "gmail-importer" });
  h.fake.failNext("gmail.messages.list", {
    status: 429,
    headers: { "retry-after": "7" },
    body: googleError(429, "rateLimitExceeded"),
  });

  assert.equal(await h.run(ref, "gmail"), "retrying");
  const retry = h.sent.at(-1)!;
  assert.equal(retry.message.attempt, 2);
  assert.equal(retry.delayMs, 7_000);
  const record = (await h.deps.kv.get<RunRecord>(
    runKey(ref, `gmail:${T0}`),
  )).value!;
  assert.equal(record.retryAt, T0 + 7_000);
  assert.match(record.error!, /Google returned 429 rateLimitExceeded/);
  assert.equal(await h.result(ref).then((r) => r.emails.length), 0);

  h.clock.t += 7_000;
  assert.equal(await h.run(ref, "gmail", { attempt: 2 }), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["m1"]);
  assert.equal((await h.state(ref)).consecutiveFailures, 0);
});

Deno.test("gmail-importer treats 403 rate limits and 5xx as retriable and 400 as final", async (t) => {
  const cases = [
    {
      name: "403 userRateLimitExceeded",
      reply: { status: 403, body: googleError(403, "userRateLimitExceeded") },
      outcome: "retrying",
    },
    {
      name: "403 dailyLimitExceeded (the project's quota)",
      reply: { status: 403, body: googleError(403, "dailyLimitExceeded") },
      outcome: "retrying",
      delayMs: QUOTA_RETRY_MS,
    },
    {
      name: "503 without Retry-After",
      reply: { status: 503, body: googleError(503, "backendError") },
      outcome: "retrying",
    },
    {
      name: "400 invalid query",
      reply: { status: 400, body: googleError(400, "invalidArgument") },
      outcome: "failed",
    },
    {
      name: "403 forbidden",
      reply: { status: 403, body: googleError(403, "forbidden") },
      outcome: "failed",
    },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      await using h = await googleHarness();
      const ref = await h.charm({ recipe: "gmail-importer" });
      h.fake.failNext("gmail.profile", c.reply);
      assert.equal(await h.run(ref, "gmail"), c.outcome);
      const state = await h.state(ref);
      assert.equal(state.needsReauth, false);
      if (c.outcome === "retrying") {
        // Exponential backoff: base 1 s with the harness's fixed jitter; a
        // quota error waits longer.
        assert.equal(h.sent.at(-1)!.delayMs, c.delayMs ?? 750);
      } else {
        assert.equal(h.sent.length, 0);
        assert.equal(state.consecutiveFailures, 1);
        assert.match(
          state.lastError!,
          /NonRetriableError: Cannot read the Gmail profile/,
        );
      }
    });
  }
});

Deno.test("gmail-importer refreshes once on a 401 and retries the call once", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const ref = await h.charm({ recipe: "gmail-importer" });
  const seeded = (await h.argument(ref)).auth.token;
  // The token looks valid for an hour, but Google no longer accepts it.
  h.fake.invalidateAccessTokens();

  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.equal(h.fake.count("token"), 1);
  const profiles = h.fake.calls.filter((c) => c.route === "gmail.profile");
  assert.equal(profiles.length, 2);
  assert.equal(profiles[0]!.token, seeded);
  const fresh = (await h.argument(ref)).auth.token;
  assert.notEqual(fresh, seeded);
  assert.equal(profiles[1]!.token, fresh);
  assert.deepEqual(ids(await h.result(ref)), ["m1"]);
});

Deno.test("gmail-importer fails without a second refresh when Google refuses the fresh token too", async () => {
  await using h = await googleHarness();
  const ref = await h.charm({ recipe: "gmail-importer" });
  const unauthorized = {
    status: 401,
    body: googleError(401, "authError"),
  };
  h.fake.failNext("gmail.profile", unauthorized, 2);

  assert.equal(await h.run(ref, "gmail"), "failed");
  assert.equal(h.fake.count("token"), 1);
  assert.equal(h.fake.count("gmail.profile"), 2);
  const state = await h.state(ref);
  assert.match(state.lastError!, /Google returned 401 authError/);
  assert.equal(state.needsReauth, false);
});

Deno.test("gmail-importer keeps the stored window within the cell limit", async () => {
  await using h = await googleHarness();
  const wide = "Ω".repeat(400); // 2 bytes each, past every field cap
  for (let i = 0; i < 100; i++) {
    h.fake.mailbox.add({
      id: `m${String(i).padStart(3, "0")}`,
      internalDate: T0 - (100 - i) * MINUTE,
      subject: wide,
      from: wide,
      to: wide,
      snippet: wide,
      labelIds: [
        "INBOX",
        ...Array.from({ length: 30 }, (_, j) => `Label_${j}`),
      ],
    });
  }
  const ref = await h.charm({
    recipe: "gmail-importer",
    argument: { maxResults: 100 },
  });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const result = await h.result(ref);
  assert.ok(jsonSize(result) <= MAX_CELL_BYTES, `${jsonSize(result)} bytes`);
  assert.ok(result.emails.length > 10 && result.emails.length < 100);
  // The newest are the ones kept, with fields cut.
  assert.equal(result.emails[0].id, "m099");
  assert.equal(result.emails[0].subject.length, 256);
  assert.equal(result.emails[0].labelIds.length, 20);
});

Deno.test("gmail-importer applies a query to the full sync and to new messages", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "a1", subject: "invoice 1", internalDate: T0 - 2 });
  h.fake.mailbox.add({ id: "b1", subject: "hello", internalDate: T0 - 1 });
  const ref = await h.charm({
    recipe: "gmail-importer",
    argument: { query: "invoice" },
  });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["a1"]);

  h.fake.mailbox.add({ id: "a2", subject: "invoice 2", internalDate: T0 + 1 });
  h.fake.mailbox.add({ id: "b2", subject: "lunch?", internalDate: T0 + 2 });
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["a2", "a1"]);
});

Deno.test("gmail-importer backfills with the query, listing once for the additions and the backfill", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "a1", subject: "invoice 1", internalDate: T0 - 4 });
  h.fake.mailbox.add({ id: "b1", subject: "hello", internalDate: T0 - 3 });
  h.fake.mailbox.add({ id: "a2", subject: "invoice 2", internalDate: T0 - 2 });
  h.fake.mailbox.add({ id: "a3", subject: "invoice 3", internalDate: T0 - 1 });
  const ref = await h.charm({
    recipe: "gmail-importer",
    argument: { query: "invoice", maxResults: 2 },
  });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["a3", "a2"]);

  h.fake.mailbox.remove("a3");
  h.fake.mailbox.remove("a2");
  h.fake.mailbox.add({ id: "a4", subject: "invoice 4", internalDate: T0 + 1 });
  h.fake.mailbox.add({ id: "b2", subject: "lunch?", internalDate: T0 + 2 });
  const lists = h.fake.count("gmail.messages.list");
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["a4", "a1"]);
  assert.equal(h.fake.count("gmail.messages.list") - lists, 1);
});

Deno.test("gmail-importer does a full sync again when its settings change", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1", internalDate: T0 - 1 });
  h.fake.mailbox.add({ id: "s1", labelIds: ["STARRED"], internalDate: T0 });
  const ref = await h.charm({ recipe: "gmail-importer" });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["m1"]);

  const argument = await h.argument(ref);
  await h.deps.kv.set(cellKey(ref, "argument"), {
    ...argument,
    labelIds: ["STARRED"],
  });
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["s1"]);
  assert.equal(result.fullSyncs, 2);
});

Deno.test("gmail-importer refuses a manual run, which has no Google session", async () => {
  await using h = await googleHarness();
  const ref = await h.charm({ recipe: "gmail-importer", integration: null });
  assert.equal(await h.run(ref, null), "failed");
  assert.match(
    (await h.state(ref)).lastError!,
    /NonRetriableError: Cannot run recipe "gmail-importer".*a manual run/,
  );
  assert.equal(h.fake.calls.length, 0);
});

Deno.test("gmail-importer keeps a full window of clipped or curly-quoted mail inside the cell, as the service measures it", async () => {
  // A clipped field ends in "…" and a curly quote is not Latin-1: V8 then
  // stores the whole string two bytes a character, and the service checks
  // that size, not the JSON's.
  for (
    const wide of ["a".repeat(400), "x".repeat(190) + "’"]
  ) {
    await using h = await googleHarness();
    for (let i = 0; i < 100; i++) {
      h.fake.mailbox.add({
        id: `m${String(i).padStart(3, "0")}`,
        internalDate: T0 - (100 - i) * 60_000,
        subject: wide,
        from: wide,
        to: wide,
        snippet: wide,
      });
    }
    const ref = await h.charm({
      recipe: "gmail-importer",
      argument: { maxResults: 100 },
    });
    const outcome = await h.run(ref, "gmail");
    assert.equal(outcome, "succeeded", (await h.state(ref)).lastError ?? "");
    const result = await h.result(ref);
    assert.ok(cellSize(result) <= MAX_CELL_BYTES);
    // The newest come first; the oldest went to keep it in bounds.
    assert.ok(result.emails.length > 0 && result.emails.length < 100);
    assert.equal(result.emails[0].id, "m099");
  }
});

Deno.test("gmail-importer starts over when auth is replaced by another account's tokens", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "m1" });
  const ref = await h.charm({ recipe: "gmail-importer" });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const before = await h.result(ref);
  assert.deepEqual([before.fullSyncs, before.incrementalSyncs], [1, 1]);
  // The same settings, another person's sign-in.
  const argument = await h.argument(ref);
  await replaceCharmArgument(
    h.deps.kv,
    h.deps.recipes,
    ref,
    {
      ...argument,
      auth: {
        ...argument.auth,
        user: { ...argument.auth.user, email: "Other@Example.com" },
      },
    },
    h.deps.secrets,
  );
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const after = await h.result(ref);
  assert.deepEqual([after.fullSyncs, after.incrementalSyncs], [2, 1]);
  assert.equal(after.settings.account, "other@example.com");
  // And resumes from there.
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.equal((await h.result(ref)).incrementalSyncs, 2);
});

Deno.test("gmail-importer takes in a message moved into its labels by a label change alone", async () => {
  await using h = await googleHarness();
  for (let i = 1; i <= 3; i++) {
    h.fake.mailbox.add({ id: `m${i}`, internalDate: T0 - (10 - i) * MINUTE });
  }
  // Archived before the first sync: not in the INBOX window.
  h.fake.mailbox.add({
    id: "arch",
    labelIds: ["CATEGORY_UPDATES"],
    internalDate: T0 - MINUTE,
  });
  // In spam: not in it either.
  h.fake.mailbox.add({
    id: "spam",
    labelIds: ["INBOX", "SPAM"],
    internalDate: T0 - 2 * MINUTE,
  });
  const ref = await h.charm({ recipe: "gmail-importer" });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["m3", "m2", "m1"]);
  // "Move to Inbox" and "Not spam": history has only label changes.
  h.fake.mailbox.relabel("arch", ["INBOX"], []);
  h.fake.mailbox.relabel("spam", [], ["SPAM"]);
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const result = await h.result(ref);
  assert.equal(result.fullSyncs, 1);
  assert.deepEqual(ids(result), ["arch", "spam", "m3", "m2", "m1"]);
});

Deno.test("gmail-importer reads history 500 records a page, so a busy mailbox stays incremental", async () => {
  await using h = await googleHarness();
  h.fake.mailbox.add({ id: "first" });
  const ref = await h.charm({ recipe: "gmail-importer" });
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  // More records than 20 pages of Gmail's default 100 hold.
  for (let i = 0; i < 2_100; i++) {
    h.fake.mailbox.add({
      id: `n${String(i).padStart(4, "0")}`,
      internalDate: T0 + i,
    });
  }
  h.clock.t += MINUTE;
  assert.equal(await h.run(ref, "gmail"), "succeeded");
  const result = await h.result(ref);
  assert.deepEqual([result.fullSyncs, result.incrementalSyncs], [1, 1]);
  assert.equal(result.emails[0].id, "n2099");
});

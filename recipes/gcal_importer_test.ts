import assert from "node:assert/strict";
import { cellSize, jsonSize, MAX_CELL_BYTES } from "../store/kv_util.ts";
import { googleError } from "../test/fake_google.ts";
import { googleHarness, T0 } from "../test/fake_google_harness.ts";
import type { Event } from "./gcal_importer.ts";

const HOUR = 3600_000;
const DAY = 24 * HOUR;

function at(ms: number): { dateTime: string } {
  return { dateTime: new Date(ms).toISOString() };
}

/** One event, "a", an hour from now. */
function _putOneEvent(h: Awaited<ReturnType<typeof googleHarness>>): void {
  h.fake.calendar.put({
    id: "a",
    summary: "A",
    start: at(T0 + HOUR),
    end: at(T0 + 2 * HOUR),
  });
}

/** A charm that has synced a calendar of one event ("a") once. */
async function _syncedOnce(h: Awaited<ReturnType<typeof googleHarness>>) {
  _putOneEvent(h);
  const ref = await h.charm({ recipe: "gcal-importer" });
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  return ref;
}

/**
 * 300 hourly events from `from` whose summary and location are `wide`, and
 * a charm importing up to 500 of them.
 */
async function _wideCalendar(
  h: Awaited<ReturnType<typeof googleHarness>>,
  wide: string,
  from: number,
) {
  for (let i = 0; i < 300; i++) {
    const start = from + i * HOUR;
    h.fake.calendar.put({
      id: `e${String(i).padStart(3, "0")}`,
      summary: wide,
      location: wide,
      start: at(start),
      end: at(start + HOUR),
    });
  }
  return await h.charm({
    recipe: "gcal-importer",
    argument: { maxEvents: 500 },
  });
}

function ids(result: { events: Event[] }): string[] {
  return result.events.map((e) => e.id);
}

Deno.test("gcal-importer lists the window's events, paged, and keeps the sync token", async () => {
  await using h = await googleHarness();
  const cal = h.fake.calendar;
  cal.put({
    id: "past",
    summary: "Retro",
    start: at(T0 - 2 * DAY),
    end: at(T0 - 2 * DAY + HOUR),
  });
  cal.put({
    id: "soon",
    summary: "Standup",
    location: "Room 1",
    start: at(T0 + HOUR),
    end: at(T0 + 2 * HOUR),
  });
  cal.put({
    id: "allday",
    summary: "Holiday",
    start: { date: "2026-03-05" },
    end: { date: "2026-03-06" },
  });
  cal.put({
    id: "later",
    summary: "Review",
    start: at(T0 + 10 * DAY),
    end: at(T0 + 10 * DAY + HOUR),
  });
  cal.put({
    id: "too-old",
    summary: "Old",
    start: at(T0 - 30 * DAY),
    end: at(T0 - 30 * DAY + HOUR),
  });
  cal.put({
    id: "too-far",
    summary: "Far",
    start: at(T0 + 60 * DAY),
    end: at(T0 + 60 * DAY + HOUR),
  });
  cal.put({
    id: "dropped",
    summary: "Gone",
    start: at(T0 + DAY),
    end: at(T0 + DAY + HOUR),
  });
  cal.cancel("dropped");
  h.fake.pageSizeCap = 2;
  const ref = await h.charm({ recipe: "gcal-importer" });

  assert.equal(await h.run(ref, "gcal"), "succeeded");
  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["past", "soon", "allday", "later"]);
  assert.deepEqual(result.events[1], {
    id: "soon",
    status: "confirmed",
    summary: "Standup",
    location: "Room 1",
    start: new Date(T0 + HOUR).toISOString(),
    end: new Date(T0 + 2 * HOUR).toISOString(),
    allDay: false,
    updated: new Date(T0).toISOString(),
    htmlLink: "https://calendar.google.com/event?eid=soon",
    organizer: "user@example.com",
    recurringEventId: null,
  });
  assert.equal(result.events[2].allDay, true);
  assert.match(result.nextSyncToken, /^sync:/);
  assert.deepEqual([result.windowStart, result.windowEnd], [
    T0 - 7 * DAY,
    T0 + 30 * DAY,
  ]);
  const calls = h.fake.calls.filter((c) => c.route === "calendar.events.list");
  assert.equal(calls.length, 2);
  for (const call of calls) {
    assert.equal(call.query.get("singleEvents"), "true");
    assert.equal(
      call.query.get("timeMin"),
      new Date(T0 - 7 * DAY).toISOString(),
    );
    assert.equal(call.query.get("syncToken"), null);
  }
  assert.equal(calls[1]!.query.get("pageToken"), "2");
});

Deno.test("gcal-importer applies changes from the sync token, removing cancelled events", async () => {
  await using h = await googleHarness();
  const cal = h.fake.calendar;
  cal.put({
    id: "a",
    summary: "A",
    start: at(T0 + HOUR),
    end: at(T0 + 2 * HOUR),
  });
  cal.put({
    id: "b",
    summary: "B",
    start: at(T0 + 3 * HOUR),
    end: at(T0 + 4 * HOUR),
  });
  const ref = await h.charm({ recipe: "gcal-importer" });
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  const token = (await h.result(ref)).nextSyncToken;

  cal.put({
    id: "a",
    summary: "A (moved)",
    start: at(T0 + 5 * HOUR),
    end: at(T0 + 6 * HOUR),
  });
  cal.cancel("b");
  cal.put({
    id: "c",
    summary: "C",
    start: at(T0 + 2 * HOUR),
    end: at(T0 + 3 * HOUR),
  });
  h.clock.t += 60_000;
  assert.equal(await h.run(ref, "gcal"), "succeeded");

  const result = await h.result(ref);
  assert.deepEqual(
    result.events.map((e: Event) => [e.id, e.summary]),
    [["c", "C"], ["a", "A (moved)"]],
  );
  assert.deepEqual([result.fullSyncs, result.incrementalSyncs], [1, 1]);
  assert.notEqual(result.nextSyncToken, token);
  const last = h.fake.calls.filter((c) => c.route === "calendar.events.list")
    .at(-1)!;
  assert.equal(last.query.get("syncToken"), token);
  assert.equal(last.query.get("timeMin"), null);
});

Deno.test("gcal-importer clears its events and does a full sync on 410 Gone", async () => {
  await using h = await googleHarness();
  const cal = h.fake.calendar;
  cal.put({
    id: "a",
    summary: "A",
    start: at(T0 + HOUR),
    end: at(T0 + 2 * HOUR),
  });
  const ref = await h.charm({ recipe: "gcal-importer" });
  assert.equal(await h.run(ref, "gcal"), "succeeded");

  // Deleted outright while the token is invalid: only a full sync notices.
  cal.invalidateSyncTokens();
  cal.cancel("a");
  cal.put({
    id: "b",
    summary: "B",
    start: at(T0 + 2 * HOUR),
    end: at(T0 + 3 * HOUR),
  });
  h.clock.t += 60_000;
  assert.equal(await h.run(ref, "gcal"), "succeeded");

  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["b"]);
  assert.equal(result.fullSyncs, 2);
  const calls = h.fake.calls.filter((c) => c.route === "calendar.events.list");
  assert.ok(calls.at(-2)!.query.has("syncToken"));
  assert.ok(calls.at(-1)!.query.has("timeMin"));
});

Deno.test("gcal-importer resyncs once its window is a day behind", async () => {
  await using h = await googleHarness();
  const ref = await _syncedOnce(h);
  h.clock.t += DAY - 60_000;
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  assert.equal((await h.result(ref)).fullSyncs, 1);
  h.clock.t += 60_000;
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  const result = await h.result(ref);
  assert.equal(result.fullSyncs, 2);
  assert.equal(result.windowEnd, T0 + DAY + 30 * DAY);
});

Deno.test("gcal-importer keeps at most maxEvents within the cell limit, past ones dropped first", async () => {
  await using h = await googleHarness();
  const ref = await _wideCalendar(h, "Ω".repeat(400), T0 - 5 * DAY);
  assert.equal(await h.run(ref, "gcal"), "succeeded");
  const result = await h.result(ref);
  assert.ok(jsonSize(result) <= MAX_CELL_BYTES, `${jsonSize(result)} bytes`);
  assert.ok(result.events.length > 20 && result.events.length < 300);
  // Every past event went before any future one.
  assert.ok(Date.parse(result.events[0].end) > T0);
  assert.equal(result.events[0].summary.length, 256);

  const few = await h.charm({
    recipe: "gcal-importer",
    charmId: "few",
    argument: { maxEvents: 3 },
  });
  assert.equal(await h.run(few, "gcal"), "succeeded");
  assert.deepEqual(ids(await h.result(few)), ["e120", "e121", "e122"]);
});

Deno.test("gcal-importer retries rate limits and 5xx later; an unknown calendar is final", async () => {
  await using h = await googleHarness();
  _putOneEvent(h);
  const ref = await h.charm({ recipe: "gcal-importer" });
  h.fake.failNext("calendar.events.list", {
    status: 403,
    headers: { "retry-after": "20" },
    body: googleError(403, "rateLimitExceeded"),
  });
  assert.equal(await h.run(ref, "gcal"), "retrying");
  assert.equal(h.sent.at(-1)!.delayMs, 20_000);
  h.fake.failNext("calendar.events.list", {
    status: 500,
    body: googleError(500, "backendError"),
  });
  h.clock.t += 20_000;
  assert.equal(await h.run(ref, "gcal", { attempt: 2 }), "retrying");
  h.clock.t += 2_000;
  assert.equal(await h.run(ref, "gcal", { attempt: 3 }), "succeeded");
  assert.deepEqual(ids(await h.result(ref)), ["a"]);

  const other = await h.charm({
    recipe: "gcal-importer",
    charmId: "other",
    argument: { calendarId: "nobody@example.com" },
  });
  assert.equal(await h.run(other, "gcal"), "failed");
  assert.match(
    (await h.state(other)).lastError!,
    /Cannot list the events of calendar "nobody@example.com".*404 notFound/,
  );
});

Deno.test("gcal-importer keeps its window inside the cell as the service measures it, clipped fields included", async () => {
  await using h = await googleHarness();
  // A clipped field ends in "…": V8 stores it two bytes a character.
  const ref = await _wideCalendar(h, "a".repeat(400), T0);
  const outcome = await h.run(ref, "gcal");
  assert.equal(outcome, "succeeded", (await h.state(ref)).lastError ?? "");
  assert.ok(cellSize(await h.result(ref)) <= MAX_CELL_BYTES);
});

Deno.test("gcal-importer does a full sync when the changes since its token run past its page bound", async () => {
  await using h = await googleHarness();
  const ref = await _syncedOnce(h);
  // A bulk change far outside the window (old events imported): more pages
  // of changes than a run reads, one item a page.
  for (let i = 0; i < 41; i++) {
    h.fake.calendar.put({
      id: `old${i}`,
      summary: "old",
      start: at(T0 - 300 * DAY),
      end: at(T0 - 300 * DAY + HOUR),
    });
  }
  h.fake.pageSizeCap = 1;
  h.clock.t += 60_000;
  const outcome = await h.run(ref, "gcal");
  assert.equal(outcome, "succeeded", (await h.state(ref)).lastError ?? "");
  const result = await h.result(ref);
  assert.deepEqual(ids(result), ["a"]);
  assert.equal(result.fullSyncs, 2);
});

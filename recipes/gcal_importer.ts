/**
 * `gcal-importer`: imports the events of a Google Calendar within a window
 * around now into the result cell and keeps them current (stream
 * `calendarUpdater`, run by the `gcal` integration, which refreshes the token
 * first).
 *
 * - **Full sync** (first run, settings changed, the window moved by a day, or
 *   the sync token expired): `events.list` with `singleEvents=true` over
 *   `[now - daysBack, now + daysForward]`, paged with `nextPageToken`; the
 *   last page's `nextSyncToken` is kept. A 410 Gone on an incremental sync
 *   clears the local events and does this.
 * - **Incremental sync**: `events.list` with the `syncToken` (paged); changed
 *   events replace the stored ones, cancelled ones are removed, and events
 *   outside the window are left out.
 * - **Bounded storage**: at most `maxEvents` events (at most 500), long
 *   fields cut to 256 characters, then trimmed to stay under
 *   {@linkcode EVENTS_BUDGET_BYTES}: past events go first, then the furthest
 *   in the future.
 *
 * Rate limits (429, 403 `rateLimitExceeded`) and 5xx fail the attempt as
 * retriable, honouring `Retry-After` through the run's retry; nothing sleeps
 * here. Every call carries the run's signal.
 *
 * @module
 */
import { z } from "zod";
import { defineRecipe, type RunContext } from "../charm/recipe.ts";
import { StaleSyncError } from "../google/api_error.ts";
import { googleAuthSchema } from "../google/auth.ts";
import {
  type CalendarApi,
  calendarApi,
  type CalendarEvent,
} from "../google/calendar_api.ts";
import { googleSessionOf } from "../google/session.ts";
import { NonRetriableError } from "../lib/errors.ts";
import { cellSize } from "../store/kv_util.ts";

/** Largest `maxEvents` accepted. */
export const MAX_EVENTS = 500;

/** The events' share of the result cell (60 KiB), leaving room for the rest. */
export const EVENTS_BUDGET_BYTES = 54 * 1024;

const DAY_MS = 24 * 3600 * 1000;

/** Events per `events.list` page (Google's default). */
const PAGE_SIZE = 250;

/** Pages read in one sync; a window needing more is too wide. */
const MAX_PAGES = 40;

const FIELD_CHARS = 256;

const argumentSchema = z.object({
  /** Google OAuth tokens; the `gcal` integration keeps them fresh. */
  auth: googleAuthSchema.prefault({}),
  /** `primary` or a calendar id (an address). */
  calendarId: z.string().min(1).max(256).default("primary"),
  /** Days of past events to keep. */
  daysBack: z.number().int().min(0).max(365).default(7),
  /** Days of future events to keep. */
  daysForward: z.number().int().min(1).max(365).default(30),
  /** Most events kept. */
  maxEvents: z.number().int().min(1).max(MAX_EVENTS).default(250),
}).strict();

const eventSchema = z.object({
  id: z.string(),
  status: z.string(),
  summary: z.string(),
  location: z.string(),
  /** `dateTime` (RFC 3339) or, for an all-day event, `date`. */
  start: z.string(),
  end: z.string(),
  allDay: z.boolean(),
  updated: z.string(),
  htmlLink: z.string(),
  organizer: z.string(),
  recurringEventId: z.string().nullable(),
});

/** One imported event. */
export type Event = z.infer<typeof eventSchema>;

const settingsSchema = z.object({
  calendarId: z.string(),
  daysBack: z.number(),
  daysForward: z.number(),
  maxEvents: z.number(),
});

const resultSchema = z.object({
  /** By start time. */
  events: z.array(eventSchema),
  /** Where the next incremental sync starts; `null` before the first sync. */
  nextSyncToken: z.string().nullable(),
  /** The window of the last full sync, epoch ms. */
  windowStart: z.number().nullable(),
  windowEnd: z.number().nullable(),
  /** The settings the events were synced with; a change means a full sync. */
  settings: settingsSchema.nullable(),
  lastSyncAt: z.number().nullable(),
  lastFullSyncAt: z.number().nullable(),
  fullSyncs: z.number().int().min(0),
  incrementalSyncs: z.number().int().min(0),
});

type Argument = z.infer<typeof argumentSchema>;
type Result = z.infer<typeof resultSchema>;

/** Imports a Google Calendar's events around now, incrementally. */
export const gcalImporterRecipe = defineRecipe({
  name: "gcal-importer",
  description:
    "Imports Google Calendar events around now and keeps them current",
  argumentSchema,
  resultSchema,
  // Encrypted at rest (SECRETS_KEY) and redacted in API replies.
  secretPaths: { argument: [["auth", "token"], ["auth", "refreshToken"]] },
  initialResult: () => ({
    events: [],
    nextSyncToken: null,
    windowStart: null,
    windowEnd: null,
    settings: null,
    lastSyncAt: null,
    lastFullSyncAt: null,
    fullSyncs: 0,
    incrementalSyncs: 0,
  }),
  handlers: {
    async calendarUpdater(ctx) {
      const api = calendarApi(googleSessionOf(ctx, "gcal-importer"));
      const argument = ctx.argument.get();
      const previous = ctx.result.get();
      const now = ctx.now();
      const canResume = previous.nextSyncToken !== null &&
        previous.windowEnd !== null &&
        JSON.stringify(previous.settings) ===
          JSON.stringify(_settings(argument)) &&
        // The window slides with time: resync once it is a day behind.
        now + argument.daysForward * DAY_MS - previous.windowEnd < DAY_MS;
      let next: Result;
      if (!canResume) {
        next = await _fullSync(api, argument, previous, ctx);
      } else {
        try {
          next = await _incrementalSync(api, argument, previous, ctx);
        } catch (error) {
          if (!(error instanceof StaleSyncError)) throw error;
          ctx.logger.warn(
            "Calendar sync token expired ({reason}); clearing the events and doing a full sync",
            { reason: error.message },
          );
          next = await _fullSync(api, argument, previous, ctx);
        }
      }
      ctx.result.set(next);
    },
  },
});

async function _fullSync(
  api: CalendarApi,
  argument: Argument,
  previous: Result,
  ctx: RunContext<Argument, Result>,
): Promise<Result> {
  const now = ctx.now();
  const windowStart = now - argument.daysBack * DAY_MS;
  const windowEnd = now + argument.daysForward * DAY_MS;
  const events = new Map<string, Event>();
  const nextSyncToken = await _pages(
    api,
    argument,
    {
      timeMin: new Date(windowStart).toISOString(),
      timeMax: new Date(windowEnd).toISOString(),
    },
    (item) => {
      if (item.status !== "cancelled") events.set(item.id, _toEvent(item));
    },
  );
  const kept = _window([...events.values()], argument.maxEvents, now, {
    windowStart,
    windowEnd,
  });
  ctx.logger.info("Calendar full sync: {count} events", { count: kept.length });
  return {
    events: kept,
    nextSyncToken,
    windowStart,
    windowEnd,
    settings: _settings(argument),
    lastSyncAt: now,
    lastFullSyncAt: now,
    fullSyncs: previous.fullSyncs + 1,
    incrementalSyncs: previous.incrementalSyncs,
  };
}

async function _incrementalSync(
  api: CalendarApi,
  argument: Argument,
  previous: Result,
  ctx: RunContext<Argument, Result>,
): Promise<Result> {
  const events = new Map(previous.events.map((e) => [e.id, e]));
  let changed = 0;
  let removed = 0;
  const nextSyncToken = await _pages(
    api,
    argument,
    { syncToken: previous.nextSyncToken! },
    (item) => {
      if (item.status === "cancelled") {
        if (events.delete(item.id)) removed++;
      } else {
        events.set(item.id, _toEvent(item));
        changed++;
      }
    },
  );
  const now = ctx.now();
  const kept = _window([...events.values()], argument.maxEvents, now, {
    windowStart: previous.windowStart!,
    windowEnd: previous.windowEnd!,
  });
  ctx.logger.info(
    "Calendar incremental sync: {changed} changed, {removed} removed, {count} kept",
    { changed, removed, count: kept.length },
  );
  return {
    ...previous,
    events: kept,
    nextSyncToken,
    lastSyncAt: now,
    incrementalSyncs: previous.incrementalSyncs + 1,
  };
}

/** Reads every page of one listing; returns the last page's sync token. */
async function _pages(
  api: CalendarApi,
  argument: Argument,
  query: { syncToken: string } | { timeMin: string; timeMax: string },
  each: (item: CalendarEvent) => void,
): Promise<string> {
  let pageToken: string | null = null;
  for (let page = 0; page < MAX_PAGES; page++) {
    const result = await api.listEvents({
      calendarId: argument.calendarId,
      maxResults: PAGE_SIZE,
      pageToken,
      ...query,
    });
    result.items.forEach(each);
    pageToken = result.nextPageToken;
    if (pageToken === null) {
      if (result.nextSyncToken === null) {
        throw new Error(
          `Calendar "${argument.calendarId}" listing ended without a nextSyncToken`,
        );
      }
      return result.nextSyncToken;
    }
  }
  if ("syncToken" in query) {
    // Changes since the token are not bounded by the window (an import of
    // old events, say): a full sync of the window is.
    throw new StaleSyncError(
      `more than ${MAX_PAGES} pages of changes since the last sync`,
    );
  }
  throw new NonRetriableError(
    `Calendar "${argument.calendarId}" has more than ${
      MAX_PAGES * PAGE_SIZE
    } events in the window; lower daysBack or daysForward`,
  );
}

/**
 * The events in the window, by start, at most `max` and within the byte
 * budget: past events are dropped first, then the furthest future ones.
 */
function _window(
  events: Event[],
  max: number,
  now: number,
  window: { windowStart: number; windowEnd: number },
): Event[] {
  const inWindow = events
    .filter((e) =>
      _time(e.end, Infinity) > window.windowStart &&
      _time(e.start, -Infinity) < window.windowEnd
    )
    .sort((a, b) =>
      _time(a.start, 0) - _time(b.start, 0) || a.id.localeCompare(b.id)
    );
  let bytes = 2 + inWindow.reduce((sum, e) => sum + cellSize(e) + 1, 0);
  let first = 0;
  let last = inWindow.length;
  while (last > first && (last - first > max || bytes > EVENTS_BUDGET_BYTES)) {
    const drop = _time(inWindow[first]!.end, Infinity) <= now
      ? inWindow[first++]!
      : inWindow[--last]!;
    bytes -= cellSize(drop) + 1;
  }
  return inWindow.slice(first, last);
}

function _time(value: string, fallback: number): number {
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? fallback : ms;
}

function _settings(argument: Argument): Result["settings"] {
  return {
    calendarId: argument.calendarId,
    daysBack: argument.daysBack,
    daysForward: argument.daysForward,
    maxEvents: argument.maxEvents,
  };
}

function _toEvent(item: CalendarEvent): Event {
  const allDay = item.start?.dateTime === undefined &&
    item.start?.date !== undefined;
  return {
    id: item.id,
    status: _clip(item.status),
    summary: _clip(item.summary),
    location: _clip(item.location),
    start: item.start?.dateTime ?? item.start?.date ?? "",
    end: item.end?.dateTime ?? item.end?.date ?? "",
    allDay,
    updated: item.updated,
    htmlLink: _clip(item.htmlLink, 512),
    organizer: _clip(item.organizer?.email ?? ""),
    recurringEventId: item.recurringEventId ?? null,
  };
}

function _clip(text: string, chars = FIELD_CHARS): string {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
}

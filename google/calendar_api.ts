/**
 * The Calendar API call the `gcal-importer` makes, over a run's
 * {@linkcode GoogleSession}: `events.list` with `singleEvents=true`, either a
 * time window (full sync) or a `syncToken` (incremental).
 *
 * A 410 Gone (the sync token expired) becomes a {@linkcode StaleSyncError};
 * other failures the errors of `api_error.ts`.
 *
 * @module
 */
import { z } from "zod";
import { googleApiError, StaleSyncError } from "./api_error.ts";
import type { GoogleSession } from "./session.ts";

const timeSchema = z.object({
  dateTime: z.string().optional(),
  date: z.string().optional(),
  timeZone: z.string().optional(),
});

const eventSchema = z.object({
  id: z.string(),
  status: z.string().default("confirmed"),
  summary: z.string().default(""),
  location: z.string().default(""),
  htmlLink: z.string().default(""),
  updated: z.string().default(""),
  start: timeSchema.optional(),
  end: timeSchema.optional(),
  recurringEventId: z.string().optional(),
  organizer: z.object({ email: z.string().default("") }).optional(),
});

/** An event as `events.list` returns it (the fields the importer keeps). */
export type CalendarEvent = z.infer<typeof eventSchema>;

const pageSchema = z.object({
  items: z.array(eventSchema).default([]),
  nextPageToken: z.string().optional(),
  nextSyncToken: z.string().optional(),
});

/** A page of events. */
export interface EventPage {
  items: CalendarEvent[];
  nextPageToken: string | null;
  /** Only on the last page. */
  nextSyncToken: string | null;
}

/** Options for one `events.list` page. */
export type ListEventsOptions =
  & {
    calendarId: string;
    maxResults: number;
    pageToken: string | null;
  }
  & (
    | { syncToken: string }
    | { timeMin: string; timeMax: string }
  );

/** The Calendar calls, bound to one session. */
export interface CalendarApi {
  /**
   * One page of `events.list` (`singleEvents=true`).
   *
   * @throws {StaleSyncError} on 410: the sync token expired; do a full sync.
   */
  listEvents(options: ListEventsOptions): Promise<EventPage>;
}

/** The Calendar API for `session`, at `session.config.gcalApiUrl`. */
export function calendarApi(session: GoogleSession): CalendarApi {
  return {
    async listEvents(options) {
      const action =
        `Cannot list the events of calendar "${options.calendarId}" of charm ${session.charm}`;
      const params = new URLSearchParams({
        singleEvents: "true",
        maxResults: String(options.maxResults),
      });
      if ("syncToken" in options) {
        // Google refuses timeMin/timeMax/orderBy together with a sync token.
        params.set("syncToken", options.syncToken);
      } else {
        params.set("timeMin", options.timeMin);
        params.set("timeMax", options.timeMax);
      }
      if (options.pageToken !== null) {
        params.set("pageToken", options.pageToken);
      }
      const response = await session.get(
        `${session.config.gcalApiUrl}/calendars/${
          encodeURIComponent(options.calendarId)
        }/events?${params}`,
      );
      if (response.status === 410) {
        await response.body?.cancel();
        throw new StaleSyncError(
          `The Calendar sync token of charm ${session.charm} is no longer valid`,
        );
      }
      if (!response.ok) {
        throw await googleApiError(response, action, session.now());
      }
      const parsed = pageSchema.safeParse(
        await response.json().catch(() => null),
      );
      if (!parsed.success) {
        throw new Error(
          `${action}: Google's reply is malformed at ${
            parsed.error.issues[0]?.path.join(".") || "the top"
          }`,
        );
      }
      return {
        items: parsed.data.items,
        nextPageToken: parsed.data.nextPageToken ?? null,
        nextSyncToken: parsed.data.nextSyncToken ?? null,
      };
    },
  };
}

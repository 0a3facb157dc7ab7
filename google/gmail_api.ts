/**
 * The Gmail API calls the `gmail-importer` makes, over a run's
 * {@linkcode GoogleSession}: `users.getProfile`, `users.messages.list`,
 * `users.messages.get` (`format=metadata`) and `users.history.list`.
 *
 * Replies are validated; failures become the errors of `api_error.ts`, and
 * a 404 on history (the `historyId` is too old) a {@linkcode StaleSyncError}.
 *
 * @module
 */
import { z } from "zod";
import { googleApiError, StaleSyncError } from "./api_error.ts";
import type { GoogleSession } from "./session.ts";

/** The headers the importer keeps. */
export const METADATA_HEADERS = ["From", "To", "Subject", "Date"] as const;

const messageRefSchema = z.object({
  id: z.string(),
  threadId: z.string().optional(),
  labelIds: z.array(z.string()).optional(),
});

/** A message as `messages.list` and `history.list` name it. */
export type GmailMessageRef = z.infer<typeof messageRefSchema>;

const messageSchema = z.object({
  id: z.string(),
  threadId: z.string().default(""),
  labelIds: z.array(z.string()).default([]),
  snippet: z.string().default(""),
  historyId: z.string().optional(),
  internalDate: z.string().default("0"),
  payload: z.object({
    headers: z.array(z.object({ name: z.string(), value: z.string() }))
      .default([]),
  }).prefault({}),
});

/** A message fetched with `format=metadata`. */
export type GmailMessage = z.infer<typeof messageSchema>;

const listSchema = z.object({
  messages: z.array(messageRefSchema).default([]),
  nextPageToken: z.string().optional(),
});

const labelChangeSchema = z.object({
  message: messageRefSchema,
  labelIds: z.array(z.string()).default([]),
});

const historyRecordSchema = z.object({
  id: z.string(),
  messagesAdded: z.array(z.object({ message: messageRefSchema })).default([]),
  messagesDeleted: z.array(z.object({ message: messageRefSchema })).default(
    [],
  ),
  labelsAdded: z.array(labelChangeSchema).default([]),
  labelsRemoved: z.array(labelChangeSchema).default([]),
});

/** One `history.list` record. */
export type GmailHistoryRecord = z.infer<typeof historyRecordSchema>;

const historySchema = z.object({
  history: z.array(historyRecordSchema).default([]),
  nextPageToken: z.string().optional(),
  historyId: z.string(),
});

const profileSchema = z.object({
  emailAddress: z.string(),
  historyId: z.string(),
});

/** A page of message ids. */
export interface MessagePage {
  messages: GmailMessageRef[];
  nextPageToken: string | null;
}

/** A page of history. */
export interface HistoryPage {
  history: GmailHistoryRecord[];
  nextPageToken: string | null;
  /** The mailbox's current history id. */
  historyId: string;
}

/** The Gmail calls, bound to one session. */
export interface GmailApi {
  /** `users.getProfile`: the address and the current history id. */
  profile(): Promise<{ emailAddress: string; historyId: string }>;
  /** `users.messages.list`, newest first. */
  listMessages(options: {
    labelIds: readonly string[];
    query: string;
    maxResults: number;
    pageToken: string | null;
  }): Promise<MessagePage>;
  /** `users.messages.get` with `format=metadata`; `null` when it is gone. */
  getMessage(id: string): Promise<GmailMessage | null>;
  /**
   * `users.history.list` from `startHistoryId`.
   *
   * @throws {StaleSyncError} on 404: the id is too old; do a full sync.
   */
  listHistory(options: {
    startHistoryId: string;
    pageToken: string | null;
  }): Promise<HistoryPage>;
  /** Fetches messages, a few at a time; gone ones are left out. */
  getMessages(ids: readonly string[]): Promise<GmailMessage[]>;
}

/** Requests in flight at once when fetching message metadata. */
const METADATA_CONCURRENCY = 5;

/** The Gmail API for `session`, at `session.config.gmailApiUrl`. */
export function gmailApi(session: GoogleSession): GmailApi {
  const base = `${session.config.gmailApiUrl}/users/me`;
  const action = (what: string) => `Cannot ${what} of charm ${session.charm}`;

  async function getJson<T>(
    url: string,
    schema: z.ZodType<T>,
    what: string,
    on?: Partial<Record<number, () => T | never>>,
  ): Promise<T> {
    const response = await session.get(url);
    if (!response.ok) {
      const special = on?.[response.status];
      if (special) {
        await response.body?.cancel();
        return special();
      }
      throw await googleApiError(response, action(what), session.now());
    }
    const parsed = schema.safeParse(await response.json().catch(() => null));
    if (!parsed.success) {
      throw new Error(
        `${action(what)}: Google's reply is malformed at ${
          parsed.error.issues[0]?.path.join(".") || "the top"
        }`,
      );
    }
    return parsed.data;
  }

  const api: GmailApi = {
    profile: () =>
      getJson(`${base}/profile`, profileSchema, "read the Gmail profile"),
    async listMessages({ labelIds, query, maxResults, pageToken }) {
      const params = new URLSearchParams({ maxResults: String(maxResults) });
      for (const label of labelIds) params.append("labelIds", label);
      if (query !== "") params.set("q", query);
      if (pageToken !== null) params.set("pageToken", pageToken);
      const page = await getJson(
        `${base}/messages?${params}`,
        listSchema,
        "list Gmail messages",
      );
      return {
        messages: page.messages,
        nextPageToken: page.nextPageToken ?? null,
      };
    },
    getMessage(id) {
      const params = new URLSearchParams({ format: "metadata" });
      for (const name of METADATA_HEADERS) {
        params.append("metadataHeaders", name);
      }
      return getJson<GmailMessage | null>(
        `${base}/messages/${encodeURIComponent(id)}?${params}`,
        messageSchema,
        "read a Gmail message",
        { 404: () => null },
      );
    },
    async listHistory({ startHistoryId, pageToken }) {
      // The most a page holds (the default is 100): the importer's page
      // bound then covers 10,000 records before it falls back to a full sync.
      const params = new URLSearchParams({ startHistoryId, maxResults: "500" });
      for (
        const type of [
          "messageAdded",
          "messageDeleted",
          "labelAdded",
          "labelRemoved",
        ]
      ) params.append("historyTypes", type);
      if (pageToken !== null) params.set("pageToken", pageToken);
      const page = await getJson(
        `${base}/history?${params}`,
        historySchema,
        "list Gmail history",
        {
          404: () => {
            throw new StaleSyncError(
              `Gmail history ${startHistoryId} of charm ${session.charm} is no longer available`,
            );
          },
        },
      );
      return {
        history: page.history,
        nextPageToken: page.nextPageToken ?? null,
        historyId: page.historyId,
      };
    },
    async getMessages(ids) {
      const results: (GmailMessage | null)[] = new Array(ids.length).fill(
        null,
      );
      let next = 0;
      let failed = false;
      const worker = async () => {
        while (!failed && next < ids.length) {
          const i = next++;
          try {
            results[i] = await api.getMessage(ids[i]!);
          } catch (error) {
            failed = true;
            throw error;
          }
        }
      };
      await Promise.all(
        Array.from(
          { length: Math.min(METADATA_CONCURRENCY, ids.length) },
          worker,
        ),
      );
      return results.filter((m): m is GmailMessage => m !== null);
    },
  };
  return api;
}

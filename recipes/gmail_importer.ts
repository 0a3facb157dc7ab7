/**
 * `gmail-importer`: imports the newest messages of a Gmail mailbox into the
 * result cell and keeps them current (stream `googleUpdater`, run by the
 * `gmail` integration, which refreshes the token first).
 *
 * - **Full sync** (first run, settings changed, or history lost): reads the
 *   mailbox's `historyId` from the profile, lists the newest message ids
 *   (`messages.list`, paged, filtered by `labelIds` and `query`), and fetches
 *   each with `format=metadata`.
 * - **Incremental sync**: `history.list` from the stored `historyId` (paged)
 *   and applies only the changes: added messages are fetched, deleted ones
 *   dropped, label changes applied (a message that no longer matches
 *   `labelIds`, or went to Trash or Spam, leaves). When messages left and
 *   the window is below `maxResults`, the newest ids are listed again and
 *   the missing ones fetched (a backfill), so the window keeps its size: the
 *   older messages that now belong in it appear in no history record. A 404
 *   (the id is too old) falls back to a full sync, logged.
 * - **Bounded storage**: the result keeps a window of the newest
 *   `maxResults` messages (at most 100), with long fields cut (snippet 200
 *   characters, headers 256, 20 labels), then trimmed oldest-first to stay
 *   under {@linkcode EMAILS_BUDGET_BYTES}, whatever the mailbox size.
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
  type GmailApi,
  gmailApi,
  type GmailMessage,
} from "../google/gmail_api.ts";
import { googleSessionOf } from "../google/session.ts";
import { cellSize } from "../store/kv_util.ts";

/** Largest `maxResults` accepted: the window never holds more messages. */
export const MAX_MESSAGES = 100;

/** The emails' share of the result cell (60 KiB), leaving room for the rest. */
export const EMAILS_BUDGET_BYTES = 52 * 1024;

/** History pages read in one run before a full sync is cheaper. */
const MAX_HISTORY_PAGES = 20;

/** List pages read in one full sync (bounds a mailbox of tiny pages). */
const MAX_LIST_PAGES = 20;

const SNIPPET_CHARS = 200;
const HEADER_CHARS = 256;
const MAX_LABELS = 20;

/** Messages with these labels are left out unless `labelIds` asks for them. */
const HIDDEN_LABELS = ["SPAM", "TRASH"];

const argumentSchema = z.object({
  /** Google OAuth tokens; the `gmail` integration keeps them fresh. */
  auth: googleAuthSchema.prefault({}),
  /** Import messages that carry all of these labels (`[]`: all mail). */
  labelIds: z.array(z.string().min(1).max(128)).max(10).default(["INBOX"]),
  /** How many of the newest messages to keep. */
  maxResults: z.number().int().min(1).max(MAX_MESSAGES).default(50),
  /** A Gmail search query (`from:alice has:attachment`); `""` for none. */
  query: z.string().max(500).default(""),
}).strict();

const emailSchema = z.object({
  id: z.string(),
  threadId: z.string(),
  labelIds: z.array(z.string()),
  snippet: z.string(),
  /** Epoch ms, as Gmail received it. */
  internalDate: z.number(),
  from: z.string(),
  to: z.string(),
  subject: z.string(),
  /** The `Date` header, as sent. */
  date: z.string(),
});

/** One imported message. */
export type Email = z.infer<typeof emailSchema>;

const settingsSchema = z.object({
  labelIds: z.array(z.string()),
  query: z.string(),
  maxResults: z.number(),
  /**
   * Whom the tokens were for (`auth.user.email`, when the sign-in said):
   * tokens of another account mean another mailbox, so a full sync.
   */
  account: z.string().optional(),
});

const resultSchema = z.object({
  /** Newest first. */
  emails: z.array(emailSchema),
  /** Where the next incremental sync starts; `null` before the first sync. */
  historyId: z.string().nullable(),
  /** The mailbox address, from the profile. */
  account: z.string().nullable(),
  /** The settings the window was built with; a change means a full sync. */
  settings: settingsSchema.nullable(),
  lastSyncAt: z.number().nullable(),
  lastFullSyncAt: z.number().nullable(),
  fullSyncs: z.number().int().min(0),
  incrementalSyncs: z.number().int().min(0),
});

type Argument = z.infer<typeof argumentSchema>;
type Result = z.infer<typeof resultSchema>;

/** Imports a Gmail mailbox's newest messages, incrementally. */
export const gmailImporterRecipe = defineRecipe({
  name: "gmail-importer",
  description:
    "Imports the newest Gmail messages (metadata) and keeps them current",
  argumentSchema,
  resultSchema,
  // Encrypted at rest (SECRETS_KEY) and redacted in API replies.
  secretPaths: { argument: [["auth", "token"], ["auth", "refreshToken"]] },
  initialResult: () => ({
    emails: [],
    historyId: null,
    account: null,
    settings: null,
    lastSyncAt: null,
    lastFullSyncAt: null,
    fullSyncs: 0,
    incrementalSyncs: 0,
  }),
  handlers: {
    async googleUpdater(ctx) {
      const api = gmailApi(googleSessionOf(ctx, "gmail-importer"));
      const argument = ctx.argument.get();
      const previous = ctx.result.get();
      const settings = _settings(argument);
      const canResume = previous.historyId !== null &&
        JSON.stringify(previous.settings) === JSON.stringify(settings);
      let next: Result;
      if (!canResume) {
        next = await _fullSync(api, argument, previous, ctx);
      } else {
        try {
          next = await _incrementalSync(api, argument, previous, ctx);
        } catch (error) {
          if (!(error instanceof StaleSyncError)) throw error;
          ctx.logger.warn(
            "Gmail history {historyId} is no longer available ({reason}); doing a full sync",
            { historyId: previous.historyId, reason: error.message },
          );
          next = await _fullSync(api, argument, previous, ctx);
        }
      }
      ctx.result.set(next);
    },
  },
});

async function _fullSync(
  api: GmailApi,
  argument: Argument,
  previous: Result,
  ctx: RunContext<Argument, Result>,
): Promise<Result> {
  // The history id is read before listing: a change made while listing is
  // replayed by the next incremental sync (replaying is idempotent).
  const profile = await api.profile();
  const emails = _window(
    await _fetchEmails(api, await _listNewest(api, argument), argument),
    argument.maxResults,
  );
  ctx.logger.info("Gmail full sync: {count} messages", {
    count: emails.length,
  });
  const now = ctx.now();
  return {
    emails,
    historyId: profile.historyId,
    account: profile.emailAddress,
    settings: _settings(argument),
    lastSyncAt: now,
    lastFullSyncAt: now,
    fullSyncs: previous.fullSyncs + 1,
    incrementalSyncs: previous.incrementalSyncs,
  };
}

async function _incrementalSync(
  api: GmailApi,
  argument: Argument,
  previous: Result,
  ctx: RunContext<Argument, Result>,
): Promise<Result> {
  const kept = new Map(previous.emails.map((e) => [e.id, e]));
  // Added ids in history order, with the labels history last reported.
  const added = new Map<string, string[]>();
  // Untracked messages a label change may have moved into the window (Move
  // to Inbox, Not spam, restored from Trash): their labels are known only
  // once fetched.
  const movedIn = new Set<string>();
  let deleted = 0;
  let historyId = previous.historyId!;
  let pageToken: string | null = null;
  for (let page = 0;; page++) {
    if (page === MAX_HISTORY_PAGES) {
      throw new StaleSyncError(
        `more than ${MAX_HISTORY_PAGES} pages of Gmail history`,
      );
    }
    const history = await api.listHistory({
      startHistoryId: previous.historyId!,
      pageToken,
    });
    for (const record of history.history) {
      for (const { message } of record.messagesAdded) {
        added.delete(message.id);
        added.set(message.id, message.labelIds ?? []);
      }
      for (const { message } of record.messagesDeleted) {
        if (kept.delete(message.id)) deleted++;
        added.delete(message.id);
        movedIn.delete(message.id);
      }
      for (const change of record.labelsAdded) {
        if (
          change.labelIds.some((l) => argument.labelIds.includes(l)) &&
          !kept.has(change.message.id) && !added.has(change.message.id)
        ) movedIn.add(change.message.id);
        _relabel(kept, added, change.message.id, (labels) => [
          ...new Set([...labels, ...change.labelIds]),
        ]);
      }
      for (const change of record.labelsRemoved) {
        if (
          change.labelIds.some((l) => HIDDEN_LABELS.includes(l)) &&
          !kept.has(change.message.id) && !added.has(change.message.id)
        ) movedIn.add(change.message.id);
        _relabel(
          kept,
          added,
          change.message.id,
          (labels) => labels.filter((l) => !change.labelIds.includes(l)),
        );
      }
    }
    historyId = history.historyId;
    pageToken = history.nextPageToken;
    if (pageToken === null) break;
  }

  for (const [id, email] of kept) {
    if (!_matches(email.labelIds, argument)) kept.delete(id);
  }
  // Deleted, trashed, archived or relabelled out of the window.
  const left = previous.emails.length - kept.size;
  // At most one listing per run, shared by the query check and the backfill.
  let newest: Promise<string[]> | null = null;
  const listNewest = () => (newest ??= _listNewest(api, argument));
  // The newest additions come last in history; older ones would not make
  // the window anyway.
  let candidates = [
    ...[...movedIn].filter((id) => !kept.has(id) && !added.has(id)),
    ...[...added]
      .filter(([id, labels]) => !kept.has(id) && _matches(labels, argument))
      .map(([id]) => id),
  ].slice(-argument.maxResults);
  if (argument.query !== "" && candidates.length > 0) {
    // History cannot evaluate a search query: keep the additions that the
    // query's newest results include.
    const matching = new Set(await listNewest());
    candidates = candidates.filter((id) => matching.has(id));
  }
  const fetched = await _fetchEmails(api, candidates, argument);
  for (const email of fetched) kept.set(email.id, email);
  let backfilled = 0;
  if (left > 0 && kept.size < argument.maxResults) {
    // The messages that now belong in the window are older than the ones
    // kept, and history does not mention them: list the newest again and
    // fetch those not kept. A mailbox with fewer messages than the window
    // yields none (one list call).
    const missing = (await listNewest()).filter((id) => !kept.has(id));
    const more = await _fetchEmails(api, missing, argument);
    for (const email of more) kept.set(email.id, email);
    backfilled = more.length;
  }
  const emails = _window([...kept.values()], argument.maxResults);
  ctx.logger.info(
    "Gmail incremental sync: {added} added, {deleted} deleted, {backfilled} backfilled, {count} kept",
    { added: fetched.length, deleted, backfilled, count: emails.length },
  );
  return {
    ...previous,
    emails,
    historyId,
    lastSyncAt: ctx.now(),
    incrementalSyncs: previous.incrementalSyncs + 1,
  };
}

/**
 * The ids of the newest `maxResults` messages matching `labelIds` and
 * `query`, newest first (`messages.list`, paged).
 */
async function _listNewest(
  api: GmailApi,
  argument: Argument,
): Promise<string[]> {
  const ids: string[] = [];
  let pageToken: string | null = null;
  for (let page = 0; page < MAX_LIST_PAGES; page++) {
    const listed = await api.listMessages({
      labelIds: argument.labelIds,
      query: argument.query,
      maxResults: argument.maxResults - ids.length,
      pageToken,
    });
    ids.push(...listed.messages.map((m) => m.id));
    pageToken = listed.nextPageToken;
    if (pageToken === null || ids.length >= argument.maxResults) break;
  }
  return [...new Set(ids)].slice(0, argument.maxResults);
}

/** Fetches messages and keeps those that belong in the window. */
async function _fetchEmails(
  api: GmailApi,
  ids: readonly string[],
  argument: Argument,
): Promise<Email[]> {
  return (await api.getMessages(ids))
    .map(_toEmail)
    .filter((e) => _matches(e.labelIds, argument));
}

function _relabel(
  kept: Map<string, Email>,
  added: Map<string, string[]>,
  id: string,
  change: (labels: string[]) => string[],
): void {
  const email = kept.get(id);
  if (email) {
    kept.set(id, {
      ...email,
      labelIds: change(email.labelIds).slice(0, MAX_LABELS),
    });
  }
  const labels = added.get(id);
  if (labels) added.set(id, change(labels));
}

/** Whether a message with `labels` belongs in the window. */
function _matches(labels: readonly string[], argument: Argument): boolean {
  if (!argument.labelIds.every((l) => labels.includes(l))) return false;
  return HIDDEN_LABELS.every((hidden) =>
    argument.labelIds.includes(hidden) || !labels.includes(hidden)
  );
}

function _settings(argument: Argument): Result["settings"] {
  const account = argument.auth?.user?.email?.toLowerCase() ?? "";
  return {
    labelIds: argument.labelIds,
    query: argument.query,
    maxResults: argument.maxResults,
    // Only when known, so charms whose sign-in named nobody keep resuming.
    ...(account !== "" ? { account } : {}),
  };
}

/** The newest `max` emails, trimmed oldest-first to the byte budget. */
function _window(emails: Email[], max: number): Email[] {
  const sorted = emails
    .sort((a, b) => b.internalDate - a.internalDate || a.id.localeCompare(b.id))
    .slice(0, max);
  let bytes = 2;
  const kept: Email[] = [];
  for (const email of sorted) {
    bytes += cellSize(email) + 1;
    if (bytes > EMAILS_BUDGET_BYTES) break;
    kept.push(email);
  }
  return kept;
}

function _toEmail(message: GmailMessage): Email {
  const header = (name: string) =>
    _clip(
      message.payload.headers.find((h) =>
        h.name.toLowerCase() === name.toLowerCase()
      )?.value ?? "",
      HEADER_CHARS,
    );
  return {
    id: message.id,
    threadId: message.threadId,
    labelIds: message.labelIds.slice(0, MAX_LABELS).map((l) => _clip(l, 64)),
    snippet: _clip(message.snippet, SNIPPET_CHARS),
    internalDate: Number(message.internalDate) || 0,
    from: header("From"),
    to: header("To"),
    subject: header("Subject"),
    date: header("Date"),
  };
}

function _clip(text: string, chars: number): string {
  return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
}

/**
 * Recipes: the code behind charms, shipped with the service and registered by
 * name in `recipes/mod.ts`.
 *
 * A recipe validates its argument and result cells with zod schemas and
 * implements one or more updater streams. A run calls one stream with a
 * {@linkcode RunContext}; cell writes made through the context are buffered
 * and committed atomically only when the handler settles successfully before
 * the deadline.
 *
 * @module
 */
import type { Logger } from "@logtape/logtape";
import type { z } from "zod";
import type { EgressPolicy } from "../lib/net_guard.ts";
import type { Signer } from "../lib/webhook_signature.ts";
import type { DidKey } from "./did.ts";
import type { UpdaterName } from "./updaters.ts";

/** A charm cell as a run sees it: read the current value, buffer a new one. */
export interface Cell<T> {
  /** The value as of the start of the run, or the last `set` in this run. */
  get(): T;
  /** Buffers a new value; committed only if the run succeeds in time. */
  set(value: T): void;
}

/** What a stream handler gets for one run. */
export interface RunContext<A, R> {
  space: DidKey;
  charmId: string;
  /**
   * The integration the run goes through (its stream and `prepare`), or
   * `null` for a run by hand of a charm registered with none.
   */
  integration: string | null;
  /** The scheduled slot (epoch ms) this run belongs to. */
  slot: number;
  /** 1 for the first try, 2 for the first retry, ... */
  attempt: number;
  argument: Cell<A>;
  result: Cell<R>;
  /** Aborted when the run times out or the service shuts down. */
  signal: AbortSignal;
  /** The service's `fetch` (injected, so tests and policies can wrap it). */
  fetch: typeof fetch;
  /** A logger scoped to this charm. */
  logger: Logger;
  /** The service clock, epoch ms. */
  now(): number;
  /**
   * What the integration's `prepare` hook returned for this run (an
   * authorized API session, say); `undefined` without one (under `manual`).
   */
  prepared: unknown;
  /**
   * Which hosts outbound requests may reach: outside local development, not private,
   * loopback or link-local ones (see `lib/net_guard.ts`).
   */
  egress: EgressPolicy;
  /**
   * The operator identity, to sign outbound requests with; `null` where the
   * service runs without one (tests).
   */
  signer: Signer | null;
}

/** A JSON path into a cell: object keys from the top, `["auth", "token"]`. */
export type SecretPath = readonly string[];

/** What {@linkcode Recipe.checkArgument} gets. */
export interface ArgumentCheckContext {
  egress: EgressPolicy;
  signal?: AbortSignal;
}

/** A stream handler. It settles to end the run; throwing fails it. */
export type StreamHandler<A, R> = (ctx: RunContext<A, R>) => Promise<void>;

/** A recipe definition. */
export interface Recipe<A, R> {
  /** Registry name, used in `POST /api/charms {recipe}`. */
  name: string;
  /** One line for listings. */
  description: string;
  argumentSchema: z.ZodType<A>;
  resultSchema: z.ZodType<R>;
  /** The result cell of a new charm. */
  initialResult(argument: A): R;
  /** The updater streams this recipe implements. */
  handlers: Partial<Record<UpdaterName, StreamHandler<A, R>>>;
  /**
   * Fields of each cell that hold secrets (OAuth tokens): encrypted at rest
   * with `SECRETS_KEY` and shown as `"[redacted]"` in API replies. Handlers
   * see them in plaintext.
   */
  secretPaths?: {
    argument?: readonly SecretPath[];
    result?: readonly SecretPath[];
  };
  /**
   * `true` when the handlers only read and write their cells: no `fetch`,
   * nothing outside the charm changes. A pure run takes no lease: it runs on
   * the cells as it read them and its outcome commits only if nothing changed
   * meanwhile (else it runs again, then under a lease). That is one commit per
   * run instead of two. Its context's `fetch` throws and its `signer` is
   * `null`. Default `false`.
   */
  pure?: boolean;
  /**
   * Checks of a new argument beyond its schema that need I/O (where a URL
   * resolves, say), when a charm is created or its argument replaced. Throws
   * a `TypeError` naming the field (`argument.url: ...`) to refuse it.
   */
  checkArgument?(argument: A, ctx: ArgumentCheckContext): Promise<void>;
}

/** A recipe of any cell types, as the registry holds them. */
// deno-lint-ignore no-explicit-any
export type AnyRecipe = Recipe<any, any>;

/** Identity helper that keeps a recipe's cell types inferred. */
export function defineRecipe<A, R>(recipe: Recipe<A, R>): Recipe<A, R> {
  return recipe;
}

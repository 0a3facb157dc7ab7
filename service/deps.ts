/**
 * The dependencies every handler takes: KV, the clock, fetch, the queue, the
 * loggers' source and the run policy. Built once by `main.ts` (or a test).
 *
 * @module
 */
import type { AnyRecipe } from "../charm/recipe.ts";
import type { Config } from "../config/config.ts";
import type { Integration } from "../integrations/integration.ts";
import type { EgressPolicy } from "../lib/net_guard.ts";
import type { SecretKeys } from "../lib/secrets.ts";
import type { Semaphore } from "../lib/semaphore.ts";
import type { Signer } from "../lib/webhook_signature.ts";
import type { QueueDriver } from "../queue/queue.ts";

/** The part of the configuration handlers read. */
export type RunPolicy = Pick<
  Config,
  | "intervalMs"
  | "maxConsecutiveFailures"
  | "maxRetries"
  | "charmExecutionTimeoutMs"
  | "retryBaseDelayMs"
  | "retryMaxDelayMs"
>;

/** A timer handle, whatever the runtime's `setTimeout` returns. */
export type TimerId = ReturnType<typeof setTimeout>;

/** Timer functions, injectable so tests can drive time. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): TimerId;
  clearTimeout(id: TimerId): void;
}

/** What the fan-out, run handler and HTTP layer need. */
export interface ServiceDeps {
  kv: Deno.Kv;
  queue: QueueDriver;
  policy: RunPolicy;
  /** Integrations that are enabled in this process, by id. */
  integrations: ReadonlyMap<string, Integration>;
  /** Every integration that exists, by id. */
  allIntegrations: ReadonlyMap<string, Integration>;
  recipes: ReadonlyMap<string, AnyRecipe>;
  /** Limits runs executing at once in this process. */
  semaphore: Semaphore;
  /** Identifies this process in leases. */
  ownerId: string;
  /** Epoch ms. */
  now(): number;
  /** In [0, 1); jitter source. */
  random(): number;
  fetch: typeof fetch;
  timers: Timers;
  env: Record<string, string | undefined>;
  /** Aborted when the service shuts down past its grace period. */
  shutdownSignal: AbortSignal;
  /**
   * When set, each cycle drains the queue for at most this long after its
   * fan-out (the `kv` driver where no process stays up, as on Deno Deploy).
   */
  drainBudgetMs: number | null;
  /**
   * Seal secret cell fields at rest (`SECRETS_KEY`); `null` stores them in
   * plaintext (local only, with a warning at startup).
   */
  secrets: SecretKeys | null;
  /** Where charms' outbound requests may go (restricted outside local development). */
  egress: EgressPolicy;
  /**
   * The operator identity, which signs webhook requests; `null` sends them
   * unsigned (tests and benchmarks; `main.ts` always sets it).
   */
  signer: Signer | null;
}

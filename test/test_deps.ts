/**
 * Test fixtures: real `ServiceDeps` over an in-memory Deno KV, with an
 * injected clock and timers. Close with `await using`.
 *
 * @module
 */
import { Identity } from "../identity/identity.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import type { Integration } from "../integrations/integration.ts";
import { egressPolicy } from "../lib/net_guard.ts";
import { deriveSecretKey, type SecretKeys } from "../lib/secrets.ts";
import { Semaphore } from "../lib/semaphore.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { RECIPES } from "../recipes/mod.ts";
import type { CharmRef } from "../charm/charm.ts";
import type { Message } from "../handlers/messages.ts";
import type { QueueDriver } from "../queue/queue.ts";
import type {
  RunPolicy,
  ServiceDeps,
  TimerId,
  Timers,
} from "../service/deps.ts";

/** A valid space DID (the "common user" identity). */
export const SPACE =
  "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY" as const;

/** A second valid space DID. */
export const OTHER_SPACE =
  "did:key:z6Mkfuw7h6jDwqVb6wimYGys14JFcyTem4Kqvdj9DjpFhY88" as const;

/** Policy used by tests unless overridden. */
export const TEST_POLICY: RunPolicy = {
  intervalMs: 60_000,
  maxConsecutiveFailures: 5,
  maxRetries: 3,
  charmExecutionTimeoutMs: 30_000,
  retryBaseDelayMs: 1_000,
  retryMaxDelayMs: 60_000,
};

/** The `SECRETS_KEY` of test deps (fixed, so tests can derive it too). */
export const TEST_SECRETS_KEY = "bcs-test-secrets-key-0123456789abcdef";

/** The passphrase of the test deps' signer (the operator identity). */
export const TEST_SIGNER_PASSPHRASE = "bcs test operator";

/** The secret keys of test deps: {@linkcode TEST_SECRETS_KEY}, no previous. */
export async function testSecretKeys(): Promise<SecretKeys> {
  return { current: await deriveSecretKey(TEST_SECRETS_KEY), previous: null };
}

/** Options for {@linkcode makeTestDeps}. */
export type TestDepsOptions = Partial<Omit<ServiceDeps, "policy">> & {
  policy?: Partial<RunPolicy>;
  /** Enabled integrations (default: all). */
  integrationIds?: string[];
  /** A KV path (default `:memory:`). */
  kvPath?: string;
};

/** Builds deps over a fresh KV; dispose to close it. */
export async function makeTestDeps(
  options: TestDepsOptions = {},
): Promise<ServiceDeps & AsyncDisposable> {
  const { integrationIds, kvPath, policy, ...overrides } = options;
  const kv = overrides.kv ?? await Deno.openKv(kvPath ?? ":memory:");
  const all = new Map<string, Integration>(INTEGRATIONS.map((i) => [i.id, i]));
  const enabled = new Map(
    [...all].filter(([id]) => integrationIds?.includes(id) ?? true),
  );
  const deps: ServiceDeps = {
    kv,
    queue: nativeQueue(kv),
    policy: { ...TEST_POLICY, ...policy },
    integrations: enabled,
    allIntegrations: all,
    recipes: RECIPES,
    semaphore: new Semaphore(5),
    ownerId: "test",
    now: () => Date.now(),
    random: () => 0.5,
    fetch: globalThis.fetch,
    timers: {
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (id) => clearTimeout(id),
    },
    env: {},
    shutdownSignal: new AbortController().signal,
    drainBudgetMs: null,
    secrets: overrides.secrets === undefined
      ? await testSecretKeys()
      : overrides.secrets,
    egress: egressPolicy({ restricted: false }),
    signer: overrides.signer === undefined
      ? await Identity.fromPassphrase(TEST_SIGNER_PASSPHRASE)
      : overrides.signer,
    ...overrides,
  };
  return Object.assign(deps, {
    async [Symbol.asyncDispose]() {
      try {
        kv.close();
      } catch {
        // Already closed by the test.
      }
      await Promise.resolve();
    },
  });
}

/** One enqueue seen by {@linkcode recordingQueue}. */
export interface SentMessage {
  message: Message;
  delayMs: number;
}

/**
 * The real native driver, also recording what was enqueued (once the atomic
 * operation commits successfully, the caller decides; this records every
 * enqueue added, so tests pair it with checks of KV state).
 */
export function recordingQueue(
  kv: Deno.Kv,
): QueueDriver & { sent: SentMessage[] } {
  const inner = nativeQueue(kv);
  const sent: SentMessage[] = [];
  return {
    name: inner.name,
    sent,
    enqueue(op, message, options) {
      sent.push({ message, delayMs: options.delayMs });
      return inner.enqueue(op, message, options);
    },
    listen: (handler) => inner.listen(handler),
  };
}

/** Timers that fire only when the test says so. */
export function manualTimers(): Timers & {
  fireAll(): void;
  pending(): number;
} {
  const timers = new Map<number, () => void>();
  let next = 1;
  return {
    setTimeout(fn) {
      const id = next++;
      timers.set(id, fn);
      return id as unknown as TimerId;
    },
    clearTimeout(id) {
      timers.delete(id as unknown as number);
    },
    fireAll() {
      const due = [...timers.values()];
      timers.clear();
      for (const fn of due) fn();
    },
    pending: () => timers.size,
  };
}

/** A promise with its resolver, for waiting on an observable condition. */
export function deferred<T = void>(): {
  promise: Promise<T>;
  resolve(value: T): void;
} {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Polls `check` until it returns a truthy value, at most `timeoutMs`; throws
 * naming `what` if it never does. For end-to-end tests waiting on a process.
 */
export async function waitFor<T>(
  what: string,
  check: () =>
    | Promise<T | null | undefined | false>
    | T
    | null
    | undefined
    | false,
  timeoutMs = 30_000,
  pollMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`, {
    cause: lastError,
  });
}

/**
 * A manual run message of `ref` (what `POST …/run` enqueues) at `slot`, first
 * attempt.
 */
export function manualRunMessageFor(
  ref: CharmRef,
  slot: number,
  runId: string = crypto.randomUUID(),
): Message {
  return runMessageFor(ref, slot, {
    integration: null,
    kind: "manual",
    runId,
  } as Partial<Message>);
}

/** A scheduled run message of `ref` for `slot`, first attempt, by `manual`. */
export function runMessageFor(
  ref: CharmRef,
  slot: number,
  overrides: Partial<Message> = {},
): Message {
  return {
    type: "run",
    v: 1,
    space: ref.space,
    charmId: ref.charmId,
    integration: "manual",
    kind: "scheduled",
    slot,
    attempt: 1,
    enqueuedAt: slot,
    ...overrides,
  };
}

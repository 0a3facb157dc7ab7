/**
 * Test harness for the Google integrations: a {@linkcode FakeGoogle} on
 * loopback, real `ServiceDeps` over an in-memory KV pointed at it, an
 * injected clock, and helpers to create, register and run importer charms
 * through the real run handler. Dispose with `await using`.
 *
 * @module
 */
import type { CharmRef, CharmState } from "../charm/charm.ts";
import type { RunMessage } from "../handlers/messages.ts";
import { runCharm, type RunOutcome } from "../handlers/run_charm.ts";
import { decodeCell } from "../store/cell_codec.ts";
import { createCharm, registerCharm } from "../store/charms.ts";
import { cellKey, charmKey, charmStateKey } from "../store/keys.ts";
import {
  makeTestDeps,
  manualRunMessageFor,
  recordingQueue,
  runMessageFor,
  type SentMessage,
  SPACE,
  type TestDepsOptions,
} from "./test_deps.ts";
import {
  type FakeGoogle,
  type FakeGoogleOptions,
  startFakeGoogle,
} from "./fake_google.ts";
import type { ServiceDeps } from "../service/deps.ts";

/** 2026-03-02 09:00 UTC: slots are whole minutes from here. */
export const T0 = Date.UTC(2026, 2, 2, 9, 0);

/** The refresh token the harness grants by default. */
export const REFRESH_TOKEN = "1//fake-refresh-token";

/** A running harness. */
export interface GoogleHarness extends AsyncDisposable {
  fake: FakeGoogle;
  deps: ServiceDeps;
  /** The injected clock: set `clock.t` to move time. */
  clock: { t: number };
  /** Every message enqueued (retries show up here). */
  sent: SentMessage[];
  /**
   * Creates a charm of `recipe` and registers it with `integration`.
   * `auth` defaults to a valid token expiring in an hour.
   */
  charm(options: {
    recipe: "gmail-importer" | "gcal-importer";
    integration?: string | null;
    charmId?: string;
    argument?: Record<string, unknown>;
    auth?: Record<string, unknown>;
  }): Promise<CharmRef>;
  /** Runs one delivery through `runCharm` (slot = the clock's minute). */
  run(
    ref: CharmRef,
    integration: string | null,
    overrides?: Partial<RunMessage>,
  ): Promise<RunOutcome>;
  // deno-lint-ignore no-explicit-any
  argument(ref: CharmRef): Promise<any>;
  // deno-lint-ignore no-explicit-any
  result(ref: CharmRef): Promise<any>;
  state(ref: CharmRef): Promise<CharmState>;
}

/** Starts the fake and builds deps pointed at it. */
export async function googleHarness(
  options: {
    fake?: FakeGoogleOptions;
    deps?: TestDepsOptions;
    env?: Record<string, string>;
  } = {},
): Promise<GoogleHarness> {
  const clock = { t: T0 };
  const fake = startFakeGoogle({ now: () => clock.t, ...options.fake });
  fake.grant(REFRESH_TOKEN);
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const deps = await makeTestDeps({
    kv,
    queue,
    now: () => clock.t,
    env: { ...fake.env(), ...options.env },
    ...options.deps,
  });
  return {
    fake,
    deps,
    clock,
    sent: queue.sent,
    async charm({ recipe, integration, charmId, argument, auth }) {
      const ref = { space: SPACE, charmId: charmId ?? recipe };
      await createCharm(
        kv,
        ref,
        deps.recipes.get(recipe)!,
        {
          ...argument,
          auth: auth ?? {
            token: fake.issueAccessToken(),
            tokenType: "Bearer",
            scope: [],
            expiresIn: 3600,
            expiresAt: clock.t + 3600_000,
            refreshToken: REFRESH_TOKEN,
            user: { email: "user@example.com", name: "User", picture: "" },
          },
        },
        clock.t,
        deps.secrets,
      );
      const id = integration === undefined
        ? (recipe === "gmail-importer" ? "gmail" : "gcal")
        : integration;
      if (id !== null) await registerCharm(kv, id, ref, clock.t);
      return ref;
    },
    run(ref, integration, overrides = {}) {
      const slot = Math.floor(clock.t / 60_000) * 60_000;
      const base = integration === null
        ? manualRunMessageFor(ref, slot)
        : runMessageFor(ref, slot, { integration });
      const message = {
        ...base,
        enqueuedAt: clock.t,
        ...overrides,
      } as RunMessage;
      return runCharm(deps, message);
    },
    async argument(ref) {
      // As a run sees it: secret fields decrypted.
      return await decodeCell(
        deps.secrets,
        deps.recipes.get(
          (await kv.get<{ recipe: string }>(charmKey(ref))).value!.recipe,
        )!,
        ref,
        "argument",
        (await kv.get(cellKey(ref, "argument"))).value,
      );
    },
    async result(ref) {
      return (await kv.get(cellKey(ref, "result"))).value;
    },
    async state(ref) {
      return (await kv.get<CharmState>(charmStateKey(ref))).value!;
    },
    async [Symbol.asyncDispose]() {
      await fake[Symbol.asyncDispose]();
      kv.close();
    },
  };
}

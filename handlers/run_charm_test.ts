import assert from "node:assert/strict";
import { z } from "zod";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import {
  type AnyRecipe,
  defineRecipe,
  type RunContext,
} from "../charm/recipe.ts";
import { RECIPES } from "../recipes/mod.ts";
import { replaceCharmArgument } from "../store/charm_argument.ts";
import { createCharm, setCharmDisabled } from "../store/charms.ts";
import {
  cellKey,
  charmLeaseKey,
  charmStateKey,
  runKey,
} from "../store/keys.ts";
import { countRecentRuns } from "../store/recent_runs.ts";
import { readServiceState } from "../store/service_state.ts";
import {
  deferred,
  makeTestDeps,
  manualTimers,
  recordingQueue,
  runMessageFor,
  SPACE,
  type TestDepsOptions,
  waitFor,
} from "../test/test_deps.ts";
import { startWebhookReceiver } from "../test/webhook_receiver.ts";
import { directDelivery } from "../queue/queue.ts";
import { dispatch, prefetchMessages } from "./dispatch.ts";
import type { RunMessage } from "./messages.ts";
import {
  type Lease,
  MAX_ARGUMENT_RESTARTS,
  retryDelayMs,
  runCharm,
  type RunRecord,
} from "./run_charm.ts";
import { RetryAfterError } from "../lib/errors.ts";

const SLOT = Date.UTC(2026, 10, 28, 12, 0);

function runMessage(
  ref: CharmRef,
  overrides: Partial<RunMessage> = {},
): RunMessage {
  return runMessageFor(ref, SLOT, overrides);
}

async function setup(
  options: TestDepsOptions & { extraRecipes?: AnyRecipe[] } = {},
) {
  const { extraRecipes = [], ...rest } = options;
  let clock = SLOT;
  const recipes = new Map(RECIPES);
  for (const recipe of extraRecipes) recipes.set(recipe.name, recipe);
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const deps = await makeTestDeps({
    kv,
    queue,
    recipes,
    now: () => clock,
    ...rest,
  });
  return {
    deps,
    queue,
    advance: (ms: number) => (clock += ms),
    setClock: (ms: number) => (clock = ms),
    async create(
      recipe: string,
      argument: unknown,
      charmId = "c1",
    ): Promise<CharmRef> {
      const ref = { space: SPACE, charmId };
      await createCharm(kv, ref, recipes.get(recipe)!, argument, clock);
      return ref;
    },
    async state(ref: CharmRef) {
      return (await kv.get<CharmState>(charmStateKey(ref))).value!;
    },
    async result(ref: CharmRef) {
      return (await kv.get(cellKey(ref, "result"))).value;
    },
    async record(ref: CharmRef, run = `manual:${SLOT}`) {
      return (await kv.get<RunRecord>(runKey(ref, run))).value;
    },
  };
}

Deno.test("runCharm() runs a counter charm and records success", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("counter", {});
  assert.equal(await runCharm(t.deps, runMessage(ref)), "succeeded");
  assert.deepEqual(await t.result(ref), {
    count: 1,
    lastRunAt: SLOT,
    lastSlot: SLOT,
  });
  const state = await t.state(ref);
  assert.equal(state.totalSuccesses, 1);
  assert.equal(state.totalExecutions, 1);
  assert.equal(state.consecutiveFailures, 0);
  assert.equal(state.lastExecuted, SLOT);
  assert.equal((await t.record(ref))?.state, "succeeded");
  assert.equal((await t.deps.kv.get(charmLeaseKey(ref))).value, null);
  const service = await readServiceState(t.deps.kv);
  assert.equal(service.totalSuccesses, 1);
  assert.equal(service.totalCharmsProcessed, 1);
  // The dashboard's last-hour count, summed in the same commit.
  assert.deepEqual(await countRecentRuns(t.deps.kv, SLOT - 3_600_000), {
    succeeded: 1,
    failed: 0,
  });
});

Deno.test("runCharm() runs a redelivered message once", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("counter", {});
  assert.equal(await runCharm(t.deps, runMessage(ref)), "succeeded");
  assert.equal(await runCharm(t.deps, runMessage(ref)), "duplicate");
  assert.equal((await t.result(ref) as { count: number }).count, 1);
  assert.equal((await t.state(ref)).totalExecutions, 1);
});

Deno.test("runCharm() runs two concurrent deliveries of one message once", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("counter", {});
  const outcomes = await Promise.all([
    runCharm(t.deps, runMessage(ref)),
    runCharm(t.deps, runMessage(ref)),
  ]);
  assert.deepEqual(
    outcomes.filter((o) => o === "succeeded").length,
    1,
    String(outcomes),
  );
  assert.equal((await t.result(ref) as { count: number }).count, 1);
  // The loser either saw the finished run or deferred itself behind the lease;
  // a deferred copy, delivered later, is then a duplicate.
  for (const { message } of t.queue.sent) {
    assert.equal(await runCharm(t.deps, message), "duplicate");
  }
  assert.equal((await t.result(ref) as { count: number }).count, 1);
});

Deno.test("runCharm() counts a slot retried three times as one failure", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/fail", { status: 500 });
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/fail` });
  const outcomes = [await runCharm(t.deps, runMessage(ref))];
  const delays: number[] = [];
  while (t.queue.sent.length > 0) {
    const { message, delayMs } = t.queue.sent.shift()!;
    delays.push(delayMs);
    outcomes.push(await runCharm(t.deps, message));
  }
  assert.deepEqual(outcomes, ["retrying", "retrying", "retrying", "failed"]);
  // Exponential from 1 s, at the injected random()'s 0.5 jitter.
  assert.deepEqual(delays, [750, 1_500, 3_000]);
  assert.deepEqual(receiver.calls.map((c) => c.body.attempt), [1, 2, 3, 4]);
  const state = await t.state(ref);
  assert.equal(state.consecutiveFailures, 1);
  assert.equal(state.totalFailures, 1);
  assert.equal(state.totalAttempts, 4);
  assert.equal(state.totalExecutions, 1);
  assert.match(state.lastError ?? "", /replied 500/);
  assert.equal((await readServiceState(t.deps.kv)).totalFailures, 1);
  assert.equal((await t.record(ref))?.state, "failed");
  // A stale redelivery of an earlier attempt changes nothing.
  assert.equal(
    await runCharm(t.deps, runMessage(ref, { attempt: 2 })),
    "duplicate",
  );
  assert.equal(receiver.calls.length, 4);
});

Deno.test("runCharm() fails a non-retriable error at once", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/bad", { status: 400 });
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/bad` });
  assert.equal(await runCharm(t.deps, runMessage(ref)), "failed");
  assert.equal(t.queue.sent.length, 0);
  assert.match(
    (await t.state(ref)).lastError ?? "",
    /NonRetriableError: .*replied 400/,
  );
  assert.deepEqual(await countRecentRuns(t.deps.kv, SLOT - 3_600_000), {
    succeeded: 0,
    failed: 1,
  });
});

Deno.test("runCharm() honours Retry-After from the handler", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/busy", { status: 429, headers: { "retry-after": "7" } });
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/busy` });
  assert.equal(await runCharm(t.deps, runMessage(ref)), "retrying");
  assert.equal(t.queue.sent[0]?.delayMs, 7_000);
  assert.equal((await t.record(ref))?.retryAt, SLOT + 7_000);
});

Deno.test("runCharm() disables a charm after --failures failed slots; success resets", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/x", { status: 503 });
  const t = await setup({
    policy: { maxRetries: 0, maxConsecutiveFailures: 3 },
  });
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/x` });
  assert.equal(
    await runCharm(t.deps, runMessage(ref, { slot: SLOT })),
    "failed",
  );
  receiver.reply("/x", { status: 200, body: { result: 42 } });
  assert.equal(
    await runCharm(t.deps, runMessage(ref, { slot: SLOT + 60_000 })),
    "succeeded",
  );
  assert.equal((await t.state(ref)).consecutiveFailures, 0);
  assert.equal((await t.result(ref) as { result: unknown }).result, 42);
  receiver.reply("/x", { status: 503 });
  for (let i = 2; i <= 4; i++) {
    assert.equal(
      await runCharm(t.deps, runMessage(ref, { slot: SLOT + i * 60_000 })),
      "failed",
    );
  }
  const state = await t.state(ref);
  assert.equal(state.disabled, true);
  assert.equal(state.consecutiveFailures, 3);
  assert.match(state.disabledReason ?? "", /3 consecutive failures/);
  assert.equal((await readServiceState(t.deps.kv)).charms.disabled, 1);
  const calls = receiver.calls.length;
  assert.equal(
    await runCharm(t.deps, runMessage(ref, { slot: SLOT + 5 * 60_000 })),
    "skipped",
  );
  assert.equal(receiver.calls.length, calls);
});

Deno.test("runCharm() says one failure in the singular when --failures is 1", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/x", { status: 503 });
  const t = await setup({
    policy: { maxRetries: 0, maxConsecutiveFailures: 1 },
  });
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/x` });
  assert.equal(
    await runCharm(t.deps, runMessage(ref, { slot: SLOT })),
    "failed",
  );
  const state = await t.state(ref);
  assert.equal(state.disabled, true);
  assert.match(state.disabledReason ?? "", /^1 consecutive failure; last: /);
});

const hangRecipe = defineRecipe({
  name: "test-hang",
  description: "writes its result, then waits until aborted",
  argumentSchema: z.object({}),
  resultSchema: z.object({ touched: z.boolean() }),
  initialResult: () => ({ touched: false }),
  handlers: {
    bgUpdater(ctx) {
      ctx.result.set({ touched: true });
      started.resolve();
      return new Promise((_, reject) => {
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
      });
    },
  },
});
let started = deferred();

Deno.test("runCharm() writes nothing for a run that times out", async () => {
  started = deferred();
  const timers = manualTimers();
  const t = await setup({
    extraRecipes: [hangRecipe],
    timers,
    policy: { maxRetries: 0 },
  });
  await using _deps = t.deps;
  const ref = await t.create("test-hang", {});
  const outcome = runCharm(t.deps, runMessage(ref));
  await started.promise;
  t.advance(30_000);
  timers.fireAll();
  assert.equal(await outcome, "failed");
  assert.deepEqual(await t.result(ref), { touched: false });
  assert.match(
    (await t.state(ref)).lastError ?? "",
    /TimeoutError: Run timed out after 30000 ms/,
  );
  assert.equal((await t.deps.kv.get(charmLeaseKey(ref))).value, null);
});

let capturedCtx: RunContext<unknown, { n: number }> | null = null;
const ignoreAbortRecipe = defineRecipe({
  name: "test-ignore-abort",
  description: "never settles and ignores its signal",
  argumentSchema: z.object({}),
  resultSchema: z.object({ n: z.number() }),
  initialResult: () => ({ n: 0 }),
  handlers: {
    bgUpdater(ctx) {
      capturedCtx = ctx;
      started.resolve();
      return new Promise(() => {});
    },
  },
});

Deno.test("runCharm() times out a handler that ignores its signal and refuses late writes", async () => {
  started = deferred();
  const timers = manualTimers();
  const t = await setup({
    extraRecipes: [ignoreAbortRecipe],
    timers,
    policy: { maxRetries: 1 },
  });
  await using _deps = t.deps;
  const ref = await t.create("test-ignore-abort", {});
  const outcome = runCharm(t.deps, runMessage(ref));
  await started.promise;
  timers.fireAll();
  assert.equal(await outcome, "retrying");
  assert.equal(capturedCtx?.signal.aborted, true);
  assert.throws(() => capturedCtx?.result.set({ n: 99 }), /run has ended/);
  assert.deepEqual(await t.result(ref), { n: 0 });
  assert.equal(t.deps.semaphore.inUse, 0);
});

const badOutputRecipe = defineRecipe({
  name: "test-bad-output",
  description: "writes an invalid or oversized result",
  argumentSchema: z.object({
    mode: z.enum(["invalid", "huge", "throw-string", "many-numbers"]),
  }),
  resultSchema: z.object({
    text: z.string(),
    numbers: z.array(z.number()).optional(),
  }),
  initialResult: () => ({ text: "initial" }),
  handlers: {
    bgUpdater(ctx) {
      const mode = ctx.argument.get().mode;
      if (mode === "throw-string") return Promise.reject("plain string");
      ctx.result.set(
        mode === "invalid"
          ? { text: 5 } as unknown as { text: string }
          : mode === "many-numbers"
          // About 60 KB of JSON, over 64 KiB as KV stores it.
          ? {
            text: "",
            numbers: Array.from({ length: 15_000 }, () => 0.5),
          } as { text: string }
          : { text: "x".repeat(70 * 1024) },
      );
      return Promise.resolve();
    },
  },
});

Deno.test("runCharm() rejects invalid or oversized recipe output without writing", async (t) => {
  for (
    const [mode, expected] of [
      ["invalid", /wrote an invalid result\.text/],
      ["huge", /byte result cell; the limit is 61440 bytes/],
      ["many-numbers", /byte result cell; the limit is 61440 bytes/],
      ["throw-string", /Error: plain string/],
    ] as const
  ) {
    await t.step(mode, async () => {
      const s = await setup({
        extraRecipes: [badOutputRecipe],
        policy: { maxRetries: 0 },
      });
      await using _deps = s.deps;
      const ref = await s.create("test-bad-output", { mode });
      assert.equal(await runCharm(s.deps, runMessage(ref)), "failed");
      assert.deepEqual(await s.result(ref), { text: "initial" });
      assert.match((await s.state(ref)).lastError ?? "", expected);
    });
  }
});

Deno.test("runCharm() defers while another run holds the charm, and recovers a crashed run", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("counter", {});
  // A crashed process left its lease and a `running` record behind.
  const crashed: Lease = {
    run: `manual:${SLOT}`,
    attempt: 1,
    owner: "dead-process",
    expiresAt: SLOT + 35_000,
  };
  await t.deps.kv.set(charmLeaseKey(ref), crashed);
  assert.equal(await runCharm(t.deps, runMessage(ref)), "deferred");
  assert.equal(t.queue.sent.length, 1);
  assert.ok(t.queue.sent[0]!.delayMs >= 35_000);
  assert.equal((await t.result(ref) as { count: number }).count, 0);
  // Another slot waits too, polling sooner.
  assert.equal(
    await runCharm(t.deps, runMessage(ref, { slot: SLOT + 60_000 })),
    "deferred",
  );
  assert.ok(t.queue.sent[1]!.delayMs <= 1_000);
  // Once the lease has expired, the redelivered message runs.
  t.advance(36_000);
  assert.equal(await runCharm(t.deps, t.queue.sent[0]!.message), "succeeded");
  assert.equal((await t.result(ref) as { count: number }).count, 1);
});

Deno.test("runCharm() reads again, not defers, when the lease its early read saw is gone", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("counter", {});
  const other: Lease = {
    run: `manual:${SLOT - 60_000}`,
    attempt: 1,
    owner: "another-process",
    expiresAt: SLOT + 35_000,
  };
  await t.deps.kv.set(charmLeaseKey(ref), other);
  // A retry reads the lease; the kv driver read it when it claimed the job.
  const message = runMessage(ref, { attempt: 2 });
  const [early] = prefetchMessages(t.deps, [message]);
  await early!.read;
  // The other run finishes before this delivery starts.
  await t.deps.kv.delete(charmLeaseKey(ref));
  const delivery = { ...directDelivery(t.deps.kv), prefetched: early };
  // (The deferral it began is not committed: its check of the lease fails.)
  assert.equal(await dispatch(t.deps, message, delivery), "succeeded");
  assert.equal((await t.result(ref) as { count: number }).count, 1);
  assert.equal((await t.record(ref))?.state, "succeeded");
});

Deno.test("runCharm() dead-letters a run of a charm that does not exist", async () => {
  const t = await setup();
  await using _deps = t.deps;
  const outcome = await runCharm(
    t.deps,
    runMessage({ space: SPACE, charmId: "ghost" }),
  );
  assert.equal(outcome, "dead-lettered");
  assert.equal((await readServiceState(t.deps.kv)).deadLetters, 1);
});

Deno.test("runCharm() keeps at most --max-concurrent handlers running", async () => {
  const gate = deferred();
  let running = 0;
  let peak = 0;
  const slowRecipe = defineRecipe({
    name: "test-slow",
    description: "waits on a gate",
    argumentSchema: z.object({}),
    resultSchema: z.object({}),
    initialResult: () => ({}),
    handlers: {
      async bgUpdater() {
        running++;
        peak = Math.max(peak, running);
        await gate.promise;
        running--;
      },
    },
  });
  const { Semaphore } = await import("../lib/semaphore.ts");
  const t = await setup({
    extraRecipes: [slowRecipe],
    semaphore: new Semaphore(2),
  });
  await using _deps = t.deps;
  const refs = [];
  for (let i = 0; i < 5; i++) {
    refs.push(await t.create("test-slow", {}, `s${i}`));
  }
  const runs = refs.map((ref) => runCharm(t.deps, runMessage(ref)));
  // Wait (bounded) until two handlers run, then check no third started.
  for (let i = 0; i < 1000 && running < 2; i++) {
    await new Promise((r) => setTimeout(r, 0));
  }
  assert.equal(running, 2);
  assert.equal(t.deps.semaphore.waiting, 3);
  gate.resolve();
  assert.deepEqual(await Promise.all(runs), Array(5).fill("succeeded"));
  assert.equal(peak, 2);
});

Deno.test("retryDelayMs() backs off exponentially with jitter, capped", () => {
  const policy = { retryBaseDelayMs: 1_000, retryMaxDelayMs: 10_000 };
  const error = new Error("x");
  assert.equal(retryDelayMs(error, 1, policy, () => 0), 500);
  assert.equal(retryDelayMs(error, 1, policy, () => 0.999999), 1_000);
  assert.equal(retryDelayMs(error, 3, policy, () => 0.999999), 4_000);
  assert.equal(retryDelayMs(error, 10, policy, () => 0.999999), 10_000);
  assert.equal(
    retryDelayMs(new RetryAfterError("busy", 42_000), 1, policy, () => 0),
    42_000,
  );
});

Deno.test("runCharm() runs a retry racing the next slot once each, never overlapping", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/x", { status: 200, body: { result: "ok" }, delayMs: 20 });
  const t = await setup();
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/x` });
  // Slot S failed once (its retry is attempt 2); slot S+1 comes due at once.
  const retry = runMessage(ref, { slot: SLOT, attempt: 2 });
  const next = runMessage(ref, { slot: SLOT + 60_000 });
  const outcomes = await Promise.all([
    runCharm(t.deps, retry),
    runCharm(t.deps, next),
  ]);
  assert.ok(outcomes.includes("succeeded"), String(outcomes));
  // Whichever lost the lease was deferred; deliver it now, as the queue would.
  for (const { message } of t.queue.sent.splice(0)) {
    t.advance(6_000);
    assert.equal(await runCharm(t.deps, message), "succeeded");
  }
  const calls = receiver.callsTo("/x").map((c) =>
    `${c.body.slot}#${c.body.attempt}`
  ).sort();
  assert.deepEqual(calls, [`${SLOT}#2`, `${SLOT + 60_000}#1`]);
  const state = await t.state(ref);
  assert.equal(state.totalSuccesses, 2);
  assert.equal((await t.result(ref) as { calls: number }).calls, 2);
  // Both deliveries again: duplicates, no new effect.
  assert.equal(await runCharm(t.deps, retry), "duplicate");
  assert.equal(await runCharm(t.deps, next), "duplicate");
  assert.equal(receiver.callsTo("/x").length, 2);
});

Deno.test("runCharm() fails a webhook whose reply is larger than a cell, writing nothing", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/huge", {
    status: 200,
    body: { result: "x".repeat(70 * 1024) },
  });
  const t = await setup({ policy: { maxRetries: 0 } });
  await using _deps = t.deps;
  const ref = await t.create("webhook", { url: `${receiver.url}/huge` });
  const before = await t.result(ref);
  assert.equal(await runCharm(t.deps, runMessage(ref)), "failed");
  assert.match(
    (await t.state(ref)).lastError ?? "",
    /replied with more than 61440 bytes/,
  );
  assert.deepEqual(await t.result(ref), before);
});

Deno.test("runCharm() defers, not skips, a duplicate of a run executing when its charm is disabled", async () => {
  const gate = deferred();
  let started = 0;
  const slow = defineRecipe({
    name: "test-slow",
    description: "waits on a gate, then counts",
    argumentSchema: z.object({}),
    resultSchema: z.object({ n: z.number() }),
    initialResult: () => ({ n: 0 }),
    handlers: {
      async bgUpdater(ctx) {
        started++;
        await gate.promise;
        ctx.result.set({ n: ctx.result.get().n + 1 });
      },
    },
  });
  const t = await setup({ extraRecipes: [slow] });
  await using _deps = t.deps;
  const ref = await t.create(slow.name, {});
  const message = runMessage(ref);
  const first = runCharm(t.deps, message);
  await waitFor("the run to start", () => started === 1);
  await setCharmDisabled(t.deps.kv, ref, true, "by hand");
  // A duplicate delivery meanwhile: the run is not over, so it is not skipped.
  assert.equal(await runCharm(t.deps, message), "deferred");
  gate.resolve();
  assert.equal(await first, "succeeded");
  assert.equal((await t.record(ref))?.state, "succeeded");
  assert.deepEqual(await t.result(ref), { n: 1 });
  // The deferred copy, delivered later, is a duplicate.
  for (const { message: copy } of t.queue.sent) {
    assert.equal(await runCharm(t.deps, copy), "duplicate");
  }
});

/**
 * A recipe that keeps a cursor in its argument, as a sync recipe might:
 * each execution reads it, runs `during(execution)` (1-based), then writes it
 * advanced and the result. `seen` lists the cursors it started from.
 */
function argumentWriter(
  name: string,
  during: (execution: number) => Promise<void>,
) {
  const seen: number[] = [];
  const recipe = defineRecipe({
    name,
    description: "advances a cursor kept in its argument",
    argumentSchema: z.object({ from: z.number() }),
    resultSchema: z.object({ last: z.number() }),
    initialResult: () => ({ last: -1 }),
    handlers: {
      async bgUpdater(ctx) {
        const { from } = ctx.argument.get();
        seen.push(from);
        await during(seen.length);
        ctx.argument.set({ from: from + 1 });
        ctx.result.set({ last: from });
      },
    },
  });
  return { recipe, seen };
}

Deno.test("runCharm() never overwrites an argument replaced while the run wrote its own", async () => {
  const gate = deferred();
  const { recipe: cursor, seen } = argumentWriter(
    "test-argument-writer",
    (execution) => execution === 1 ? gate.promise : Promise.resolve(),
  );
  // The last attempt, and one failure would disable: the user's edit must
  // cost neither.
  const t = await setup({
    extraRecipes: [cursor],
    policy: { maxRetries: 0, maxConsecutiveFailures: 1 },
  });
  await using _deps = t.deps;
  const ref = await t.create(cursor.name, { from: 0 });
  const running = runCharm(t.deps, runMessage(ref));
  await waitFor("the run to start", () => seen.length === 1);
  // The user replaces the argument mid-run.
  await replaceCharmArgument(t.deps.kv, t.deps.recipes, ref, { from: 100 });
  gate.resolve();

  // The run's writes, derived from the old argument, are dropped, and the
  // same attempt goes again; nothing counts against the charm.
  assert.equal(await running, "restarted");
  const argument = await t.deps.kv.get(cellKey(ref, "argument"));
  assert.deepEqual(argument.value, { from: 100 });
  assert.deepEqual(await t.result(ref), { last: -1 });
  assert.equal((await t.deps.kv.get(charmLeaseKey(ref))).value, null);
  const state = await t.state(ref);
  assert.equal(state.disabled, false);
  assert.equal(state.consecutiveFailures, 0);
  assert.equal(state.totalFailures, 0);
  assert.equal(state.lastError, null);

  // The copy runs on the new argument.
  assert.equal(t.queue.sent.length, 1);
  const copy = t.queue.sent[0]!.message as RunMessage;
  assert.equal(copy.attempt, 1);
  assert.equal(await runCharm(t.deps, copy), "succeeded");
  assert.deepEqual(seen, [0, 100]);
  assert.deepEqual(
    (await t.deps.kv.get(cellKey(ref, "argument"))).value,
    { from: 101 },
  );
  assert.deepEqual(await t.result(ref), { last: 100 });
  assert.equal((await t.record(ref))?.state, "succeeded");
});

Deno.test("runCharm() lets a handler replace its ctx.logger", async () => {
  const scoped = defineRecipe({
    name: "test-scoped-logger",
    description: "narrows its logger, then writes its result",
    argumentSchema: z.object({}),
    resultSchema: z.object({ done: z.boolean() }),
    initialResult: () => ({ done: false }),
    handlers: {
      // deno-lint-ignore require-await
      async bgUpdater(ctx) {
        ctx.logger = ctx.logger.with({ step: "sync" });
        ctx.logger.debug("narrowed");
        ctx.result.set({ done: true });
      },
    },
  });
  const t = await setup({ extraRecipes: [scoped] });
  await using _deps = t.deps;
  const ref = await t.create(scoped.name, {});
  assert.equal(await runCharm(t.deps, runMessage(ref)), "succeeded");
  assert.deepEqual(await t.result(ref), { done: true });
});

Deno.test("runCharm() bounds the restarts of a run whose argument keeps being replaced", async () => {
  let replace = (_n: number) => Promise.resolve();
  // An outside writer replaces the argument during every run.
  const { recipe: writer, seen } = argumentWriter(
    "test-argument-writer-busy",
    (execution) => replace(execution),
  );
  const t = await setup({
    extraRecipes: [writer],
    policy: { maxRetries: 1, maxConsecutiveFailures: 100 },
  });
  await using _deps = t.deps;
  const ref = await t.create(writer.name, { from: 0 });
  replace = async (n) => {
    await replaceCharmArgument(t.deps.kv, t.deps.recipes, ref, {
      from: 1000 * n,
    });
  };

  const outcomes: string[] = [];
  let message = runMessage(ref);
  for (let i = 0; i < 20; i++) {
    const before = t.queue.sent.length;
    outcomes.push(await runCharm(t.deps, message));
    if (t.queue.sent.length === before) break;
    message = t.queue.sent.at(-1)!.message as RunMessage;
  }
  // Each attempt restarts MAX_ARGUMENT_RESTARTS times, then fails; the
  // second attempt is the last, so the slot ends.
  const restarts = Array(MAX_ARGUMENT_RESTARTS).fill("restarted");
  assert.deepEqual(outcomes, [
    ...restarts,
    "retrying",
    ...restarts,
    "failed",
  ]);
  const record = await t.record(ref);
  assert.equal(record?.state, "failed");
  assert.match(record?.error ?? "", /argument was replaced during each of 4/);
  assert.equal((await t.deps.kv.get(charmLeaseKey(ref))).value, null);
  // The outside writer's last value stands.
  assert.deepEqual(
    (await t.deps.kv.get(cellKey(ref, "argument"))).value,
    { from: 1000 * seen.length },
  );
});

Deno.test("runCharm() does not restart a run whose argument was written again unchanged", async () => {
  const gate = deferred();
  const { recipe: writer, seen } = argumentWriter(
    "test-argument-writer-same",
    () => gate.promise,
  );
  const t = await setup({ extraRecipes: [writer] });
  await using _deps = t.deps;
  const ref = await t.create(writer.name, { from: 7 });
  const running = runCharm(t.deps, runMessage(ref));
  await waitFor("the run to start", () => seen.length === 1);
  // A client pushes the same settings again mid-run.
  await replaceCharmArgument(t.deps.kv, t.deps.recipes, ref, { from: 7 });
  gate.resolve();
  assert.equal(await running, "succeeded");
  assert.deepEqual(
    (await t.deps.kv.get(cellKey(ref, "argument"))).value,
    { from: 8 },
  );
  assert.deepEqual(await t.result(ref), { last: 7 });
});

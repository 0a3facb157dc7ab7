/**
 * Upstream faults: the `webhook` recipe against a loopback receiver that
 * fails on purpose (5xx bursts, 429 with and without `Retry-After`, slow
 * replies past the timeout, dropped connections, an unreachable host,
 * malformed JSON, 4xx). Each case checks the retries the run handler makes
 * (the delays it enqueues, the run record's `retryAt`) and the final state:
 * charm state, cells, run record, service counters, lease.
 *
 * Retries are delivered by hand, as the queue would, with the clock moved
 * forward by each recorded delay: the delays are checked as values, never
 * waited for. (The Google integrations' faults are covered against
 * `test/fake_google.ts` by their own tests.)
 */
import assert from "node:assert/strict";
import { MAX_CELL_BYTES } from "../store/kv_util.ts";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import type { RunMessage } from "../handlers/messages.ts";
import {
  runCharm,
  type RunOutcome,
  type RunRecord,
} from "../handlers/run_charm.ts";
import { RECIPES } from "../recipes/mod.ts";
import type { ServiceDeps, Timers } from "../service/deps.ts";
import { createCharm } from "../store/charms.ts";
import {
  cellKey,
  charmLeaseKey,
  charmStateKey,
  runKey,
} from "../store/keys.ts";
import { readServiceState } from "../store/service_state.ts";
import {
  makeTestDeps,
  manualTimers,
  recordingQueue,
  runMessageFor,
  SPACE,
  waitFor,
} from "./test_deps.ts";
import { startWebhookReceiver } from "./webhook_receiver.ts";

const SLOT = Date.UTC(2026, 10, 28, 12, 0);
const RUN = `manual:${SLOT}`;
const INITIAL_RESULT = {
  calls: 0,
  lastStatus: null,
  lastCalledAt: null,
  result: null,
};

/** One delivery of the slot and what it left behind. */
interface Step {
  outcome: RunOutcome;
  /** The delay of the retry it enqueued, if any. */
  delayMs: number | null;
  record: RunRecord | null;
  result: unknown;
}

interface Setup extends AsyncDisposable {
  deps: ServiceDeps;
  ref: CharmRef;
  clock: { t: number };
  state(): Promise<CharmState>;
  result(): Promise<unknown>;
  record(): Promise<RunRecord | null>;
  /**
   * Delivers the slot's first attempt, then each retry it enqueues (moving
   * the clock by the retry's delay first), until no retry is left.
   * `deliver` runs one delivery (default: `runCharm`).
   */
  runSlot(deliver?: (message: RunMessage) => Promise<RunOutcome>): Promise<
    Step[]
  >;
  /** Checks the lease is released and the run record final. */
  assertSettled(state: RunRecord["state"]): Promise<void>;
}

async function setup(
  url: string,
  options: { maxRetries?: number; retryMaxDelayMs?: number; timers?: Timers } =
    {},
): Promise<Setup> {
  const clock = { t: SLOT };
  const kv = await Deno.openKv(":memory:");
  const queue = recordingQueue(kv);
  const deps = await makeTestDeps({
    kv,
    queue,
    now: () => clock.t,
    // Jitter at its midpoint: a backoff delay is 0.75 × base × 2^(n-1).
    random: () => 0.5,
    policy: {
      maxRetries: options.maxRetries ?? 3,
      retryBaseDelayMs: 1_000,
      retryMaxDelayMs: options.retryMaxDelayMs ?? 60_000,
      maxConsecutiveFailures: 100,
    },
    ...(options.timers ? { timers: options.timers } : {}),
  });
  const ref: CharmRef = { space: SPACE, charmId: "hook" };
  await createCharm(
    kv,
    ref,
    RECIPES.get("webhook")!,
    { url },
    clock.t,
  );
  const record = async () => (await kv.get<RunRecord>(runKey(ref, RUN))).value;
  const result = async () => (await kv.get(cellKey(ref, "result"))).value;
  return {
    deps,
    ref,
    clock,
    state: async () => (await kv.get<CharmState>(charmStateKey(ref))).value!,
    result,
    record,
    async runSlot(deliver = (message) => runCharm(deps, message)) {
      const steps: Step[] = [];
      let next: RunMessage | undefined = runMessageFor(ref, SLOT);
      while (next !== undefined) {
        assert.ok(steps.length < 20, "the slot never settles");
        const outcome = await deliver(next);
        const sent = queue.sent.shift();
        assert.equal(queue.sent.length, 0, "at most one retry per delivery");
        steps.push({
          outcome,
          delayMs: sent?.delayMs ?? null,
          record: await record(),
          result: await result(),
        });
        if (sent !== undefined) clock.t += sent.delayMs;
        next = sent?.message;
      }
      return steps;
    },
    async assertSettled(state) {
      assert.equal((await record())?.state, state);
      assert.equal((await kv.get(charmLeaseKey(ref))).value, null);
    },
    [Symbol.asyncDispose]: () => deps[Symbol.asyncDispose](),
  };
}

Deno.test("webhook: a 5xx burst is retried with backoff and the slot succeeds once", async () => {
  await using receiver = startWebhookReceiver();
  receiver.script("/hook", [{ status: 500 }, { status: 502 }, {
    status: 503,
    body: { error: "busy" },
  }]);
  receiver.reply("/hook", { status: 200, body: { result: "fine" } });
  await using t = await setup(`${receiver.url}/hook`);
  const steps = await t.runSlot();

  assert.deepEqual(steps.map((s) => s.outcome), [
    "retrying",
    "retrying",
    "retrying",
    "succeeded",
  ]);
  // Exponential: 1 s × 2^(n-1), at the jitter's midpoint (× 0.75).
  assert.deepEqual(steps.map((s) => s.delayMs), [750, 1_500, 3_000, null]);
  assert.deepEqual(steps.map((s) => s.record?.error ?? null), [
    "Error: Webhook " + receiver.url + " replied 500",
    "Error: Webhook " + receiver.url + " replied 502",
    "Error: Webhook " + receiver.url + " replied 503",
    null,
  ]);
  // Failed attempts leave the result cell alone.
  for (const step of steps.slice(0, 3)) {
    assert.deepEqual(step.result, INITIAL_RESULT);
  }
  assert.deepEqual(receiver.calls.map((c) => c.body.attempt), [1, 2, 3, 4]);
  assert.deepEqual(await t.result(), {
    calls: 1,
    lastStatus: 200,
    lastCalledAt: t.clock.t,
    result: "fine",
  });
  await t.assertSettled("succeeded");
  assert.equal((await t.record())?.attempt, 4);

  // One slot, no failure counted: retries are attempts, not failed slots.
  const state = await t.state();
  assert.equal(state.totalExecutions, 1);
  assert.equal(state.totalSuccesses, 1);
  assert.equal(state.totalFailures, 0);
  assert.equal(state.consecutiveFailures, 0);
  assert.equal(state.totalAttempts, 4);
  const service = await readServiceState(t.deps.kv);
  assert.deepEqual(
    [
      service.totalCharmsProcessed,
      service.totalSuccesses,
      service.totalFailures,
    ],
    [1, 1, 0],
  );
});

Deno.test("webhook: Retry-After (seconds or a date, on 429 or 503) sets the retry delay", async () => {
  await using receiver = startWebhookReceiver();
  const retryDate = new Date(SLOT + 3_000 + 12_000).toUTCString();
  receiver.script("/hook", [
    { status: 503, headers: { "retry-after": "3" } },
    { status: 429, headers: { "retry-after": retryDate } },
  ]);
  await using t = await setup(`${receiver.url}/hook`);
  const steps = await t.runSlot();

  assert.deepEqual(steps.map((s) => s.outcome), [
    "retrying",
    "retrying",
    "succeeded",
  ]);
  assert.deepEqual(steps.map((s) => s.delayMs), [3_000, 12_000, null]);
  // The run record says when the next attempt is due, by the service clock.
  assert.equal(steps[0]!.record?.retryAt, SLOT + 3_000);
  assert.equal(steps[1]!.record?.retryAt, SLOT + 3_000 + 12_000);
  assert.match(steps[1]!.record?.error ?? "", /^RetryAfterError: .*429/);
  await t.assertSettled("succeeded");
  assert.equal((await t.state()).totalFailures, 0);
});

Deno.test("webhook: 429 without Retry-After backs off exponentially, capped", async () => {
  await using receiver = startWebhookReceiver();
  receiver.script("/hook", Array(3).fill({ status: 429 }));
  await using t = await setup(`${receiver.url}/hook`, {
    retryMaxDelayMs: 2_000,
  });
  const steps = await t.runSlot();

  assert.deepEqual(steps.map((s) => s.outcome), [
    "retrying",
    "retrying",
    "retrying",
    "succeeded",
  ]);
  // 1 s, 2 s, then the 2 s cap, each × 0.75 jitter.
  assert.deepEqual(steps.map((s) => s.delayMs), [750, 1_500, 1_500, null]);
  assert.deepEqual(
    steps.slice(0, 3).map((s) => s.record?.retryAt),
    [SLOT + 750, SLOT + 2_250, SLOT + 3_750],
  );
  assert.match(steps[0]!.record?.error ?? "", /^Error: .*replied 429$/);
  await t.assertSettled("succeeded");
});

Deno.test("webhook: a reply slower than the timeout fails with TimeoutError and is retried", async () => {
  await using receiver = startWebhookReceiver();
  // Slower than any timeout: it answers only when the client gives up.
  receiver.script("/hook", [{ status: 200, hang: true }]);
  receiver.reply("/hook", { status: 200, body: { result: "on time" } });
  const timers = manualTimers();
  await using t = await setup(`${receiver.url}/hook`, { timers });
  const steps = await t.runSlot(async (message) => {
    if (message.attempt > 1) return await runCharm(t.deps, message);
    const outcome = runCharm(t.deps, message);
    // The request reached the receiver, which is sitting on it: time's up.
    await waitFor("the webhook call", () => receiver.calls.length === 1);
    timers.fireAll();
    return await outcome;
  });

  assert.deepEqual(steps.map((s) => s.outcome), ["retrying", "succeeded"]);
  assert.match(
    steps[0]!.record?.error ?? "",
    /^TimeoutError: Run timed out after 30000 ms$/,
  );
  assert.deepEqual(steps[0]!.result, INITIAL_RESULT);
  assert.equal(steps[0]!.delayMs, 750);
  assert.equal(
    ((await t.result()) as { result: unknown }).result,
    "on time",
  );
  await t.assertSettled("succeeded");
  // The timed-out attempt's timer fired; the successful one's was cleared.
  assert.equal(timers.pending(), 0);
});

Deno.test("webhook: a connection dropped mid-reply is retried", async () => {
  await using receiver = startWebhookReceiver();
  receiver.script("/hook", [{
    status: 200,
    body: { result: "never arrives whole" },
    drop: true,
  }]);
  receiver.reply("/hook", { status: 200, body: { result: "whole" } });
  await using t = await setup(`${receiver.url}/hook`);
  const steps = await t.runSlot();

  assert.deepEqual(steps.map((s) => s.outcome), ["retrying", "succeeded"]);
  // fetch reports a broken body as a TypeError (a network error).
  assert.match(steps[0]!.record?.error ?? "", /^TypeError: /);
  assert.deepEqual(steps[0]!.result, INITIAL_RESULT);
  assert.equal(((await t.result()) as { result: unknown }).result, "whole");
  await t.assertSettled("succeeded");
});

Deno.test("webhook: an unreachable upstream is retried, then fails the slot once", async () => {
  // A port that was just free: nothing listens there.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await using t = await setup(`http://127.0.0.1:${port}/hook?token=s3cret`, {
    maxRetries: 2,
  });
  const steps = await t.runSlot();

  assert.deepEqual(steps.map((s) => s.outcome), [
    "retrying",
    "retrying",
    "failed",
  ]);
  await t.assertSettled("failed");
  const state = await t.state();
  // Why, for the operator: the origin and the network's reason; never the
  // path or query.
  assert.match(
    state.lastError ?? "",
    new RegExp(
      `^Error: Cannot reach webhook http://127\\.0\\.0\\.1:${port}: .*refused`,
      "i",
    ),
  );
  assert.doesNotMatch(state.lastError ?? "", /s3cret|\/hook/);
  assert.equal(state.totalFailures, 1);
  assert.equal(state.consecutiveFailures, 1);
  assert.equal(state.totalAttempts, 3);
  assert.deepEqual(await t.result(), INITIAL_RESULT);
});

Deno.test("webhook: a reply larger than a cell fails the slot at once, storing nothing", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/hook", {
    status: 200,
    rawBody: JSON.stringify({ result: "x".repeat(MAX_CELL_BYTES) }),
  });
  await using t = await setup(`${receiver.url}/hook`, { maxRetries: 2 });
  const steps = await t.runSlot();

  // Not retried: the same reply would come back.
  assert.deepEqual(steps.map((s) => s.outcome), ["failed"]);
  await t.assertSettled("failed");
  const state = await t.state();
  assert.equal(
    state.lastError,
    `NonRetriableError: Webhook ${receiver.url} replied with more than ${MAX_CELL_BYTES} bytes`,
  );
  assert.deepEqual(await t.result(), INITIAL_RESULT);
});

Deno.test("webhook: a reply nested too deeply to check fails the slot at once, storing nothing", async () => {
  await using receiver = startWebhookReceiver();
  const depth = 25_000;
  receiver.reply("/hook", {
    status: 200,
    rawBody: `{"result":${"[".repeat(depth)}${"]".repeat(depth)}}`,
  });
  await using t = await setup(`${receiver.url}/hook`, { maxRetries: 2 });
  const steps = await t.runSlot();

  // Not retried: the same reply would come back.
  assert.deepEqual(steps.map((s) => s.outcome), ["failed"]);
  await t.assertSettled("failed");
  const state = await t.state();
  assert.match(
    state.lastError ?? "",
    /^NonRetriableError: .*nested too deeply/,
  );
  assert.deepEqual(await t.result(), INITIAL_RESULT);
});

Deno.test("webhook: a 2xx reply with malformed JSON fails with an error naming it", async () => {
  await using receiver = startWebhookReceiver();
  receiver.reply("/hook", { status: 200, rawBody: '{"result": [1, 2' });
  await using t = await setup(`${receiver.url}/hook`, { maxRetries: 1 });
  const steps = await t.runSlot();

  // Retried like any unexpected reply (a proxy may have cut it), then failed.
  assert.deepEqual(steps.map((s) => s.outcome), ["retrying", "failed"]);
  await t.assertSettled("failed");
  const state = await t.state();
  assert.equal(
    state.lastError,
    `Error: Webhook ${receiver.url} replied 200 with malformed JSON`,
  );
  assert.equal(state.totalFailures, 1);
  // Nothing of the reply was stored.
  assert.deepEqual(await t.result(), INITIAL_RESULT);
  const service = await readServiceState(t.deps.kv);
  assert.deepEqual(
    [service.totalSuccesses, service.totalFailures],
    [0, 1],
  );
});

Deno.test("webhook: a 4xx other than 408 and 429 fails at once; 408 is retried", async (t) => {
  for (const status of [400, 401, 404, 422]) {
    await t.step(`${status} is not retried`, async () => {
      await using receiver = startWebhookReceiver();
      receiver.reply("/hook", { status, body: { error: "no" } });
      await using s = await setup(`${receiver.url}/hook`);
      const steps = await s.runSlot();
      assert.deepEqual(steps.map((step) => step.outcome), ["failed"]);
      assert.equal(receiver.calls.length, 1);
      await s.assertSettled("failed");
      const state = await s.state();
      assert.equal(
        state.lastError,
        `NonRetriableError: Webhook ${receiver.url} replied ${status}`,
      );
      assert.equal(state.totalAttempts, 1);
      assert.deepEqual(await s.result(), INITIAL_RESULT);
    });
  }
  await t.step("408 is retried", async () => {
    await using receiver = startWebhookReceiver();
    receiver.script("/hook", [{ status: 408 }]);
    await using s = await setup(`${receiver.url}/hook`);
    const steps = await s.runSlot();
    assert.deepEqual(steps.map((step) => step.outcome), [
      "retrying",
      "succeeded",
    ]);
  });
});

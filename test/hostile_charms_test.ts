/**
 * Hung and hostile charms: in one service (real KV, the native queue
 * listening, a 200 ms run timeout), charms that never settle, ignore their
 * abort signal, throw non-Error values, write an oversized result or flood
 * the log run alongside plain counter charms on a 1 s interval. The timeouts
 * fire, failed runs write no cell, the counters run every slot without a
 * failure, the HTTP API answers all along, and every permit comes back.
 */
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { z } from "zod";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import { defineRecipe } from "../charm/recipe.ts";
import { loadConfig } from "../config/config.ts";
import { slotsInWindow, tickOf } from "../handlers/fanout.ts";
import type { RunRecord } from "../handlers/run_charm.ts";
import { createApp } from "../http/app.ts";
import { INTEGRATIONS } from "../integrations/manifest.ts";
import { memorySink } from "../lib/log.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { RECIPES } from "../recipes/mod.ts";
import { createService } from "../service/service.ts";
import { createCharm, registerCharm } from "../store/charms.ts";
import {
  cellKey,
  charmLeaseKey,
  charmStateKey,
  runKey,
} from "../store/keys.ts";
import { readServiceState } from "../store/service_state.ts";
import { SPACE, waitFor } from "./test_deps.ts";

const TIMEOUT_MS = 200;
const INTERVAL_MS = 1_000;
const COUNTERS = 8;
const FLOOD_LINES = 10_000;

const MODES = [
  "hang",
  "ignore-abort",
  "throw-null",
  "throw-number",
  "throw-object",
  "oversized",
  "flood",
] as const;
type Mode = typeof MODES[number];

/** Background work of handlers that ignore their signal, for the checks. */
const ignored = { started: 0, lateWritesRefused: 0 };

const hostileRecipe = defineRecipe({
  name: "test-hostile",
  description: "misbehaves as its argument says",
  argumentSchema: z.object({ mode: z.enum(MODES) }).strict(),
  resultSchema: z.object({ text: z.string() }),
  initialResult: () => ({ text: "initial" }),
  handlers: {
    async bgUpdater(ctx) {
      const { mode } = ctx.argument.get();
      if (mode === "flood") {
        // In chunks, yielding between them, as a chatty loop would.
        for (let i = 0; i < FLOOD_LINES; i++) {
          ctx.logger.info("Flood line {i} of {n}", { i, n: FLOOD_LINES });
          if (i % 1_000 === 999) await new Promise((r) => setTimeout(r, 0));
        }
        ctx.result.set({ text: "flooded" });
        return;
      }
      // Every failing mode writes first: none of it may reach KV.
      ctx.result.set({ text: "half-written" });
      switch (mode) {
        case "hang":
          return await new Promise<void>(() => {});
        case "ignore-abort": {
          ignored.started++;
          // Carries on past the timeout without looking at ctx.signal.
          await new Promise((r) => setTimeout(r, 3 * TIMEOUT_MS / 2));
          try {
            ctx.result.set({ text: "late" });
          } catch {
            ignored.lateWritesRefused++;
          }
          return;
        }
        case "throw-null":
          throw null;
        case "throw-number":
          throw 42;
        case "throw-object":
          throw { code: "E_HOSTILE" };
        case "oversized":
          ctx.result.set({ text: "x".repeat(70 * 1024) });
          return;
      }
    },
  },
});

const EXPECTED_ERROR: Record<Exclude<Mode, "flood">, RegExp> = {
  hang: /^TimeoutError: Run timed out after 200 ms$/,
  "ignore-abort": /^TimeoutError: Run timed out after 200 ms$/,
  "throw-null": /^Error: Non-error thrown: null$/,
  "throw-number": /^Error: Non-error thrown: 42$/,
  "throw-object": /^Error: Non-error thrown: \{"code":"E_HOSTILE"\}$/,
  oversized:
    /^NonRetriableError: Recipe "test-hostile" wrote a \d+-byte result cell; the limit is 61440 bytes$/,
};

Deno.test({
  name:
    "hostile charms time out and write nothing while counters keep their schedule and the API answers",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const sink = memorySink();
    await configure({
      reset: true,
      sinks: { memory: sink },
      loggers: [
        { category: ["bcs"], lowestLevel: "info", sinks: ["memory"] },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
      ],
    });
    // The service clock stands 56.5 s into a minute, held still until the
    // service has started (however slow the setup), then runs at real speed:
    // the startup fan-out covers exactly four 1 s slots and then stops.
    const start = tickOf(Date.now()) + 56_500;
    let base: number | null = null;
    const now = () => base === null ? start : start + (Date.now() - base);
    const slots = slotsInWindow(tickOf(start), start, INTERVAL_MS);
    assert.equal(slots.length, 4);

    const kv = await Deno.openKv(":memory:");
    const config = loadConfig([
      "--integration=manual",
      `--interval=${INTERVAL_MS / 1000}`,
      "--max-concurrent=8",
      "--max-retries=1",
      "--failures=1000",
    ], {
      KV_PATH: ":memory:",
      CHARM_EXECUTION_TIMEOUT_MS: String(TIMEOUT_MS),
      RETRY_BASE_DELAY_MS: "20",
      RETRY_MAX_DELAY_MS: "50",
    }, INTEGRATIONS.map((i) => i.id));
    const service = createService(config, {
      kv,
      queue: nativeQueue(kv),
      allIntegrations: INTEGRATIONS,
      recipes: new Map([...RECIPES, [hostileRecipe.name, hostileRecipe]]),
      env: {},
      now,
    });
    const app = createApp(service.deps, {
      adminToken: null,
      serviceDid: SPACE,
      exposed: false,
      version: "test",
      startedAt: start,
      healthMaxTickAgeMs: 180_000,
    });
    try {
      const counters: CharmRef[] = [];
      const hostile = new Map<Mode, CharmRef>();
      for (let i = 0; i < COUNTERS; i++) {
        const ref = { space: SPACE, charmId: `counter-${i}` };
        await createCharm(kv, ref, RECIPES.get("counter")!, {}, start);
        await registerCharm(kv, "manual", ref, start);
        counters.push(ref);
      }
      for (const mode of MODES) {
        const ref = { space: SPACE, charmId: `hostile-${mode}` };
        await createCharm(kv, ref, hostileRecipe, { mode }, start);
        await registerCharm(kv, "manual", ref, start);
        hostile.set(mode, ref);
      }
      const all = [...counters, ...hostile.values()];

      await service.start();
      base = Date.now();

      // Meanwhile, the API answers; count the answers given while handlers
      // (hostile ones among them) held permits.
      let answeredWhileBusy = 0;
      const settled = async () => {
        for (const ref of all) {
          for (const slot of slots) {
            const record = (await kv.get<RunRecord>(
              runKey(ref, `manual:${slot}`),
            )).value;
            if (record?.state !== "succeeded" && record?.state !== "failed") {
              return false;
            }
          }
        }
        return true;
      };
      await waitFor(
        "every slot of every charm to finish",
        async () => {
          const busy = service.deps.semaphore.inUse > 0;
          const health = await app.request("/health");
          assert.equal(health.status, 200);
          assert.equal((await health.json()).ok, true);
          const status = await app.request("/api/status");
          assert.equal(status.status, 200);
          assert.equal(
            typeof (await status.json()).totalCharmsProcessed,
            "number",
          );
          if (busy) answeredWhileBusy++;
          return await settled();
        },
        30_000,
        20,
      );
      assert.ok(answeredWhileBusy > 0, "the API answered while runs ran");
      // The handlers that ignored their signal finish in the background;
      // their late writes are refused.
      await waitFor(
        "the ignored-signal handlers to give up",
        () =>
          ignored.started === 2 * slots.length &&
          ignored.lateWritesRefused === ignored.started,
        10_000,
      );

      // The counters ran every slot, once, without a failure.
      for (const ref of counters) {
        const state = (await kv.get<CharmState>(charmStateKey(ref))).value!;
        assert.equal(state.totalSuccesses, slots.length, ref.charmId);
        assert.equal(state.totalFailures, 0, ref.charmId);
        assert.equal(state.totalAttempts, slots.length, ref.charmId);
        const result = (await kv.get<{ count: number; lastSlot: number }>(
          cellKey(ref, "result"),
        )).value!;
        assert.equal(result.count, slots.length, ref.charmId);
        assert.equal(result.lastSlot, slots.at(-1), ref.charmId);
      }

      // Each failing mode failed every slot with its error, wrote no cell.
      for (const [mode, pattern] of Object.entries(EXPECTED_ERROR)) {
        const ref = hostile.get(mode as Mode)!;
        const state = (await kv.get<CharmState>(charmStateKey(ref))).value!;
        assert.match(state.lastError ?? "", pattern, mode);
        assert.equal(state.totalFailures, slots.length, mode);
        assert.equal(state.totalSuccesses, 0, mode);
        assert.equal(state.disabled, false, mode);
        // Retried once, except what retrying cannot fix.
        assert.equal(
          state.totalAttempts,
          slots.length * (mode === "oversized" ? 1 : 2),
          mode,
        );
        for (const slot of slots) {
          const record = (await kv.get<RunRecord>(
            runKey(ref, `manual:${slot}`),
          )).value!;
          assert.equal(record.state, "failed", `${mode} @${slot}`);
          assert.match(record.error ?? "", pattern, `${mode} @${slot}`);
        }
        assert.deepEqual(
          (await kv.get(cellKey(ref, "result"))).value,
          { text: "initial" },
          mode,
        );
      }

      // The flood was logged in full, and its runs succeeded.
      const flood = hostile.get("flood")!;
      const floodState = (await kv.get<CharmState>(charmStateKey(flood)))
        .value!;
      assert.equal(floodState.totalSuccesses, slots.length);
      const floodLines = sink.records.filter((r: LogRecord) =>
        r.category.join(".") === "bcs.charm" &&
        r.properties.charm === `${SPACE}/${flood.charmId}`
      ).length;
      assert.equal(floodLines, FLOOD_LINES * slots.length);

      // Nothing left held: permits, leases.
      assert.equal(service.deps.semaphore.inUse, 0);
      assert.equal(service.deps.semaphore.waiting, 0);
      for (const ref of all) {
        assert.equal(
          (await kv.get(charmLeaseKey(ref))).value,
          null,
          ref.charmId,
        );
      }
      const totals = await readServiceState(kv);
      assert.equal(totals.totalCharmsProcessed, all.length * slots.length);
      assert.equal(
        totals.totalFailures,
        Object.keys(EXPECTED_ERROR).length * slots.length,
      );
    } finally {
      await service.shutdown();
      kv.close();
      await reset();
    }
  },
});

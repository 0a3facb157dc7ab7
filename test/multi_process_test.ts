/**
 * Three service processes share one KV file through the `kv` queue driver;
 * one is killed with SIGKILL mid-run. Every due run is done exactly once in
 * its recorded effects, and none is lost.
 */
import assert from "node:assert/strict";
import type { RunRecord } from "../handlers/run_charm.ts";
import { offsetMs } from "../handlers/fanout.ts";
import { cellKey, charmStateKey, runKey } from "../store/keys.ts";
import type { CharmState } from "../charm/charm.ts";
import { type ServiceProcess, startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";
import { startWebhookReceiver } from "./webhook_receiver.ts";

const CHARMS = 12;
const INTERVAL_MS = 2_000;

Deno.test({
  name:
    "three processes on one KV file: a SIGKILLed one loses no run and duplicates no effect",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    await using receiver = startWebhookReceiver();
    // Slow replies, so the killed process is surely mid-run.
    receiver.reply("/hook", {
      status: 200,
      body: { result: "ok" },
      delayMs: 150,
    });
    const env = {
      KV_PATH: `${dir}/kv.sqlite3`,
      QUEUE_DRIVER: "kv",
      QUEUE_WORKER: "loop",
      QUEUE_POLL_MS: "50",
      CHARM_EXECUTION_TIMEOUT_MS: "1000",
      LOG_LEVEL: "info",
    };
    const args = [
      "--integration=manual",
      `--interval=${INTERVAL_MS / 1000}`,
      "--max-concurrent=3",
    ];
    const processes: ServiceProcess[] = [];
    const kv = await Deno.openKv(env.KV_PATH);
    try {
      processes.push(await startService(args, env));
      const [first] = processes;
      const refs = [];
      for (let i = 0; i < CHARMS; i++) {
        const charmId = `w${i}`;
        const post = (path: string, body: unknown) =>
          first!.json(path, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body),
          });
        const created = await post("/api/charms", {
          space: SPACE,
          recipe: "webhook",
          charmId,
          argument: { url: `${receiver.url}/hook` },
        });
        assert.equal(created.status, 201);
        await post("/api/integrations/manual/charms", {
          space: SPACE,
          charmId,
        });
        refs.push({ space: SPACE, charmId });
      }
      processes.push(
        await startService(args, env),
        await startService(args, env),
      );
      const fanoutAt = Date.now();
      const fanout = await first!.json("/api/fanout", { method: "POST" });
      assert.equal(fanout.status, 200);

      await waitFor("runs under way", () => receiver.calls.length >= CHARMS);
      assert.notEqual(await processes[1]!.stop("SIGKILL"), 0);
      const killedAt = Date.now();

      // Every slot due before a cutoff past the kill must be done, once.
      const cutoff = killedAt + 2 * INTERVAL_MS;
      const firstSlot = Math.floor(fanoutAt / INTERVAL_MS) * INTERVAL_MS;
      const due: { ref: typeof refs[number]; slot: number }[] = [];
      for (const ref of refs) {
        const offset = offsetMs(ref, "manual", INTERVAL_MS);
        for (
          let slot = firstSlot;
          slot + offset <= cutoff;
          slot += INTERVAL_MS
        ) {
          due.push({ ref, slot });
        }
      }
      await waitFor(
        "every due run to succeed",
        async () => {
          for (const { ref, slot } of due) {
            const record = await kv.get<RunRecord>(
              runKey(ref, `manual:${slot}`),
            );
            if (record.value?.state !== "succeeded") return false;
          }
          return true;
        },
        60_000,
        200,
      );

      // Effects: each charm's result counts each of its succeeded runs once.
      for (const ref of refs) {
        const [state, result] = await kv.getMany<
          [CharmState, { calls: number }]
        >([
          charmStateKey(ref),
          cellKey(ref, "result"),
        ]);
        assert.equal(
          result.value?.calls,
          state.value?.totalSuccesses,
          ref.charmId,
        );
        assert.equal(state.value?.totalFailures, 0, ref.charmId);
      }
      // Every due slot reached the receiver; only runs the kill interrupted
      // may have reached it twice (at most --max-concurrent of them).
      const calls = new Map<string, number>();
      for (const call of receiver.callsTo("/hook")) {
        const key = `${call.body.charmId}@${call.body.slot}`;
        calls.set(key, (calls.get(key) ?? 0) + 1);
      }
      for (const { ref, slot } of due) {
        assert.ok(
          calls.has(`${ref.charmId}@${slot}`),
          `${ref.charmId}@${slot} never called`,
        );
      }
      const repeated = [...calls.values()].filter((n) => n > 1).length;
      assert.ok(repeated <= 3, `${repeated} slots called more than once`);

      for (const process of [processes[0]!, processes[2]!]) {
        assert.equal(await process.stop("SIGTERM"), 0);
      }
    } catch (error) {
      for (const [i, process] of processes.entries()) {
        console.error(`--- process ${i} ---\n${process.output()}`);
      }
      throw error;
    } finally {
      kv.close();
      for (const process of processes) await process[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

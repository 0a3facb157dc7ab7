/**
 * End to end: the real service as a subprocess on a temp KV file, webhook
 * charms against a loopback receiver, a failing charm retried then disabled,
 * SIGTERM, restart, state intact.
 */
import assert from "node:assert/strict";
import { startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";
import { startWebhookReceiver } from "./webhook_receiver.ts";

const FAILURES = 2;
const MAX_RETRIES = 2;

Deno.test({
  name:
    "service runs charms, retries and disables a failing one, and keeps state across restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    await using receiver = startWebhookReceiver();
    receiver.reply("/fail", { status: 500, body: { error: "on purpose" } });
    const env = {
      KV_PATH: `${dir}/kv.sqlite3`,
      LOG_LEVEL: "info",
      RETRY_BASE_DELAY_MS: "20",
      RETRY_MAX_DELAY_MS: "100",
      CHARM_EXECUTION_TIMEOUT_MS: "5000",
    };
    const args = [
      "--integration=manual",
      "--interval=2",
      `--failures=${FAILURES}`,
      `--max-retries=${MAX_RETRIES}`,
      "--log-interval=3600",
    ];
    let service = await startService(args, env);
    try {
      // Create and register two webhook charms over HTTP.
      for (const [charmId, path] of [["ok", "/ok"], ["bad", "/fail"]]) {
        const created = await service.json("/api/charms", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            space: SPACE,
            recipe: "webhook",
            charmId,
            argument: { url: `${receiver.url}${path}` },
          }),
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const registered = await service.json(
          "/api/integrations/manual/charms",
          {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ space: SPACE, charmId }),
          },
        );
        assert.deepEqual(registered.body, { added: true, reenabled: false });
      }
      const fanout = await service.json("/api/fanout", { method: "POST" });
      assert.equal(fanout.status, 200);
      assert.ok(
        fanout.body.results[0].enqueued >= 2,
        JSON.stringify(fanout.body),
      );

      // The good charm runs on schedule, once per slot.
      await waitFor(
        "three runs of the good charm",
        () => receiver.callsTo("/ok").length >= 3,
      );
      const okSlots = receiver.callsTo("/ok").map((c) => c.body.slot);
      assert.equal(
        new Set(okSlots).size,
        okSlots.length,
        `duplicate slots: ${okSlots}`,
      );
      for (const slot of okSlots) {
        assert.equal(slot % 2_000, 0, "slots are 2 s apart");
      }

      // The failing charm is retried, then disabled after --failures slots.
      const bad = await waitFor(
        "the failing charm to be disabled",
        async () => {
          const { body } = await service.json(`/api/charms/${SPACE}/bad`);
          return body.status === "disabled" ? body : null;
        },
      );
      assert.ok(bad.state.consecutiveFailures >= FAILURES);
      assert.equal(bad.state.totalFailures, bad.state.consecutiveFailures);
      assert.match(bad.state.lastError, /replied 500/);
      assert.match(bad.state.disabledReason, /consecutive failures/);
      // Each failed slot made 1 + --max-retries attempts, each exactly once.
      const attemptsBySlot = new Map<number, number[]>();
      for (const call of receiver.callsTo("/fail")) {
        attemptsBySlot.set(call.body.slot, [
          ...(attemptsBySlot.get(call.body.slot) ?? []),
          call.body.attempt,
        ]);
      }
      const finished = [...attemptsBySlot.values()].filter((a) =>
        a.length === MAX_RETRIES + 1
      );
      assert.ok(
        finished.length >= FAILURES,
        JSON.stringify([...attemptsBySlot]),
      );
      for (const attempts of attemptsBySlot.values()) {
        assert.deepEqual(
          attempts,
          [1, 2, 3].slice(0, attempts.length),
          "attempts in order, none twice",
        );
      }
      // Once disabled, it is not called again.
      const badCalls = receiver.callsTo("/fail").length;
      const okNow = receiver.callsTo("/ok").length;
      await waitFor(
        "two more runs of the good charm",
        () => receiver.callsTo("/ok").length >= okNow + 2,
      );
      assert.equal(receiver.callsTo("/fail").length, badCalls);

      // Graceful stop.
      const before = await service.json(`/api/charms/${SPACE}/bad`);
      const statusBefore = await service.json("/api/status");
      assert.equal(await service.stop("SIGTERM"), 0);
      assert.match(service.output(), /Received SIGTERM: stopping/);
      assert.match(service.output(), /Stopped/);
      const okBeforeRestart = await waitFor(
        "receiver to settle",
        () => receiver.callsTo("/ok").length,
      );

      // Restart on the same KV file: state intact, the good charm resumes.
      service = await startService(args, env);
      const after = await service.json(`/api/charms/${SPACE}/bad`);
      assert.deepEqual(after.body.state, before.body.state);
      assert.equal(after.body.status, "disabled");
      const statusAfter = await service.json("/api/status");
      for (
        const field of [
          "cyclesCompleted",
          "totalCharmsProcessed",
          "totalSuccesses",
          "totalFailures",
        ]
      ) {
        assert.ok(
          statusAfter.body[field] >= statusBefore.body[field],
          `${field}: ${statusAfter.body[field]} < ${statusBefore.body[field]}`,
        );
      }
      assert.deepEqual(statusAfter.body.charms, {
        total: 2,
        enabled: 1,
        disabled: 1,
      });
      await waitFor(
        "the good charm to run after restart",
        () => receiver.callsTo("/ok").length > okBeforeRestart,
      );
      const ok = await service.json(`/api/charms/${SPACE}/ok`);
      assert.equal(ok.body.cells.result.calls, ok.body.state.totalSuccesses);
      assert.equal(ok.body.state.totalFailures, 0);
      const allOkSlots = receiver.callsTo("/ok").map((c) => c.body.slot);
      assert.equal(
        new Set(allOkSlots).size,
        allOkSlots.length,
        "no slot ran twice across the restart",
      );

      // Re-enabling through the API brings the charm back.
      const enabled = await service.json(`/api/charms/${SPACE}/bad/enable`, {
        method: "POST",
      });
      assert.equal(enabled.body.status, "ok");
      assert.equal(await service.stop("SIGTERM"), 0);
    } catch (error) {
      console.error(`--- service output ---\n${service.output()}`);
      throw error;
    } finally {
      await service[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * The service as Deno Deploy runs it: the `kv` queue drained only by cron
 * ticks and requests (no listener, no worker loop), started with no
 * `--unstable-*` flags.
 */
import assert from "node:assert/strict";
import { startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";

Deno.test({
  name:
    "Deploy mode: POST /api/fanout fans out and drains; charms run on schedule",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const service = await startService(["--interval=1"], {
      KV_PATH: `${dir}/kv.sqlite3`,
      INTEGRATIONS: "manual",
      QUEUE_DRIVER: "kv",
      QUEUE_WORKER: "cron",
      // A drain starts runs only while one could still finish (timeout +
      // 5 s) within it: 2.5 s of starting here.
      DRAIN_BUDGET_MS: "8500",
      CHARM_EXECUTION_TIMEOUT_MS: "1000",
      QUEUE_POLL_MS: "20",
    });
    try {
      assert.match(service.output(), /Queue driver: kv \(QUEUE_DRIVER\)/);
      // Logged at the end of startup, which may finish after the server
      // starts listening.
      await waitFor(
        "the queue's startup line",
        () =>
          /drained in each cron tick and fan-out request \(no listener\)/
            .test(service.output()),
        10_000,
      );
      const post = (path: string, body?: unknown) =>
        service.json(path, {
          method: "POST",
          headers: { "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      for (const charmId of ["a", "b"]) {
        assert.equal(
          (await post("/api/charms", {
            space: SPACE,
            recipe: "counter",
            charmId,
          })).status,
          201,
        );
        assert.equal(
          (await post("/api/integrations/manual/charms", {
            space: SPACE,
            charmId,
          })).status,
          200,
        );
      }
      // Nothing runs between requests: no listener, no worker.
      const idle = await service.json(`/api/charms/${SPACE}/a`);
      assert.equal(idle.body.cells.result.count, 0);

      // The fan-out covers the rest of the minute: leave room for two slots.
      await waitFor(
        "10 s left in the minute",
        () => Date.now() % 60_000 < 50_000,
        15_000,
      );
      const before = Date.now();
      const fanout = await post("/api/fanout");
      assert.equal(fanout.status, 200);
      for (const charmId of ["a", "b"]) {
        const { body } = await service.json(`/api/charms/${SPACE}/${charmId}`);
        // The request drained ~2.5 s of 1 s slots: at least two runs each,
        // each in its own slot, none before the request.
        assert.ok(
          body.cells.result.count >= 2,
          `${charmId}: ${body.cells.result.count} runs`,
        );
        assert.equal(body.state.totalSuccesses, body.cells.result.count);
        assert.ok(body.cells.result.lastRunAt >= before);
        assert.ok(body.cells.result.lastRunAt >= body.cells.result.lastSlot);
      }
      assert.equal(await service.stop("SIGTERM"), 0);
    } catch (error) {
      console.error(service.output());
      throw error;
    } finally {
      await service[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

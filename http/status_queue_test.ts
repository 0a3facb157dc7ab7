import assert from "node:assert/strict";
import { kvQueue } from "../queue/kv_queue.ts";
import { SPACE } from "../test/test_deps.ts";
import { harness } from "./test_harness.ts";

Deno.test("GET /api/status shows the kv queue's depth to the operator", async () => {
  await using h = await harness({
    queue: (kv) =>
      kvQueue(kv, {
        owner: "t",
        leaseMs: 1_000,
        maxInFlight: 1,
        now: () => Date.now(),
      }),
  });
  await h.call("POST", "/api/charms", {
    space: SPACE,
    recipe: "counter",
    charmId: "c1",
  });
  assert.equal(
    (await h.call("POST", `/api/charms/${SPACE}/c1/run`)).status,
    202,
  );
  const body = await (await h.call("GET", "/api/status")).json();
  assert.equal(body.queue.driver, "kv");
  assert.equal(body.queue.depth.dueNow + body.queue.depth.delayed, 1);
  assert.equal(body.queue.depth.leased, 0);
});

Deno.test("GET /api/status has no depth for the native queue", async () => {
  await using h = await harness();
  const body = await (await h.call("GET", "/api/status")).json();
  assert.equal(body.queue.driver, "native");
  assert.equal(body.queue.depth, null);
});

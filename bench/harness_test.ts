import assert from "node:assert/strict";
import { loadBenchConfig } from "./config.ts";
import { countingKv, totalOps } from "./counting_kv.ts";
import { driverNamed, KV_DRIVER, NATIVE_DRIVER } from "./drivers.ts";
import { endToEnd } from "./end_to_end.ts";
import { serviceV8Flags } from "./fanout_scale.ts";
import { kvCeiling, nativeCeiling } from "./kv_ceiling.ts";
import { queueBaseline } from "./queue_baseline.ts";
import { noopRecipe } from "./recipes.ts";
import { seedDifference } from "./seed.ts";
import { figure, percentile } from "./stats.ts";

// Structure only: the benchmark's times are reported, never asserted.

Deno.test("seedCharmsBatched() writes what createCharm() + registerCharm() write", async () => {
  assert.equal(await seedDifference(noopRecipe), null);
});

Deno.test("countingKv() counts reads and the commit of a chained atomic op", async () => {
  const raw = await Deno.openKv(":memory:");
  try {
    const { kv, counts } = countingKv(raw);
    const entry = await kv.get(["a"]);
    await kv.atomic().check(entry).set(["a"], 1).sum(["n"], 1n).commit();
    await kv.getMany([["a"], ["n"]]);
    for await (const _ of kv.list({ prefix: [] })) {
      // Drain the listing.
    }
    assert.deepEqual(totalOps(counts), { reads: 3, writes: 1, total: 4 });
    assert.equal((await raw.get(["a"])).value, 1);
  } finally {
    raw.close();
  }
});

Deno.test("queueBaseline() drains every message and reports a rate", async () => {
  const result = await queueBaseline("memory", 50, 30_000);
  assert.ok(result.messagesPerSecond > 0);
  assert.ok(result.elapsedMs >= result.enqueueMs);
});

Deno.test("endToEnd() runs every charm once through dispatch() and counts KV ops", async () => {
  const result = await endToEnd({
    kind: "memory",
    driver: NATIVE_DRIVER,
    charms: 20,
    maxConcurrent: 5,
    processes: 1,
    timeoutMs: 30_000,
  });
  assert.equal(result.succeeded, 20);
  assert.equal(result.failed, 0);
  assert.ok(result.runsPerSecond > 0);
  // The no-op recipe is pure: one outcome commit per run and no claim, plus
  // the fan-out's few commits (its record, one page of enqueues, its end).
  const writes = result.kvOpsPerRun?.writes ?? 0;
  assert.ok(writes > 1 && writes < 1.5, `writes per run: ${writes}`);
});

Deno.test("driverNamed() builds each driver as main.ts does, and refuses others", async () => {
  await using kv = await Deno.openKv(":memory:");
  for (const name of ["native", "kv"]) {
    const { queue, stop } = driverNamed(name).create(kv, 5, "test");
    assert.equal(queue.name, name);
    stop();
  }
  assert.equal(driverNamed("kv"), KV_DRIVER);
  assert.throws(() => driverNamed("redis"), /"redis" is not a driver/);
});

Deno.test("figure() and percentile() summarise repetitions", () => {
  assert.deepEqual(figure([3, 1, 2]), {
    median: 2,
    min: 1,
    max: 3,
    runs: [3, 1, 2],
  });
  const samples = Array.from({ length: 1000 }, (_, i) => i + 1);
  assert.equal(percentile(samples, 99), 990);
  assert.equal(percentile(samples, 50), 500);
});

Deno.test("loadBenchConfig() scales down for --quick and names bad variables", () => {
  const quick = loadBenchConfig(["--quick"], {});
  assert.equal(quick.quick, true);
  assert.ok(quick.fanoutSizes.every((n) => n <= 5_000));
  assert.throws(
    () =>
      loadBenchConfig([], {
        BENCH_REPS: "zero",
        BENCH_LATENESS_INTERVAL_S: "7",
      }),
    (error: Error) =>
      error.message.includes("BENCH_REPS") &&
      error.message.includes("BENCH_LATENESS_INTERVAL_S"),
  );
});

Deno.test("serviceV8Flags() gives the fan-out worker the service's V8 flags", async () => {
  assert.deepEqual(await serviceV8Flags(), [
    "--v8-flags=--max-semi-space-size=8",
  ]);
});

Deno.test("kvCeiling() runs every seeded job through its KV requests", async () => {
  const result = await kvCeiling("memory", 30);
  assert.ok(result.runsPerSecond > 0);
  assert.ok(result.elapsedMs > 0);
});

Deno.test("kvCeiling() with the fan-out runs every job it enqueues, over pages", async () => {
  // 250 charms: three fan-out pages, the loops waiting for the later ones
  // (kvCeiling throws unless every job ran).
  const result = await kvCeiling("memory", 250, { withFanout: true });
  assert.ok(result.runsPerSecond > 0);
});

Deno.test("nativeCeiling() runs every charm through the native queue", async () => {
  // It throws unless the counter shows every run.
  const result = await nativeCeiling("memory", 250);
  assert.ok(result.runsPerSecond > 0);
});

Deno.test({
  name: "threadCpu() tells the KV's SQLite thread from the main thread",
  ignore: Deno.build.os !== "linux",
  async fn() {
    // Reading /proc/self needs --allow-all: measured in a `deno eval` (which
    // has it), as the benchmark runs with it.
    const threads = new URL("./threads.ts", import.meta.url).href;
    const code = `
      import { threadBusy, threadCpu } from ${JSON.stringify(threads)};
      const kv = await Deno.openKv(":memory:");
      const before = threadCpu();
      let after = threadCpu();
      // Commits until the SQLite thread has used a clock tick; bounded.
      for (let i = 0; i < 200000 && after.kvMs === before.kvMs; i++) {
        await kv.atomic().set(["n", i % 100], i).commit();
        if (i % 100 === 0) after = threadCpu();
      }
      kv.close();
      console.log(JSON.stringify({
        before,
        after,
        busy: threadBusy(before, after, 1000),
        none: threadBusy(null, after, 1000),
      }));
    `;
    const { code: exit, stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", code],
      stderr: "inherit",
    }).output();
    assert.equal(exit, 0);
    const { before, after, busy, none } = JSON.parse(
      new TextDecoder().decode(stdout),
    );
    assert.ok(after.kvMs > before.kvMs, "no CPU seen on a sw- thread");
    assert.ok(after.mainMs >= before.mainMs);
    assert.ok(busy.kv > 0);
    assert.equal(none, null);
  },
});

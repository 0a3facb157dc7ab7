import assert from "node:assert/strict";
import { addToCounter, keyId } from "../store/kv_util.ts";
import { groupCommitter, RecordedOperation } from "./group_commit.ts";

/** Starts `n` parts at once, each built by `build(i, op)`. */
function commitAll(
  committer: ReturnType<typeof groupCommitter>,
  n: number,
  build: (i: number, op: Deno.AtomicOperation) => void,
) {
  return Promise.all(
    Array.from({ length: n }, (_, i) => committer.commit((op) => build(i, op))),
  );
}

Deno.test("groupCommitter() commits parts that arrive together as one operation", async () => {
  await using kv = await Deno.openKv(":memory:");
  const committer = groupCommitter(kv);
  const results = await commitAll(committer, 6, (i, op) => {
    op.check({ key: ["jobs", i], versionstamp: null })
      .set(["jobs", i], i)
      .sum(["count"], 1n);
  });
  assert.ok(results.every((r) => r.ok));
  // The first goes alone (nothing to wait for); the five that arrived while
  // it committed share one versionstamp: one commit.
  const stamps = new Set(results.map((r) => r.ok ? r.versionstamp : ""));
  assert.equal(stamps.size, 2);
  assert.equal((await kv.get<Deno.KvU64>(["count"])).value?.value, 6n);
  for (let i = 0; i < 6; i++) {
    assert.equal((await kv.get(["jobs", i])).value, i);
  }
});

Deno.test("groupCommitter() waits a moment for parts still coming, and no longer", async () => {
  await using kv = await Deno.openKv(":memory:");
  // Handlers still running: the first part waits for them instead of
  // committing alone, so all six share one commit. They never finish, and
  // the group commits anyway once the wait is over.
  const committer = groupCommitter(kv, { coming: () => 1 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const results = await Promise.race([
    commitAll(committer, 6, (i, op) => op.set(["jobs", i], i)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("still waiting")), 5_000);
    }),
  ]).finally(() => clearTimeout(timer));
  assert.ok(results.every((r) => r.ok));
  assert.equal(new Set(results.map((r) => r.ok && r.versionstamp)).size, 1);
});

Deno.test("groupCommitter() adds up a group's sums to one key, decrements included", async () => {
  await using kv = await Deno.openKv(":memory:");
  await kv.set(["disabled"], new Deno.KvU64(5n));
  const committer = groupCommitter(kv);
  // Seven parts: four add 1, three subtract 1 (addToCounter's two's
  // complement); all but the first share one commit.
  const results = await commitAll(committer, 7, (i, op) => {
    op.set(["jobs", i], i);
    addToCounter(op, ["disabled"], i < 4 ? 1 : -1);
    addToCounter(op, ["runs"], 1);
  });
  assert.ok(results.every((r) => r.ok));
  assert.equal(new Set(results.map((r) => r.ok && r.versionstamp)).size, 2);
  assert.equal((await kv.get<Deno.KvU64>(["disabled"])).value?.value, 6n);
  assert.equal((await kv.get<Deno.KvU64>(["runs"])).value?.value, 7n);
});

Deno.test("groupCommitter() keeps a group within the KV's checks per operation", async () => {
  await using kv = await Deno.openKv(":memory:");
  // KV Connect's limit: 10 checks. Parts of 4 checks go two to a group.
  const committer = groupCommitter(kv, { maxChecks: 10 });
  const results = await commitAll(committer, 7, (i, op) => {
    for (let k = 0; k < 4; k++) {
      op.check({ key: ["jobs", i, k], versionstamp: null });
    }
    op.set(["jobs", i], i);
  });
  assert.ok(results.every((r) => r.ok));
  const groups = new Map<string, number>();
  for (const r of results) {
    const stamp = r.ok ? r.versionstamp : "";
    groups.set(stamp, (groups.get(stamp) ?? 0) + 1);
  }
  // The first alone, then the six that waited, two at a time.
  assert.deepEqual([...groups.values()], [1, 2, 2, 2]);
});

Deno.test("groupCommitter() never groups two parts where one checks what the other writes", async () => {
  await using kv = await Deno.openKv(":memory:");
  await kv.set(["cell"], 0);
  const entry = await kv.get<number>(["cell"]);
  const committer = groupCommitter(kv);
  // Three read-modify-writes of one cell from the same read: in one atomic
  // operation all three checks would pass and two increments be lost.
  const results = await commitAll(committer, 3, (_i, op) => {
    op.check(entry).set(["cell"], entry.value! + 1);
  });
  assert.deepEqual(results.map((r) => r.ok), [true, false, false]);
  assert.equal((await kv.get(["cell"])).value, 1);
});

Deno.test("groupCommitter() fails only the part whose check fails", async () => {
  await using kv = await Deno.openKv(":memory:");
  await kv.set(["taken", 2], "someone");
  const committer = groupCommitter(kv);
  const results = await commitAll(committer, 4, (i, op) => {
    op.check({ key: ["taken", i], versionstamp: null }).set(["taken", i], i);
  });
  assert.deepEqual(results.map((r) => r.ok), [true, true, false, true]);
  assert.equal((await kv.get(["taken", 2])).value, "someone");
  assert.equal((await kv.get(["taken", 3])).value, 3);
});

Deno.test("groupCommitter() splits a group KV refuses as too large", async () => {
  await using kv = await Deno.openKv(":memory:");
  const committer = groupCommitter(kv, { maxGroup: 16 });
  // 30 checks each: a group of 16 (480 checks) or 4 (120) is over KV's 100.
  const results = await commitAll(committer, 17, (i, op) => {
    for (let c = 0; c < 30; c++) {
      op.check({ key: ["free", i, c], versionstamp: null });
    }
    op.set(["done", i], true);
  });
  assert.ok(results.every((r) => r.ok));
  for (let i = 0; i < 17; i++) {
    assert.equal((await kv.get(["done", i])).value, true);
  }
});

Deno.test("groupCommitter() rejects only the caller whose build throws", async () => {
  await using kv = await Deno.openKv(":memory:");
  const committer = groupCommitter(kv);
  const good = committer.commit((op) => void op.set(["good"], 1));
  assert.throws(
    () =>
      committer.commit(() => {
        throw new TypeError("bad build");
      }),
    /bad build/,
  );
  assert.equal((await good).ok, true);
  assert.equal(committer.waiting, 0);
});

Deno.test("RecordedOperation notes checked and written keys, not summed ones", () => {
  const recorded = new RecordedOperation();
  recorded.check({ key: ["a", 1], versionstamp: null }).set(["b"], 1)
    .delete(["c"]).sum(["n"], 1n);
  assert.deepEqual([...recorded.checked], [keyId(["a", 1])]);
  assert.deepEqual([...recorded.written], [keyId(["b"]), keyId(["c"])]);
  assert.notEqual(keyId(["a", 1]), keyId(["a", "1"]));
  assert.throws(() => recorded.commit(), /committed by its driver/);
});

Deno.test("groupCommitter() fails only a part KV refuses as built, in a group", async () => {
  await using kv = await Deno.openKv(":memory:");
  const committer = groupCommitter(kv);
  // The first commits alone; the next two arrive meanwhile and would form a
  // group.
  const first = committer.commit((op) => void op.set(["first"], 1));
  const good = committer.commit((op) => void op.set(["good"], 1));
  // Refused by KV's own check of the value, as it is recorded.
  assert.throws(
    () => committer.commit((op) => void op.sum(["n"], -1n)),
    /positive bigint/,
  );
  assert.equal((await first).ok, true);
  assert.equal((await good).ok, true);
  assert.equal((await kv.get(["good"])).value, 1);
  assert.equal(committer.waiting, 0);
});

/** Commits a lone first part, then `builds` together: they form one group. */
async function oneGroup(
  kv: Deno.Kv,
  builds: ((op: Deno.AtomicOperation) => void)[],
) {
  const committer = groupCommitter(kv);
  const first = committer.commit((op) => op.set(["first"], 1));
  const rest = builds.map((build) => committer.commit(build));
  await first;
  const results = await Promise.all(rest);
  assert.ok(results.every((r) => r.ok));
  assert.equal(new Set(results.map((r) => r.ok && r.versionstamp)).size, 1);
}

Deno.test("groupCommitter() keeps a part's sum then delete of one key in order", async () => {
  await using kv = await Deno.openKv(":memory:");
  await kv.set(["c"], new Deno.KvU64(5n));
  await oneGroup(kv, [
    (op) => op.set(["other"], 1),
    // Alone this leaves ["c"] deleted.
    (op) => op.sum(["c"], 1n).delete(["c"]),
  ]);
  assert.equal((await kv.get(["c"])).value, null);
});

Deno.test("groupCommitter() keeps one part's sum before another's set of that key", async () => {
  await using kv = await Deno.openKv(":memory:");
  await kv.set(["c"], new Deno.KvU64(5n));
  await oneGroup(kv, [
    (op) => op.sum(["c"], 1n),
    (op) => op.set(["c"], new Deno.KvU64(10n)),
  ]);
  // One by one, in arrival order: 5 + 1, then set to 10.
  assert.equal((await kv.get<Deno.KvU64>(["c"])).value?.value, 10n);
});

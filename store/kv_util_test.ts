import assert from "node:assert/strict";
import { serialize as v8Serialize } from "node:v8";
import {
  cellSize,
  getManyByRange,
  getManyChunked,
  jsonSize,
  keyId,
  MAX_CELL_BYTES,
  serializedSizeBound,
} from "./kv_util.ts";

/** Writes `["things", i]` for each `i` in `present`, and noise around them. */
async function seed(kv: Deno.Kv, present: number[]): Promise<void> {
  const op = kv.atomic();
  for (const i of present) op.set(["things", i], `thing ${i}`);
  // Longer keys under a wanted key, and a neighbouring prefix: not wanted.
  op.set(["things", 5, "child"], "child").set(["thingz", 1], "other");
  await op.commit();
}

Deno.test("getManyByRange() returns what getMany returns, absent keys included", async () => {
  await using kv = await Deno.openKv(":memory:");
  await seed(kv, [1, 2, 3, 5, 8, 13]);
  const keys = [1, 2, 4, 5, 8, 9, 13].map((i) => ["things", i]);
  const byRange = await getManyByRange<string>(kv, keys);
  const byGet = await getManyChunked<string>(kv, keys);
  assert.deepEqual(byRange, byGet);
  assert.deepEqual(byRange.map((e) => e.value), [
    "thing 1",
    "thing 2",
    null,
    "thing 5",
    "thing 8",
    null,
    "thing 13",
  ]);
});

Deno.test("getManyByRange() reads what a bounded scan of a sparse range missed", async () => {
  await using kv = await Deno.openKv(":memory:");
  const present = Array.from({ length: 100 }, (_, i) => i);
  await seed(kv, present);
  // Three wanted keys spread over 100 entries: a scan of 3 × 2 stops early.
  const keys = [0, 50, 99].map((i) => ["things", i]);
  const entries = await getManyByRange<string>(kv, keys, 2);
  assert.deepEqual(entries.map((e) => e.value), [
    "thing 0",
    "thing 50",
    "thing 99",
  ]);
  assert.ok(entries.every((e) => e.versionstamp !== null));
});

Deno.test("keyId() tells keys apart by part type and boundaries", () => {
  assert.equal(keyId(["a", 1]), keyId(["a", 1]));
  assert.notEqual(keyId(["a", 1]), keyId(["a", "1"]));
  assert.notEqual(keyId(["ab", "c"]), keyId(["a", "bc"]));
  assert.notEqual(keyId([1n]), keyId([1]));
  assert.notEqual(keyId(["a", "b"]), keyId(["a\u0000sb"]));
  assert.notEqual(keyId(["a", "b"]), keyId(["a1:b"]));
  assert.notEqual(keyId([0]), keyId([-0]));
});

Deno.test("getManyByRange() returns getMany's entries for keys out of order", async () => {
  await using kv = await Deno.openKv(":memory:");
  await seed(kv, [1, 2, 3]);
  const keys = [2, 1, 3, 7].map((i) => ["things", i]);
  assert.deepEqual(
    await getManyByRange<string>(kv, keys),
    await getManyChunked<string>(kv, keys),
  );
});

Deno.test("serializedSizeBound() is never below V8's serialized size", () => {
  const values: unknown[] = [
    null,
    true,
    0,
    -1,
    2 ** 31,
    1.5,
    "",
    "ascii text",
    "façade",
    "emoji 🎉 and 漢字",
    [],
    [1, 2.5, "x", null, [true]],
    {},
    { a: 1, b: { c: ["d", 3.25] }, "key with ü": "value" },
    Array.from({ length: 1000 }, (_, i) => i + 0.5),
    Object.fromEntries(
      Array.from({ length: 200 }, (_, i) => [`k${i}`, { n: i, s: "v" + i }]),
    ),
  ];
  for (const value of values) {
    const actual = v8Serialize(value).length;
    assert.ok(
      serializedSizeBound(value) >= actual,
      `${JSON.stringify(value).slice(0, 40)}: ${actual}`,
    );
  }
});

Deno.test("cellSize() refuses what JSON passes but KV cannot store", async () => {
  await using kv = await Deno.openKv(":memory:");
  // About 60 KB of JSON, but 9 bytes a number for V8.
  const doubles = Array.from({ length: 15_000 }, () => 0.5);
  assert.ok(jsonSize(doubles) <= MAX_CELL_BYTES);
  assert.ok(cellSize(doubles) > MAX_CELL_BYTES);
  await assert.rejects(kv.set(["cell"], doubles), /too large/);
  // And what the limit passes, KV stores.
  const fits = Array.from({ length: 6_000 }, () => 0.5);
  assert.ok(cellSize(fits) <= MAX_CELL_BYTES);
  assert.ok((await kv.set(["cell"], fits)).ok);
});

Deno.test("getManyByRange() falls back to getMany when the file is locked", async () => {
  await using kv = await Deno.openKv(":memory:");
  await seed(kv, [1, 2, 3]);
  // Another process holds the SQLite lock while we list (getMany retries it;
  // list does not).
  const locked = new Proxy(kv, {
    get(target, name) {
      if (name === "list") {
        return () => {
          throw new TypeError("database is locked");
        };
      }
      const value = Reflect.get(target, name, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const keys = [1, 2, 4].map((i) => ["things", i]);
  assert.deepEqual(
    await getManyByRange<string>(locked, keys),
    await getManyChunked<string>(kv, keys),
  );
});

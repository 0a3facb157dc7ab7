import assert from "node:assert/strict";
import type { CharmRef, CharmState } from "../charm/charm.ts";
import { RECIPES } from "../recipes/mod.ts";
import { SPACE } from "../test/test_deps.ts";
import { createCharm, readRunInputs } from "./charms.ts";
import { cellKey, charmStateKey } from "./keys.ts";
import {
  MAX_SNAPSHOT_BYTES,
  readPageCells,
  runInputsFromSnapshot,
  runSnapshot,
} from "./run_snapshot.ts";

const NOW = Date.UTC(2026, 10, 29);

async function withCharms(ids: string[]) {
  const kv = await Deno.openKv(":memory:");
  const refs: CharmRef[] = [];
  for (const charmId of ids) {
    const ref = { space: SPACE, charmId };
    await createCharm(kv, ref, RECIPES.get("counter")!, {}, NOW);
    refs.push(ref);
  }
  return { kv, refs };
}

async function entriesOf(kv: Deno.Kv, ref: CharmRef) {
  return await kv.getMany<[CharmState, unknown, unknown]>([
    charmStateKey(ref),
    cellKey(ref, "argument"),
    cellKey(ref, "result"),
  ]);
}

Deno.test("runInputsFromSnapshot() gives what readRunInputs() reads, with keys", async () => {
  const { kv, refs: [ref] } = await withCharms(["a"]);
  using _kv = kv;
  const snapshot = runSnapshot(...await entriesOf(kv, ref!));
  assert.ok(snapshot !== null);
  // A snapshot carries no keys: the run rebuilds them.
  assert.ok(!JSON.stringify(snapshot).includes(SPACE));
  assert.deepEqual(
    runInputsFromSnapshot(ref!, snapshot),
    await readRunInputs(kv, ref!),
  );
  // An absent cell stays absent.
  await kv.delete(cellKey(ref!, "result"));
  assert.deepEqual(
    runInputsFromSnapshot(ref!, runSnapshot(...await entriesOf(kv, ref!))),
    await readRunInputs(kv, ref!),
  );
});

Deno.test("runSnapshot() takes none a run could not use: no record copy, or too big", async () => {
  const { kv, refs: [ref] } = await withCharms(["a"]);
  using _kv = kv;
  const [state, argument, result] = await entriesOf(kv, ref!);
  const { record: _record, ...older } = state.value!;
  assert.equal(
    runSnapshot(
      { ...state, value: older } as Deno.KvEntry<CharmState>,
      argument,
      result,
    ),
    null,
  );
  assert.equal(
    runSnapshot(
      { key: state.key, value: null, versionstamp: null },
      argument,
      result,
    ),
    null,
  );
  const big = {
    ...result,
    value: { text: "x".repeat(MAX_SNAPSHOT_BYTES) },
  } as Deno.KvEntry<unknown>;
  assert.equal(runSnapshot(state, argument, big), null);
  assert.notEqual(runSnapshot(state, argument, result), null);
});

Deno.test("runInputsFromSnapshot() refuses what is not a snapshot", async () => {
  const { kv, refs: [ref] } = await withCharms(["a"]);
  using _kv = kv;
  const good = runSnapshot(...await entriesOf(kv, ref!))!;
  for (
    const bad of [
      undefined,
      null,
      "snapshot",
      {},
      { ...good, result: undefined },
      { ...good, argument: { value: 1 } },
      { ...good, state: { ...good.state, versionstamp: "not hex" } },
      { ...good, state: { ...good.state, value: "not a state" } },
      { ...good, state: { ...good.state, value: null } },
    ]
  ) {
    assert.equal(runInputsFromSnapshot(ref!, bad), null, JSON.stringify(bad));
  }
});

Deno.test("readPageCells() reads a page's cells in one range, or none when other charms' lie between", async () => {
  const { kv, refs } = await withCharms(["a", "b", "c", "b2"]);
  using _kv = kv;
  const [a, b, c] = refs;
  await kv.delete(cellKey(b!, "result"));
  // "a" and "b" are adjacent.
  const cells = await readPageCells(kv, [a!, b!]);
  assert.ok(cells !== null);
  for (const [i, ref] of [a!, b!].entries()) {
    const [, , argument, result] = await readRunInputs(kv, ref);
    assert.deepEqual(cells[i], [argument, result]);
  }
  assert.equal(cells[1]![1].versionstamp, null);
  // "b2" lies between "b" and "c".
  assert.equal(await readPageCells(kv, [b!, c!]), null);
  assert.deepEqual(await readPageCells(kv, []), []);
});

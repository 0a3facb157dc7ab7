import assert from "node:assert/strict";
import { RECIPES } from "../recipes/mod.ts";
import { makeTestDeps, OTHER_SPACE, SPACE } from "../test/test_deps.ts";
import {
  createCharm,
  decodeCursor,
  listCharms,
  type ListCharmsOptions,
  registerCharm,
  setCharmDisabled,
  unregisterCharm,
} from "./charms.ts";
import { readServiceState } from "./service_state.ts";

async function listAll(
  kv: Deno.Kv,
  options: Omit<ListCharmsOptions, "cursor">,
) {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 100; page++) {
    const result = await listCharms(kv, {
      ...options,
      ...(cursor ? { cursor } : {}),
    });
    ids.push(...result.charms.map((c) => c.charmId));
    if (result.cursor === null) return ids;
    cursor = result.cursor;
  }
  throw new Error("listing did not end");
}

Deno.test("listCharms() pages through every filter without skipping or repeating", async () => {
  await using deps = await makeTestDeps();
  const counter = RECIPES.get("counter")!;
  const all: string[] = [];
  for (let i = 0; i < 23; i++) {
    const ref = {
      space: i % 2 ? SPACE : OTHER_SPACE,
      charmId: `c${String(i).padStart(2, "0")}`,
    };
    await createCharm(deps.kv, ref, counter, {}, 0);
    if (i % 3 !== 0) await registerCharm(deps.kv, "manual", ref, 0);
    if (i % 4 === 0) await setCharmDisabled(deps.kv, ref, true, "test");
    all.push(ref.charmId);
  }
  const sorted = (ids: string[]) => [...ids].sort();
  const registered = all.filter((_, i) => i % 3 !== 0);
  const disabled = all.filter((_, i) => i % 4 === 0);
  for (const limit of [1, 2, 5, 50]) {
    assert.deepEqual(sorted(await listAll(deps.kv, { limit })), sorted(all));
    assert.deepEqual(
      sorted(await listAll(deps.kv, { limit, status: "disabled" })),
      sorted(disabled),
    );
    assert.deepEqual(
      sorted(await listAll(deps.kv, { limit, integration: "manual" })),
      sorted(registered),
    );
    // Both filters: the case that must not drop matches past `limit`.
    assert.deepEqual(
      sorted(
        await listAll(deps.kv, { limit, integration: "manual", status: "ok" }),
      ),
      sorted(registered.filter((id) => !disabled.includes(id))),
    );
  }
  assert.equal(
    (await readServiceState(deps.kv)).charms.disabled,
    disabled.length,
  );
});

Deno.test("decodeCursor() refuses what listCharms() did not make", () => {
  for (const bad of ["", "!!!", btoa("{}"), btoa("[1,2]")]) {
    assert.throws(() => decodeCursor(bad), /cursor: not a cursor/);
  }
});

Deno.test("registerCharm() is an upsert and unregisterCharm() removes both indexes", async () => {
  await using deps = await makeTestDeps();
  const ref = { space: SPACE, charmId: "c1" };
  await createCharm(deps.kv, ref, RECIPES.get("counter")!, {}, 0);
  assert.deepEqual(await registerCharm(deps.kv, "manual", ref, 0), {
    added: true,
    reenabled: false,
  });
  assert.deepEqual(await registerCharm(deps.kv, "manual", ref, 0), {
    added: false,
    reenabled: false,
  });
  assert.equal(await unregisterCharm(deps.kv, "manual", ref), true);
  assert.equal(await unregisterCharm(deps.kv, "manual", ref), false);
  assert.deepEqual(
    await listAll(deps.kv, { limit: 10, integration: "manual" }),
    [],
  );
});

import assert from "node:assert/strict";
import { RECIPES } from "../recipes/mod.ts";
import { createCharm } from "../store/charms.ts";
import { listDeadLetters } from "../store/dead_letters.ts";
import { makeTestDeps, SPACE } from "../test/test_deps.ts";
import { dispatch } from "./dispatch.ts";

const valid = {
  type: "run",
  v: 1,
  space: SPACE,
  charmId: "c1",
  integration: "manual",
  kind: "scheduled",
  slot: 0,
  attempt: 1,
  enqueuedAt: 0,
};

Deno.test("dispatch() dead-letters malformed messages, naming the field", async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ["not an object", "hello", /\(message\)/],
    ["unknown type", { ...valid, type: "explode" }, /type/],
    [
      "bad space",
      { ...valid, space: "did:key:zNOPE" },
      /space: must be an Ed25519 did:key/,
    ],
    ["bad attempt", { ...valid, attempt: 0 }, /attempt/],
    ["extra field", { ...valid, extra: 1 }, /extra|Unrecognized/],
    ["manual without runId", { ...valid, kind: "manual" }, /runId/],
  ];
  await using deps = await makeTestDeps();
  for (const [name, message, reason] of cases) {
    await t.step(name, async () => {
      assert.equal(await dispatch(deps, message), "dead-lettered");
      // Letters of one millisecond are not ordered: find this one.
      const { deadLetters } = await listDeadLetters(deps.kv, { limit: 100 });
      const letter = deadLetters.find((l) =>
        JSON.stringify(l.message) === JSON.stringify(message)
      );
      assert.ok(letter, "a dead letter keeps the message");
      assert.match(letter.reason, reason);
    });
  }
});

Deno.test("dispatch() hands a valid run message to the run handler", async () => {
  await using deps = await makeTestDeps();
  await createCharm(
    deps.kv,
    { space: SPACE, charmId: "c1" },
    RECIPES.get("counter")!,
    {},
    0,
  );
  assert.equal(await dispatch(deps, valid), "succeeded");
});

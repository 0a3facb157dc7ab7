import assert from "node:assert/strict";
import { type DidKey, didKeyFromPublicKey } from "../charm/did.ts";
import { ConflictError } from "../lib/errors.ts";
import { SPACE } from "../test/test_deps.ts";
import {
  addDelegate,
  listDelegates,
  MAX_DELEGATES_PER_SPACE,
} from "./delegates.ts";

function did(i: number): DidKey {
  const key = new Uint8Array(32);
  new DataView(key.buffer).setUint32(0, i + 1);
  return didKeyFromPublicKey(key);
}

Deno.test("addDelegate() keeps the cap when many grants come at once", async () => {
  using kv = await Deno.openKv(":memory:");
  // Far more at once than the cap: each is added, refused at the cap, or
  // told to try again; never more than the cap get in.
  const results = await Promise.allSettled(
    Array.from(
      { length: MAX_DELEGATES_PER_SPACE + 50 },
      (_, i) => addDelegate(kv, SPACE, did(i), "owner", 0),
    ),
  );
  const added =
    results.filter((r) => r.status === "fulfilled" && r.value.added).length;
  for (const r of results) {
    if (r.status === "rejected") {
      assert.ok(
        r.reason instanceof RangeError || r.reason instanceof ConflictError,
        String(r.reason),
      );
    }
  }
  assert.ok(added > 0 && added <= MAX_DELEGATES_PER_SPACE, String(added));
  assert.equal((await listDelegates(kv, SPACE)).length, added);
  // One at a time, the space fills up to the cap exactly.
  for (let i = 0; i < MAX_DELEGATES_PER_SPACE + 50; i++) {
    await addDelegate(kv, SPACE, did(i), "owner", 0).catch((error) => {
      assert.ok(error instanceof RangeError, String(error));
    });
  }
  assert.equal(
    (await listDelegates(kv, SPACE)).length,
    MAX_DELEGATES_PER_SPACE,
  );
  // A grant that exists is a no-op, even at the cap.
  assert.deepEqual(await addDelegate(kv, SPACE, did(0), "owner", 0), {
    added: false,
  });
});

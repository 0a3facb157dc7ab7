import assert from "node:assert/strict";
import { Identity, verifySignature } from "../identity/identity.ts";
import {
  didKeyFromPublicKey,
  isDidKey,
  parseDidKey,
  publicKeyFromDidKey,
} from "./did.ts";

Deno.test("publicKeyFromDidKey() returns the 32-byte key didKeyFromPublicKey() encoded", () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
  const did = didKeyFromPublicKey(key);
  assert.equal(parseDidKey(did), did);
  assert.deepEqual(publicKeyFromDidKey(did), key);
});

Deno.test("publicKeyFromDidKey() is the key an identity signs with", async () => {
  const identity = await Identity.generate();
  const data = new TextEncoder().encode("signed by the did:key's holder");
  const signature = await identity.sign(data);
  assert.ok(
    await verifySignature(publicKeyFromDidKey(identity.did), data, signature),
  );
});

Deno.test("publicKeyFromDidKey() refuses what parseDidKey() refuses, with its message", () => {
  for (
    const bad of [
      "did:web:example.com",
      "did:key:z0OIl",
      "did:key:z6LSbysY2xFMRpGMhb7tFTLMpeuPRaqaWM1yECx2AtzE3KCc", // X25519
    ]
  ) {
    assert.equal(isDidKey(bad), false, bad);
    let expected: unknown;
    try {
      parseDidKey(bad);
    } catch (error) {
      expected = error;
    }
    assert.throws(() => publicKeyFromDidKey(bad), expected as Error, bad);
  }
});

Deno.test("isDidKey() answers the same when asked again, past its memory's size", () => {
  const dids = Array.from({ length: 1100 }, (_, i) => {
    const key = new Uint8Array(32);
    new DataView(key.buffer).setUint32(0, i);
    return didKeyFromPublicKey(key);
  });
  for (let round = 0; round < 2; round++) {
    for (const did of dids) assert.equal(isDidKey(did), true, did);
    assert.equal(isDidKey("did:key:z0OIl"), false);
    // One character off a remembered DID is not remembered.
    assert.equal(isDidKey(dids[0]!.slice(0, -1) + "0"), false);
  }
});

import assert from "node:assert/strict";
import { base64 } from "@scure/base";
import { Identity, PKCS8_ED25519_PREFIX, verifySignature } from "./identity.ts";

const COMMON_USER = "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY";
const TOOLSHED_SYSTEM =
  "did:key:z6Mkfuw7h6jDwqVb6wimYGys14JFcyTem4Kqvdj9DjpFhY88";

Deno.test("Identity.fromPassphrase() matches the ecosystem's test vector", async () => {
  const id = await Identity.fromPassphrase("common user");
  assert.equal(id.did, COMMON_USER);
  assert.equal(id.publicKey.length, 32);
});

Deno.test("Identity.derive() matches the ecosystem's test vector and is deterministic", async () => {
  const parent = await Identity.fromPassphrase("common user");
  const child = await parent.derive("toolshed-system");
  assert.equal(child.did, TOOLSHED_SYSTEM);
  assert.equal((await parent.derive("toolshed-system")).did, TOOLSHED_SYSTEM);
  assert.notEqual((await parent.derive("other")).did, TOOLSHED_SYSTEM);
});

Deno.test("Identity.fromPkcs8Pem() reads a key WebCrypto exported as PKCS#8", async () => {
  const pair = await crypto.subtle.generateKey("Ed25519", true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const der = new Uint8Array(
    await crypto.subtle.exportKey("pkcs8", pair.privateKey),
  );
  const pem = `-----BEGIN PRIVATE KEY-----\n${
    base64.encode(der)
  }\n-----END PRIVATE KEY-----\n`;
  const id = await Identity.fromPkcs8Pem(pem);
  const raw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  assert.deepEqual(id.publicKey, raw);
  // And it signs as that key: WebCrypto verifies our signature.
  const message = new TextEncoder().encode("hello");
  const signature = await id.sign(message);
  assert.ok(
    await crypto.subtle.verify(
      "Ed25519",
      pair.publicKey,
      signature as Uint8Array<ArrayBuffer>,
      message,
    ),
  );
});

Deno.test("Identity.toPkcs8Pem() round-trips and starts with the PKCS#8 Ed25519 prefix", async () => {
  const id = await Identity.fromPassphrase("common user");
  const pem = id.toPkcs8Pem();
  assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
  const der = base64.decode(pem.split("\n").slice(1, -2).join(""));
  assert.deepEqual(der.slice(0, 16), PKCS8_ED25519_PREFIX);
  assert.equal((await Identity.fromPkcs8Pem(pem)).did, COMMON_USER);
});

Deno.test("Identity.fromPkcs8Pem() refuses what is not an Ed25519 PKCS#8 key, without quoting it", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["no PEM block", "hello", /^not a PEM key: expected/],
    [
      "not base64",
      "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----",
      /^not a PEM key: the body is not base64/,
    ],
    [
      "wrong key type",
      `-----BEGIN PRIVATE KEY-----\n${
        base64.encode(new Uint8Array(48).fill(7))
      }\n-----END PRIVATE KEY-----`,
      /^not a PKCS#8 Ed25519 private key/,
    ],
  ];
  for (const [name, pem, error] of cases) {
    await t.step(name, async () => {
      await assert.rejects(() => Identity.fromPkcs8Pem(pem), (e: Error) => {
        assert.ok(e instanceof TypeError);
        assert.match(e.message, error);
        assert.doesNotMatch(e.message, /BwcH|!!!!/);
        return true;
      });
    });
  }
});

Deno.test("Identity refuses an empty passphrase and a seed of the wrong size", async () => {
  await assert.rejects(() => Identity.fromPassphrase(""), TypeError);
  await assert.rejects(
    () => Identity.fromSeed(new Uint8Array(31)),
    /seed has 31 bytes, expected 32/,
  );
});

Deno.test("an Identity serialised or inspected shows only its DID", async () => {
  const id = await Identity.fromPassphrase("common user");
  const seedHex = Array.from(
    new Uint8Array(
      await crypto.subtle.digest(
        "SHA-256",
        new TextEncoder().encode("common user"),
      ),
    ),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  assert.equal(JSON.stringify({ id }), `{"id":{"did":"${COMMON_USER}"}}`);
  assert.equal(String(id), COMMON_USER);
  assert.equal(Deno.inspect(id), `Identity(${COMMON_USER})`);
  assert.match(
    Deno.inspect({ nested: id }, { depth: 10 }),
    /nested: Identity\(did:key:z6Mkj5[^)]*\)\s*\}$/,
  );
  assert.deepEqual(Object.keys(id).sort(), ["did", "publicKey"]);
  for (const shown of [JSON.stringify(id), Deno.inspect(id), String(id)]) {
    assert.ok(!shown.includes(seedHex));
  }
});

Deno.test("verifySignature() accepts the signer's signature and refuses others", async () => {
  const a = await Identity.fromPassphrase("a");
  const b = await Identity.fromPassphrase("b");
  const message = new TextEncoder().encode("message");
  const signature = await a.sign(message);
  assert.equal(await verifySignature(a.publicKey, message, signature), true);
  assert.equal(await verifySignature(b.publicKey, message, signature), false);
  assert.equal(
    await verifySignature(a.publicKey, message, new Uint8Array(3)),
    false,
  );
});

import assert from "node:assert/strict";
import { ConfigError } from "./errors.ts";
import {
  deriveSecretKey,
  isSealed,
  loadSecretKeys,
  openValue,
  sealValue,
  SecretDecryptionError,
  type SecretKeys,
} from "./secrets.ts";
import { NonRetriableError } from "./errors.ts";

const OLD = "old-secrets-key-0123456789abcdef-old";
const NEW = "new-secrets-key-0123456789abcdef-new";
const CONTEXT = '["bcs-cell-secret","space","charm","argument","token"]';
const WHERE = "argument.token of charm x";

async function keys(current: string, previous?: string): Promise<SecretKeys> {
  return {
    current: await deriveSecretKey(current),
    previous: previous === undefined
      ? null
      : await deriveSecretKey(previous, "SECRETS_KEY_PREVIOUS"),
  };
}

Deno.test("loadSecretKeys() is null locally without SECRETS_KEY, and refuses to run deployed without it", async () => {
  assert.equal(await loadSecretKeys({}), null);
  assert.equal(await loadSecretKeys({ SECRETS_KEY: "" }), null);
  await assert.rejects(
    loadSecretKeys({ DENO_DEPLOYMENT_ID: "abc" }),
    (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /^SECRETS_KEY: not set; .*Deno Deploy/);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    },
  );
});

Deno.test("loadSecretKeys() refuses short keys, a previous key alone, and equal keys, never quoting them", async () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ SECRETS_KEY: "short-key" }, /^SECRETS_KEY: 9 characters is too short/],
    [
      { SECRETS_KEY: NEW, SECRETS_KEY_PREVIOUS: "k5xyz" },
      /^SECRETS_KEY_PREVIOUS: 5 characters is too short/,
    ],
    [{ SECRETS_KEY_PREVIOUS: OLD }, /^SECRETS_KEY_PREVIOUS: set without/],
    [
      { SECRETS_KEY: NEW, SECRETS_KEY_PREVIOUS: NEW },
      /^SECRETS_KEY_PREVIOUS: the same as SECRETS_KEY/,
    ],
  ];
  for (const [env, pattern] of cases) {
    await assert.rejects(loadSecretKeys(env), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, pattern);
      for (const value of Object.values(env)) {
        assert.ok(!error.message.includes(value), "the key is not quoted");
      }
      return true;
    });
  }
});

Deno.test("loadSecretKeys() derives stable 8-hex key ids for both keys", async () => {
  const loaded = await loadSecretKeys({
    SECRETS_KEY: NEW,
    SECRETS_KEY_PREVIOUS: OLD,
  });
  assert.ok(loaded !== null && loaded.previous !== null);
  assert.match(loaded.current.kid, /^[0-9a-f]{8}$/);
  assert.equal(loaded.current.kid, (await deriveSecretKey(NEW)).kid);
  assert.equal(loaded.previous.kid, (await deriveSecretKey(OLD)).kid);
  assert.notEqual(loaded.current.kid, loaded.previous.kid);
  assert.equal(loaded.previous.source, "SECRETS_KEY_PREVIOUS");
  assert.equal(loaded.current.key.extractable, false);
});

Deno.test("sealValue() and openValue() round-trip JSON with a fresh IV each time", async () => {
  const k = await keys(NEW);
  for (const value of ["ya29.token", 42, { nested: ["a", null] }, ""]) {
    const sealed = await sealValue(k, value, CONTEXT);
    assert.ok(isSealed(sealed));
    assert.equal(sealed.$enc, "v1");
    assert.equal(sealed.kid, k.current.kid);
    assert.ok(!JSON.stringify(sealed).includes("ya29"));
    assert.deepEqual(await openValue(k, sealed, CONTEXT, WHERE), value);
  }
  const a = await sealValue(k, "same", CONTEXT);
  const b = await sealValue(k, "same", CONTEXT);
  assert.notEqual(a.iv, b.iv);
  assert.notEqual(a.ct, b.ct);
});

Deno.test("openValue() with the wrong key says which key it needs, naming SECRETS_KEY", async () => {
  const sealed = await sealValue(await keys(OLD), "ya29.token", CONTEXT);
  await assert.rejects(
    openValue(await keys(NEW), sealed, CONTEXT, WHERE),
    (error: Error) => {
      assert.ok(error instanceof SecretDecryptionError);
      assert.ok(error instanceof NonRetriableError, "a run does not retry it");
      assert.match(
        error.message,
        /^Cannot decrypt argument\.token of charm x: it was encrypted with key [0-9a-f]{8}, which is neither SECRETS_KEY \(key [0-9a-f]{8}\) nor SECRETS_KEY_PREVIOUS \(not set\)/,
      );
      return true;
    },
  );
  await assert.rejects(
    openValue(null, sealed, CONTEXT, WHERE),
    /it is encrypted \(key [0-9a-f]{8}\) and SECRETS_KEY is not set/,
  );
});

Deno.test("openValue() reads values sealed under SECRETS_KEY_PREVIOUS during a rotation", async () => {
  const sealed = await sealValue(await keys(OLD), "ya29.token", CONTEXT);
  const rotating = await keys(NEW, OLD);
  assert.equal(
    await openValue(rotating, sealed, CONTEXT, WHERE),
    "ya29.token",
  );
  // New writes use the new key.
  assert.equal(
    (await sealValue(rotating, "x", CONTEXT)).kid,
    rotating.current.kid,
  );
});

Deno.test("openValue() refuses tampered ciphertext, IV or place", async () => {
  const k = await keys(NEW);
  const sealed = await sealValue(k, "ya29.token", CONTEXT);
  const flip = (text: string) => (text[0] === "A" ? "B" : "A") + text.slice(1);
  const tampered = [
    { ...sealed, ct: flip(sealed.ct) },
    { ...sealed, iv: flip(sealed.iv) },
    { ...sealed, ct: sealed.ct.slice(0, 10) },
    { ...sealed, iv: "not base64!" },
  ];
  for (const bad of tampered) {
    await assert.rejects(
      openValue(k, bad, CONTEXT, WHERE),
      (error: Error) => {
        assert.ok(error instanceof SecretDecryptionError);
        assert.match(
          error.message,
          /with SECRETS_KEY \(key [0-9a-f]{8}\): the ciphertext does not authenticate/,
        );
        return true;
      },
    );
  }
  // The same ciphertext moved to another charm or field does not open.
  await assert.rejects(
    openValue(k, sealed, CONTEXT.replace("charm", "other"), WHERE),
    SecretDecryptionError,
  );
});

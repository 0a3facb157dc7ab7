import assert from "node:assert/strict";
import { ConfigError } from "../lib/errors.ts";
import { logger, memorySink, resetLogging, setupLogging } from "../lib/log.ts";
import { Identity } from "./identity.ts";
import {
  DEVELOPMENT_PASSPHRASE,
  isDeployed,
  isExposed,
  loadIdentity,
} from "./load_identity.ts";

const DEPLOYED = { DENO_DEPLOYMENT_ID: "abc123" };

async function _withKeyFile<T>(
  contents: string,
  fn: (path: string) => Promise<T>,
): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".pem" });
  try {
    await Deno.writeTextFile(path, contents);
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("loadIdentity() reads the IDENTITY key file first", async () => {
  const key = await Identity.generate();
  await _withKeyFile(key.toPkcs8Pem(), async (path) => {
    const loaded = await loadIdentity({
      IDENTITY: path,
      OPERATOR_PASS: "ignored",
      ...DEPLOYED,
    });
    assert.equal(loaded.source, "IDENTITY");
    assert.equal(loaded.identity.did, key.did);
  });
});

Deno.test("loadIdentity() uses OPERATOR_PASS when there is no key file", async () => {
  const loaded = await loadIdentity({ OPERATOR_PASS: "common user" });
  assert.equal(loaded.source, "OPERATOR_PASS");
  assert.equal(
    loaded.identity.did,
    "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY",
  );
});

Deno.test("loadIdentity() falls back to the development identity locally", async () => {
  const loaded = await loadIdentity({ IDENTITY: "", OPERATOR_PASS: "" });
  assert.equal(loaded.source, "development");
  assert.equal(
    loaded.identity.did,
    (await Identity.fromPassphrase(DEVELOPMENT_PASSPHRASE)).did,
  );
});

Deno.test("loadIdentity() refuses the development identity on Deno Deploy", async () => {
  assert.equal(isDeployed(DEPLOYED), true);
  assert.equal(isDeployed({ DENO_DEPLOYMENT_ID: "" }), false);
  await assert.rejects(() => loadIdentity(DEPLOYED), (error: Error) => {
    assert.ok(error instanceof ConfigError);
    assert.match(
      error.message,
      /^IDENTITY: not set, nor OPERATOR_PASS; the development identity is refused on Deno Deploy/,
    );
    assert.doesNotMatch(error.message, /\n/);
    return true;
  });
  // Deployed with a passphrase is fine.
  const loaded = await loadIdentity({ ...DEPLOYED, OPERATOR_PASS: "s3cret" });
  assert.equal(loaded.source, "OPERATOR_PASS");
});

Deno.test("isExposed(): Deno Deploy, or any HOST but loopback", () => {
  for (
    const host of ["", "127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"]
  ) {
    assert.equal(isExposed({ HOST: host }), false, host);
  }
  for (
    const host of ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com"]
  ) {
    assert.equal(isExposed({ HOST: host }), true, host);
  }
  assert.equal(isExposed({ ...DEPLOYED, HOST: "127.0.0.1" }), true);
});

Deno.test("loadIdentity() refuses the development identity on a HOST beyond loopback", async () => {
  await assert.rejects(
    () => loadIdentity({ HOST: "0.0.0.0" }),
    (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(
        error.message,
        /^IDENTITY: not set, nor OPERATOR_PASS; the development identity is refused when HOST \(0\.0\.0\.0\) is not a loopback address/,
      );
      return true;
    },
  );
  const loaded = await loadIdentity({
    HOST: "0.0.0.0",
    OPERATOR_PASS: "s3cret",
  });
  assert.equal(loaded.source, "OPERATOR_PASS");
  // On loopback too once an ADMIN_TOKEN shows the operator keeps strangers
  // out (behind a proxy, say).
  await assert.rejects(
    () => loadIdentity({ HOST: "127.0.0.1", ADMIN_TOKEN: "t" }),
    /the development identity is refused when ADMIN_TOKEN is set/,
  );
  // Nor its public passphrase given as OPERATOR_PASS.
  await assert.rejects(
    () =>
      loadIdentity({ HOST: "0.0.0.0", OPERATOR_PASS: DEVELOPMENT_PASSPHRASE }),
    /OPERATOR_PASS: is the development identity's public passphrase/,
  );
  assert.equal(
    (await loadIdentity({ OPERATOR_PASS: DEVELOPMENT_PASSPHRASE })).source,
    "OPERATOR_PASS",
  );
});

Deno.test("loadIdentity() names IDENTITY and the path when the key file is missing or bad", async () => {
  await assert.rejects(
    () => loadIdentity({ IDENTITY: "/nonexistent/key.pem" }),
    (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(
        error.message,
        /^IDENTITY: cannot read the key file "\/nonexistent\/key.pem": /,
      );
      assert.doesNotMatch(error.message, /\n/);
      return true;
    },
  );
  await _withKeyFile(
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    async (path) => {
      await assert.rejects(
        () => loadIdentity({ IDENTITY: path }),
        (error: Error) => {
          assert.ok(error instanceof ConfigError);
          assert.match(
            error.message,
            new RegExp(
              `^IDENTITY: the key file "${path}" is not a PKCS#8 Ed25519 private key`,
            ),
          );
          assert.doesNotMatch(error.message, /AAAA/);
          // The hint makes a new file: pasting it must not overwrite the
          // one IDENTITY names (a certificate given by mistake, say).
          assert.match(error.message, /keygen > identity\.pem$/);
          assert.ok(!error.message.includes(`-out ${path}`));
          assert.ok(!error.message.includes(`> ${path}`));
          return true;
        },
      );
    },
  );
});

Deno.test("key material is never logged, even when an identity is logged by mistake", async () => {
  const passphrase = "operator passphrase 9f2c";
  const seed = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(passphrase)),
  );
  const key = await Identity.fromSeed(seed);
  const pem = key.toPkcs8Pem();
  const pemBody = pem.split("\n")[1]!;
  const seedHex = Array.from(seed, (b) => b.toString(16).padStart(2, "0"))
    .join("");
  const seedBase64 = btoa(String.fromCharCode(...seed));
  const sink = memorySink();
  await setupLogging("debug", sink);
  try {
    const fromPass = await loadIdentity({ OPERATOR_PASS: passphrase });
    const fromFile = await _withKeyFile(
      pem,
      (path) => loadIdentity({ IDENTITY: path }),
    );
    const log = logger("main");
    // What main.ts logs, and a careless log of the whole identity.
    log.info("Service identity {did} (from {source})", {
      did: fromPass.identity.did,
      source: fromPass.source,
    });
    log.info("Loaded {identity}", { identity: fromFile.identity });
    log.debug("Loaded {loaded}", { loaded: fromFile });
  } finally {
    await resetLogging();
  }
  assert.ok(sink.records.length >= 3);
  const logged = sink.records.map((record) =>
    JSON.stringify(record.message) + Deno.inspect(record.properties, {
      depth: 10,
    }) + JSON.stringify(record.properties)
  ).join("\n");
  assert.match(logged, new RegExp(key.did));
  for (const secret of [passphrase, seedHex, seedBase64, pemBody]) {
    assert.ok(!logged.includes(secret), `the log contains ${secret}`);
  }
});

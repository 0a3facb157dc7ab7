/**
 * `SECRETS_KEY` at startup, through `main.ts` as a subprocess: refused
 * deployed without it, a warning locally, and a rotation finished by
 * `--initialize` with `SECRETS_KEY_PREVIOUS`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { deriveSecretKey, isSealed } from "../lib/secrets.ts";
import { RECIPES } from "../recipes/mod.ts";
import { createCharm } from "../store/charms.ts";
import { cellKey } from "../store/keys.ts";
import { runMain, startService } from "./service_process.ts";
import { SPACE } from "./test_deps.ts";

const OLD_KEY = "startup-old-key-0123456789abcdef-0123";
const NEW_KEY = "startup-new-key-0123456789abcdef-0123";

Deno.test("main.ts refuses to start deployed without SECRETS_KEY, in one line", async () => {
  const { code, stdout, stderr } = await runMain([], {
    KV_PATH: ":memory:",
    DENO_DEPLOYMENT_ID: "test-deployment",
    OPERATOR_PASS: "a deployed operator passphrase",
  });
  assert.equal(code, 2, stderr);
  assert.equal(stdout, "");
  const lines = stderr.trim().split("\n");
  assert.equal(lines.length, 1, stderr);
  assert.match(lines[0]!, /^error: SECRETS_KEY: not set; .*Deno Deploy/);
});

Deno.test("main.ts warns locally that secrets are stored in plaintext without SECRETS_KEY", async () => {
  await using service = await startService(["--integration=manual"], {
    KV_PATH: ":memory:",
  });
  assert.match(
    service.output(),
    /SECRETS_KEY is not set: OAuth tokens .* stored in plaintext/,
  );
});

Deno.test("main.ts --initialize with SECRETS_KEY_PREVIOUS re-encrypts every secret under the new key", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bcs.sqlite3`;
    const ref = { space: SPACE, charmId: "mail" };
    const old = { current: await deriveSecretKey(OLD_KEY), previous: null };
    {
      using kv = await Deno.openKv(path);
      await createCharm(
        kv,
        ref,
        RECIPES.get("gmail-importer")!,
        {
          auth: { token: "ya29.startup", refreshToken: "1//startup" },
        },
        Date.now(),
        old,
      );
    }
    const { code, stdout, stderr } = await runMain(
      ["--initialize", "--integration=manual"],
      { KV_PATH: path, SECRETS_KEY: NEW_KEY, SECRETS_KEY_PREVIOUS: OLD_KEY },
    );
    assert.equal(code, 0, stderr);
    const kid = (await deriveSecretKey(NEW_KEY)).kid;
    assert.match(
      stdout,
      new RegExp(
        `^secrets: 1 charm\\(s\\) with secret fields, 1 cell\\(s\\) re-encrypted with key ${kid}, 0 unreadable$`,
        "m",
      ),
    );
    using kv = await Deno.openKv(path);
    const stored = (await kv.get<{ auth: Record<string, unknown> }>(
      cellKey(ref, "argument"),
    )).value!;
    for (const field of [stored.auth.token, stored.auth.refreshToken]) {
      assert.ok(isSealed(field) && field.kid === kid, JSON.stringify(field));
    }
    assert.ok(!JSON.stringify(stored).includes("startup"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

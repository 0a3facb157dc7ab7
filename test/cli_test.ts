import assert from "node:assert/strict";
import { runMain } from "./service_process.ts";

Deno.test("main.ts exits 2 with one clear line for bad flags and variables", async (t) => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--interval=abc"], {}, /^error: --interval: "abc" is not a whole number/],
    [["--interval=0"], {}, /^error: --interval: 0 is out of range/],
    [["--failures=-1"], {}, /^error: --failures: -1 is out of range/],
    [["--frobnicate"], {}, /^error: --frobnicate: unknown option; see --help/],
    [
      ["--integration=slack"],
      {},
      /^error: --integration: "slack" is not an integration; use one or more of gcal, gmail, manual/,
    ],
    [
      ["--charms=nodid"],
      {},
      /^error: --charms: "nodid" is not <space>\/<charmId>/,
    ],
    [
      ["--charms=did:key:z123/x"],
      {},
      /^error: --charms: "did:key:z123" is not an Ed25519 did:key/,
    ],
    [
      [],
      { CYCLE_INTERVAL_MS: "abc" },
      /^error: CYCLE_INTERVAL_MS: "abc" is not a whole number/,
    ],
    [
      [],
      { LOG_LEVEL: "chatty" },
      /^error: LOG_LEVEL: "chatty" is not a log level/,
    ],
    [
      [],
      { KV_PATH: "/proc/no-such-dir/kv.sqlite3" },
      /^error: KV_PATH: cannot open \/proc\/no-such-dir\/kv\.sqlite3: /,
    ],
  ];
  for (const [args, env, expected] of cases) {
    await t.step(`${args.join(" ")}${JSON.stringify(env)}`, async () => {
      const { code, stdout, stderr } = await runMain(args, {
        KV_PATH: ":memory:",
        ...env,
      });
      assert.equal(code, 2, stderr);
      assert.equal(stdout, "");
      const lines = stderr.trim().split("\n");
      assert.equal(lines.length, 1, `one line, got:\n${stderr}`);
      assert.match(lines[0]!, expected);
      assert.doesNotMatch(stderr, /\bat .*\.ts:\d+/, "no stack trace");
    });
  }
});

Deno.test("main.ts --help prints the usage with the available integrations and exits 0", async () => {
  const { code, stdout } = await runMain(["--help"]);
  assert.equal(code, 0);
  assert.match(stdout, /^Background Charm Service/);
  assert.match(stdout, /--charms=<space\/charm>/);
  for (const id of ["gmail", "gcal", "manual"]) {
    assert.match(stdout, new RegExp(`^  ${id}\\s`, "m"));
  }
});

Deno.test("main.ts --initialize creates the registries idempotently and reports missing Google config", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const env = {
      KV_PATH: `${dir}/kv.sqlite3`,
      GOOGLE_CLIENT_ID: "",
      GOOGLE_CLIENT_SECRET: "",
    };
    const first = await runMain(
      ["--initialize", "--integration=gmail,manual"],
      env,
    );
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^gmail: created the charm registry$/m);
    assert.match(
      first.stdout,
      /^gmail: missing GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET/m,
    );
    assert.match(first.stdout, /^manual: created the charm registry$/m);
    const second = await runMain(["--initialize", "--integration=manual"], env);
    assert.equal(second.code, 0);
    assert.match(second.stdout, /^manual: the charm registry already exists$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

import assert from "node:assert/strict";
import { ConfigError } from "../lib/errors.ts";
import { DEFAULTS, loadConfig, usage } from "./config.ts";

const IDS = ["gcal", "gmail", "manual"];
const SPACE = "did:key:z6Mkj5HyygpAVo2baUcx7kwTRoUbbBmk5egUQPHnV8arQ3SY";

Deno.test("loadConfig() applies the defaults", () => {
  const config = loadConfig([], {}, IDS);
  assert.equal(config.intervalMs, 60_000);
  assert.equal(config.maxConsecutiveFailures, 5);
  assert.equal(config.logIntervalMs, 300_000);
  assert.deepEqual(config.integrations, ["gmail"]);
  assert.equal(config.maxConcurrentJobs, 5);
  assert.equal(config.maxRetries, 3);
  assert.equal(config.charmExecutionTimeoutMs, 30_000);
  assert.equal(config.port, 8000);
  assert.equal(config.kvPath, DEFAULTS.kvPath);
  assert.equal(config.logLevel, "info");
  assert.equal(config.adminToken, null);
  assert.equal(config.initialize, false);
});

Deno.test("loadConfig() reads every flag, and flags override variables", () => {
  const env = {
    CYCLE_INTERVAL_MS: "120000",
    MAX_CONSECUTIVE_FAILURES: "9",
    LOG_INTERVAL_MS: "5000",
    MAX_CONCURRENT_JOBS: "7",
    MAX_RETRIES: "1",
    CHARM_EXECUTION_TIMEOUT_MS: "1234",
    PORT: "0",
    KV_PATH: ":memory:",
    LOG_LEVEL: "WARN",
    ADMIN_TOKEN: "s3cret",
  };
  const fromEnv = loadConfig([], env, IDS);
  assert.equal(fromEnv.intervalMs, 120_000);
  assert.equal(fromEnv.maxConsecutiveFailures, 9);
  assert.equal(fromEnv.logIntervalMs, 5_000);
  assert.equal(fromEnv.maxConcurrentJobs, 7);
  assert.equal(fromEnv.maxRetries, 1);
  assert.equal(fromEnv.charmExecutionTimeoutMs, 1234);
  assert.equal(fromEnv.port, 0);
  assert.equal(fromEnv.kvPath, ":memory:");
  assert.equal(fromEnv.logLevel, "warning");
  assert.equal(fromEnv.adminToken, "s3cret");

  const config = loadConfig(
    [
      "--interval=10",
      "--failures=2",
      "--log-interval=30",
      "--max-concurrent=3",
      "--max-retries=0",
      "--integration=gcal,manual",
      "--initialize",
      `--charms=${SPACE}/a,${SPACE}/b`,
    ],
    env,
    IDS,
  );
  assert.equal(config.intervalMs, 10_000);
  assert.equal(config.maxConsecutiveFailures, 2);
  assert.equal(config.logIntervalMs, 30_000);
  assert.equal(config.maxConcurrentJobs, 3);
  assert.equal(config.maxRetries, 0);
  assert.deepEqual(config.integrations, ["gcal", "manual"]);
  assert.equal(config.initialize, true);
  assert.deepEqual(config.charms.map((c) => c.charmId), ["a", "b"]);
});

Deno.test("loadConfig() adds the manual integration when --charms is given", () => {
  const config = loadConfig([`--charms=${SPACE}/a`], {}, IDS);
  assert.deepEqual(config.integrations, ["gmail", "manual"]);
});

Deno.test("loadConfig() rejects bad values with one line naming the option", async (t) => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--interval=abc"], {}, /^--interval: "abc" is not a whole number/],
    [["--interval=0"], {}, /^--interval: 0 is out of range/],
    [
      ["--interval=7"],
      {},
      /^--interval: 7s is not accepted; use a whole number of seconds that divides 60/,
    ],
    [["--interval=90"], {}, /^--interval: 90s is not accepted/],
    [
      [],
      { CYCLE_INTERVAL_MS: "1500" },
      /^CYCLE_INTERVAL_MS: 1500ms is not accepted/,
    ],
    [
      ["--failures=-1"],
      {},
      /^--failures: -1 is out of range; use an integer from 1/,
    ],
    [["--max-concurrent=0"], {}, /^--max-concurrent: 0 is out of range/],
    [["--max-retries=x"], {}, /^--max-retries: "x" is not a whole number/],
    [
      ["--log-interval=1.5"],
      {},
      /^--log-interval: "1.5" is not a whole number/,
    ],
    [["--bogus"], {}, /^--bogus: unknown option; see --help/],
    [["stray"], {}, /^"stray": unexpected argument/],
    [["--interval"], {}, /^--interval: missing value/],
    [
      ["--integration=nope"],
      {},
      /^--integration: "nope" is not an integration; use one or more of gcal, gmail, manual/,
    ],
    [["--integration="], {}, /^--integration: empty/],
    [["--charms=nodash"], {}, /^--charms: "nodash" is not <space>\/<charmId>/],
    [["--charms=did:key:zBAD/x"], {}, /^--charms: "did:key:zBAD" is not/],
    [
      ["--charms=did:web:example.com/x"],
      {},
      /^--charms: .*must start with "did:key:z"/,
    ],
    [
      [`--charms=${SPACE}/bad id`],
      {},
      /^--charms: "bad id" is not a valid charm id/,
    ],
    [[], { PORT: "70000" }, /^PORT: 70000 is out of range/],
    [[], { MAX_RETRIES: "many" }, /^MAX_RETRIES: "many" is not a whole number/],
    [[], { LOG_LEVEL: "loud" }, /^LOG_LEVEL: "loud" is not a log level/],
    [
      [],
      { CHARM_EXECUTION_TIMEOUT_MS: "0" },
      /^CHARM_EXECUTION_TIMEOUT_MS: 0 is out of range/,
    ],
    [
      [],
      { RETRY_BASE_DELAY_MS: "5000", RETRY_MAX_DELAY_MS: "100" },
      /^RETRY_MAX_DELAY_MS: 100 is below/,
    ],
  ];
  for (const [args, env, expected] of cases) {
    await t.step(`${args.join(" ")} ${JSON.stringify(env)}`, () => {
      assert.throws(() => loadConfig(args, env, IDS), (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.match(error.message, expected);
        assert.ok(!error.message.includes("\n"), "one line");
        return true;
      });
    });
  }
});

Deno.test("usage() lists the available integrations and every variable", () => {
  const text = usage([
    { id: "gmail", description: "Gmail things" },
    { id: "manual", description: "Manual things" },
  ], [{
    heading: "Google integrations",
    variables: [{ name: "GOOGLE_CLIENT_ID", description: "OAuth client id" }],
  }]);
  assert.match(
    text,
    /\n\nGoogle integrations:\n {2}GOOGLE_CLIENT_ID\s+OAuth client id$/,
  );
  assert.match(text, /--interval=<seconds>/);
  assert.match(text, /divisor or\s+multiple of 60/);
  assert.match(text, /gmail\s+Gmail things/);
  assert.match(text, /manual\s+Manual things/);
  for (
    const name of [
      "CYCLE_INTERVAL_MS",
      "KV_PATH",
      "LOG_LEVEL",
      "CHARM_EXECUTION_TIMEOUT_MS",
    ]
  ) {
    assert.match(text, new RegExp(name));
  }
});

Deno.test("loadConfig() enables the manual integration for --demo", () => {
  assert.deepEqual(loadConfig(["--demo"], {}, IDS).integrations, [
    "gmail",
    "manual",
  ]);
});

Deno.test("loadConfig() reads INTEGRATIONS and the queue variables", () => {
  const config = loadConfig([], {
    INTEGRATIONS: "manual,gcal",
    QUEUE_DRIVER: "kv",
    QUEUE_WORKER: "cron",
    DRAIN_BUDGET_MS: "2000",
    QUEUE_POLL_MS: "50",
  }, IDS);
  assert.deepEqual(config.integrations, ["manual", "gcal"]);
  assert.equal(config.queueDriver, "kv");
  assert.equal(config.queueWorker, "cron");
  assert.equal(config.drainBudgetMs, 2000);
  assert.equal(config.queuePollMs, 50);
  assert.deepEqual(
    loadConfig(["--integration=gmail"], { INTEGRATIONS: "manual" }, IDS)
      .integrations,
    ["gmail"],
  );
  assert.throws(
    () => loadConfig([], { INTEGRATIONS: "slack" }, IDS),
    /^ConfigError: INTEGRATIONS: "slack" is not an integration/,
  );
  assert.throws(
    () => loadConfig([], { QUEUE_DRIVER: "redis" }, IDS),
    /QUEUE_DRIVER: "redis" is not accepted; use one of native, kv, auto/,
  );
  assert.throws(
    () => loadConfig([], { QUEUE_DRIVER: "native", QUEUE_WORKER: "cron" }, IDS),
    /QUEUE_WORKER: cron needs QUEUE_DRIVER=kv/,
  );
  assert.throws(
    () => loadConfig([], { DRAIN_BUDGET_MS: "60000" }, IDS),
    /DRAIN_BUDGET_MS: 60000 is out of range/,
  );
});

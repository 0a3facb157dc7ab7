/**
 * The dashboard in a real browser: Debian's chromium driven by
 * playwright-core (in `test/dashboard_browser.ts`, a process of its own:
 * playwright needs `--allow-sys`) against the real service as a subprocess.
 * `.ci/run` installs chromium, and in CI (`CI` set) a missing chromium fails
 * the test. Elsewhere, without `/usr/bin/chromium`, the test is reported as
 * ignored, so `deno task test` works on a machine with only Node.js.
 * A screenshot is saved to `test/artifacts/dashboard.png`.
 */
import assert from "node:assert/strict";
import { startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";

const ADMIN_TOKEN = "dashboard-test-token";
const ARTIFACTS = new URL("./artifacts/", import.meta.url).pathname;
const DRIVER = new URL("./dashboard_browser.ts", import.meta.url).pathname;

const CHROMIUM = "/usr/bin/chromium";
let hasChromium = false;
try {
  hasChromium = Deno.statSync(CHROMIUM).isFile;
} catch {
  // Not installed.
}

Deno.test({
  ignore: !hasChromium && !Deno.env.get("CI"),
  name:
    "dashboard in chromium: shows a registered charm, run now changes its last run, and it works without JavaScript",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    try {
      // --interval=3600: no scheduled run in the test's time, only ours.
      await using service = await startService(
        ["--integration=manual", "--interval=3600", "--log-interval=3600"],
        {
          KV_PATH: `${dir}/kv.sqlite3`,
          ADMIN_TOKEN,
          // An ADMIN_TOKEN refuses the public development identity.
          OPERATOR_PASS: "dashboard test operator",
          LOG_LEVEL: "info",
        },
      );
      const operator = {
        "content-type": "application/json",
        authorization: `Bearer ${ADMIN_TOKEN}`,
      };
      // The startup fan-out covers the slot in progress: a charm registered
      // before it lists the registry runs at once, and its row would not
      // start at "never". Register once it is over.
      await waitFor("the startup fan-out", async () => {
        const status = await service.json("/api/status", { headers: operator });
        return status.body.lastCycleEnd !== null;
      });
      for (
        const [path, body] of [
          ["/api/charms", { space: SPACE, recipe: "counter", charmId: "c1" }],
          ["/api/integrations/manual/charms", { space: SPACE, charmId: "c1" }],
        ] as const
      ) {
        const res = await service.json(path, {
          method: "POST",
          headers: operator,
          body: JSON.stringify(body),
        });
        assert.ok(res.status < 300, JSON.stringify(res.body));
      }
      const driver = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-all",
          DRIVER,
          service.url,
          ADMIN_TOKEN,
          SPACE,
          "c1",
          `${dir}/profiles`,
          `${ARTIFACTS}dashboard.png`,
        ],
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const decoder = new TextDecoder();
      const output = decoder.decode(driver.stdout) +
        decoder.decode(driver.stderr);
      assert.equal(
        driver.code,
        0,
        // The browser's failure last: CI shows the tail of long output.
        `--- service output ---\n${service.output()}\n--- browser ---\n${output}`,
      );
      assert.match(output, /dashboard checks passed/);
      await Deno.stat(`${ARTIFACTS}dashboard.png`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

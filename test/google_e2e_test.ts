/**
 * End to end: the real service as a subprocess with
 * `--integration=gmail,gcal`, pointed at the fake Google on loopback. Two
 * importer charms are created and registered over HTTP with only a refresh
 * token; the service refreshes their tokens, imports mail and events, then
 * picks up changes incrementally. And the Google variables at startup: a
 * malformed one stops any process, a missing one does not.
 */
import assert from "node:assert/strict";
import { startFakeGoogle } from "./fake_google.ts";
import { runMain, startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";

const HOUR = 3600_000;

/** Every Google variable unset (empty), whatever the test runner's are. */
const NO_GOOGLE_ENV: Record<string, string> = {
  GOOGLE_CLIENT_ID: "",
  GOOGLE_CLIENT_SECRET: "",
  GOOGLE_TOKEN_URL: "",
  GMAIL_API_URL: "",
  GCAL_API_URL: "",
  TOOLSHED_API_URL: "",
};

/**
 * Starts `main.ts` expecting it to exit before listening; returns what it
 * printed and its exit code. A service that starts instead is stopped and
 * the test fails (it never waits on a process that keeps running).
 */
async function expectRefusal(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; output: string }> {
  const started = await startService(args, {
    KV_PATH: ":memory:",
    ...NO_GOOGLE_ENV,
    ...env,
  }).catch((error: Error) => error);
  if (!(started instanceof Error)) {
    await started.stop("SIGKILL");
    assert.fail(`the service started:\n${started.output()}`);
  }
  const match = /^service exited with (\d+) before listening:\n([^]*)$/.exec(
    started.message,
  );
  if (match === null) throw started;
  return { code: Number(match[1]), output: match[2]! };
}

Deno.test("main.ts refuses to start with a malformed Google variable, in one line", async () => {
  // gmail is the default integration; a manual-only process can run a
  // Google charm by hand, so it refuses too.
  for (const args of [[], ["--integration=manual"]]) {
    const refused = await expectRefusal(args, { GMAIL_API_URL: "gmail" });
    assert.equal(refused.code, 2, refused.output);
    assert.equal(
      refused.output.trim(),
      'error: GMAIL_API_URL: "gmail" is not a URL',
    );
  }

  const secret = "GOCSPX-e2e-s3cr3t";
  const gcal = await expectRefusal(["--integration=gcal,manual"], {
    GOOGLE_CLIENT_ID: "123-e2e.apps.googleusercontent.com",
    GOOGLE_CLIENT_SECRET: `${secret}\n`,
    GOOGLE_TOKEN_URL: "http://oauth2.example.com/token",
  });
  assert.equal(gcal.code, 2, gcal.output);
  assert.equal(
    gcal.output.trim(),
    "error: GOOGLE_CLIENT_SECRET: has leading or trailing whitespace; set it to the value exactly as the Google Cloud console shows it; " +
      'GOOGLE_TOKEN_URL: "http://oauth2.example.com/token" must be https (plain http only on a loopback host)',
  );
  assert.ok(!gcal.output.includes(secret), "the secret was printed");
});

Deno.test({
  name:
    "main.ts starts gmail with its Google configuration missing; --initialize reports it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using service = await startService(["--integration=gmail,gcal"], {
      KV_PATH: ":memory:",
      ...NO_GOOGLE_ENV,
    });
    assert.equal(await service.stop("SIGTERM"), 0, service.output());
    // --initialize reports what is malformed and missing, and exits 0.
    const { code, stdout, stderr } = await runMain(
      ["--initialize", "--integration=gmail"],
      { KV_PATH: ":memory:", ...NO_GOOGLE_ENV, GMAIL_API_URL: "gmail" },
    );
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^gmail: GMAIL_API_URL: "gmail" is not a URL$/m);
    assert.match(
      stdout,
      /^gmail: missing GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET: /m,
    );
    // Without gmail or gcal, the malformed variable (which stops `start`) is
    // still reported; the missing ones are not needed there.
    const manual = await runMain(
      ["--initialize", "--integration=manual"],
      { KV_PATH: ":memory:", ...NO_GOOGLE_ENV, GMAIL_API_URL: "gmail" },
    );
    assert.equal(manual.code, 0, manual.stderr);
    assert.match(
      manual.stdout,
      /^google: GMAIL_API_URL: "gmail" is not a URL$/m,
    );
    assert.doesNotMatch(manual.stdout, /missing GOOGLE_CLIENT_ID/);
  },
});

Deno.test({
  name:
    "service with --integration=gmail,gcal imports mail and events into charms and keeps them current",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    await using google = startFakeGoogle();
    const refreshToken = "1//e2e-refresh-token";
    google.grant(refreshToken);
    const now = Date.now();
    for (let i = 1; i <= 3; i++) {
      google.mailbox.add({
        id: `mail-${i}`,
        subject: `Hello ${i}`,
        internalDate: now - i * HOUR,
      });
      google.calendar.put({
        id: `event-${i}`,
        summary: `Meeting ${i}`,
        start: { dateTime: new Date(now + i * HOUR).toISOString() },
        end: { dateTime: new Date(now + i * HOUR + HOUR / 2).toISOString() },
      });
    }
    const service = await startService(
      ["--integration=gmail,gcal", "--interval=2", "--log-interval=3600"],
      {
        ...google.env(),
        KV_PATH: `${dir}/kv.sqlite3`,
        LOG_LEVEL: "info",
        RETRY_BASE_DELAY_MS: "20",
        RETRY_MAX_DELAY_MS: "100",
        CHARM_EXECUTION_TIMEOUT_MS: "5000",
      },
    );
    try {
      const post = (path: string, body: unknown) =>
        service.json(path, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      for (
        const [charmId, recipe, integration] of [
          ["mail", "gmail-importer", "gmail"],
          ["calendar", "gcal-importer", "gcal"],
        ]
      ) {
        const created = await post("/api/charms", {
          space: SPACE,
          recipe,
          charmId,
          argument: { auth: { refreshToken } },
        });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        const registered = await post(
          `/api/integrations/${integration}/charms`,
          { space: SPACE, charmId },
        );
        assert.equal(registered.status, 200, JSON.stringify(registered.body));
      }
      const fanout = await post("/api/fanout", {});
      assert.equal(fanout.status, 200, JSON.stringify(fanout.body));

      const charm = async (charmId: string) =>
        (await service.json(`/api/charms/${SPACE}/${charmId}`)).body;
      const mail = await waitFor("the mail import", async () => {
        const body = await charm("mail");
        return body.cells.result.emails.length === 3 ? body : null;
      });
      assert.deepEqual(
        mail.cells.result.emails.map((e: { subject: string }) => e.subject),
        ["Hello 1", "Hello 2", "Hello 3"],
      );
      assert.equal(mail.status, "ok");
      assert.equal(mail.cells.argument.auth.token, "[redacted]");
      assert.equal(mail.cells.argument.auth.refreshToken, "[redacted]");
      const calendar = await waitFor("the calendar import", async () => {
        const body = await charm("calendar");
        return body.cells.result.events.length === 3 ? body : null;
      });
      assert.deepEqual(
        calendar.cells.result.events.map((e: { summary: string }) => e.summary),
        ["Meeting 1", "Meeting 2", "Meeting 3"],
      );

      // Changes at Google arrive through incremental syncs on later slots.
      google.mailbox.add({
        id: "mail-new",
        subject: "Fresh",
        internalDate: now,
      });
      google.mailbox.remove("mail-3");
      google.calendar.cancel("event-2");
      await waitFor("the incremental mail sync", async () => {
        const { emails } = (await charm("mail")).cells.result;
        return emails.map((e: { id: string }) => e.id).join() ===
          "mail-new,mail-1,mail-2";
      });
      await waitFor("the incremental calendar sync", async () => {
        const { events } = (await charm("calendar")).cells.result;
        return events.map((e: { id: string }) => e.id).join() ===
          "event-1,event-3";
      });
      const synced = (await charm("mail")).cells.result;
      assert.equal(synced.fullSyncs, 1);
      assert.ok(synced.incrementalSyncs >= 1);

      // One refresh per charm: each token is good for an hour.
      assert.equal(google.count("token"), 2);
      assert.equal(await service.stop("SIGTERM"), 0);
      const output = service.output();
      for (const secret of [...google.issuedTokens, refreshToken]) {
        assert.ok(!output.includes(secret), "a token reached the logs");
      }
    } finally {
      await service[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

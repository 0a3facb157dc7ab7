/**
 * End to end: the real service as a subprocess with
 * `--integration=gmail,gcal`, pointed at the fake Google on loopback. Two
 * importer charms are created and registered over HTTP with only a refresh
 * token; the service refreshes their tokens, imports mail and events, then
 * picks up changes incrementally.
 */
import assert from "node:assert/strict";
import { startFakeGoogle } from "./fake_google.ts";
import { startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";

const HOUR = 3600_000;

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

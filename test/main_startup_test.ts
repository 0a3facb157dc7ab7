/**
 * `main.ts` as a subprocess: an address it cannot listen on is refused in
 * one line naming the setting, with no stack trace; and requests leave
 * nothing of the runtime's own in the service's output.
 *
 * @module
 */
import assert from "node:assert/strict";
import { runMain, startService } from "./service_process.ts";

for (
  const host of [
    "not_a_host!!", // not a host name
    "host.invalid", // does not resolve (RFC 2606 reserves .invalid)
    "192.0.2.1", // TEST-NET-1: not an address of this machine
  ]
) {
  Deno.test(`main.ts refuses HOST=${host} in one line naming HOST, exit 2`, async () => {
    const { code, stderr } = await runMain(["--integration=manual"], {
      KV_PATH: ":memory:",
      HOST: host,
      PORT: "0",
      // A HOST beyond loopback needs a real operator identity first.
      OPERATOR_PASS: "a startup test passphrase",
    });
    assert.equal(code, 2, stderr);
    const errors = stderr.trim().split("\n").filter((line) =>
      line.startsWith("error") || /^\s+at /.test(line)
    );
    assert.equal(errors.length, 1, stderr);
    assert.match(
      errors[0]!,
      new RegExp(
        `^error: HOST: cannot listen on ${
          host.replace(/[.!]/g, "\\$&")
        }:0: \\S`,
      ),
    );
  });
}

Deno.test("main.ts refuses a PORT in use in one line naming PORT, exit 1", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  const { code, stderr } = await runMain(["--integration=manual"], {
    KV_PATH: ":memory:",
    HOST: "127.0.0.1",
    PORT: String(port),
  });
  assert.equal(code, 1, stderr);
  assert.match(
    stderr,
    new RegExp(`^error: PORT: 127\\.0\\.0\\.1:${port} is already in use`, "m"),
  );
  assert.doesNotMatch(stderr, /^\s+at /m);
});

Deno.test("main.ts: a POST without a body leaves no runtime warning in the output", async () => {
  await using service = await startService(["--integration=manual"], {
    KV_PATH: ":memory:",
  });
  // curl -X POST sends neither a body nor a content-length.
  const response = await fetch(`${service.url}/api/fanout`, {
    method: "POST",
    body: new ReadableStream({ start: (c) => c.close() }),
  });
  assert.equal(response.status, 200, await response.text());
  // Stopping drains the output: all of it is there to look at.
  assert.equal(await service.stop(), 0);
  assert.match(service.output(), /Stopped/);
  assert.doesNotMatch(service.output(), /legacy|unstable-no-legacy-abort/);
});

Deno.test("main.ts: the open-API warning names the port it listens on, and fan-outs name their integration", async () => {
  // PORT=0: the system picks the port.
  await using service = await startService(["--integration=manual"], {
    KV_PATH: ":memory:",
    PORT: "0",
  });
  const port = new URL(service.url).port;
  assert.notEqual(port, "0");
  // A fan-out after the start's own: it logs when it is done.
  const response = await fetch(`${service.url}/api/fanout`, { method: "POST" });
  assert.equal(response.status, 200, await response.text());
  assert.equal(await service.stop(), 0);
  assert.match(
    service.output(),
    new RegExp(
      `ADMIN_TOKEN is not set: requests to localhost:${port} from this machine act as the operator`,
    ),
  );
  assert.match(service.output(), /Fan-out of manual enqueued \d+ runs/);
  // The settings in effect, in words (the defaults here).
  assert.match(
    service.output(),
    /Policy: each charm runs every 60 s; a failed run is retried 3 times; 5 failed slots in a row disable a charm; a run times out after 30 s/,
  );
});

Deno.test("main.ts warns at startup when gmail runs without a Google OAuth client", async () => {
  await using gmail = await startService(["--integration=gmail"], {
    KV_PATH: ":memory:",
  });
  assert.equal(await gmail.stop(), 0);
  assert.match(
    gmail.output(),
    /\[WRN\] bcs·main: gmail: GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET not set: Google tokens cannot be refreshed/,
  );
  await using manual = await startService(["--integration=manual"], {
    KV_PATH: ":memory:",
  });
  assert.equal(await manual.stop(), 0);
  assert.match(manual.output(), /Stopped/);
  assert.doesNotMatch(manual.output(), /GOOGLE_CLIENT_ID/);
});

Deno.test("main.ts refuses the public development identity on a HOST beyond loopback, before listening", async () => {
  // Refused before Deno.serve: nothing listens on 0.0.0.0.
  const { code, stderr } = await runMain(["--integration=manual"], {
    KV_PATH: ":memory:",
    HOST: "0.0.0.0",
    PORT: "0",
    ADMIN_TOKEN: "an admin token set, IDENTITY forgotten",
  });
  assert.equal(code, 2, stderr);
  const errors = stderr.trim().split("\n").filter((line) =>
    line.startsWith("error")
  );
  assert.equal(errors.length, 1, stderr);
  assert.match(
    errors[0]!,
    /^error: IDENTITY: not set, nor OPERATOR_PASS; the development identity is refused when HOST \(0\.0\.0\.0\) is not a loopback address/,
  );
  assert.doesNotMatch(stderr, /Listening on/);
});

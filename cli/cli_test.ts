/**
 * The CLI as a subprocess (`deno run cli/main.ts`, the `charms` task's
 * permissions) against the HTTP app served on 127.0.0.1, port 0.
 */
import assert from "node:assert/strict";
import { Identity } from "../identity/identity.ts";
import {
  ADMIN_TOKEN,
  createCounter,
  type Harness,
  harness,
  otherSpaceIdentity,
} from "../http/test_harness.ts";
import { OTHER_SPACE, SPACE } from "../test/test_deps.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;
const OPERATOR = { authorization: `Bearer ${ADMIN_TOKEN}` };

interface Served extends AsyncDisposable {
  h: Harness;
  url: string;
  /**
   * Paths the server accepts but never answers while the test runs (the
   * requests end when the server is disposed).
   */
  silent: Set<string>;
  /** Runs the CLI; `BCS_URL` points at this server unless `env` says else. */
  cli(
    args: string[],
    env?: Record<string, string>,
  ): Promise<{ code: number; stdout: string; stderr: string }>;
}

/**
 * A CLI that runs this long has hung: it is killed so that the test fails
 * instead of waiting forever. Not a timing assertion: nothing here comes
 * near it.
 */
const HUNG_CLI_MS = 60_000;

async function _serve(): Promise<Served> {
  // The harness clock is fixed in 2025; tokens minted by the CLI use real
  // time, so the served app reads the real clock.
  const h = await harness({ adminToken: ADMIN_TOKEN, startedAt: Date.now() });
  h.clock.t = Date.now();
  const silent = new Set<string>();
  const disposed = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      if (!silent.has(new URL(request.url).pathname)) {
        return await h.app.fetch(request);
      }
      await disposed.promise;
      return new Response(null, { status: 503 });
    },
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  return {
    h,
    url,
    silent,
    async cli(args, env = {}) {
      const hung = new AbortController();
      const timer = setTimeout(() => hung.abort(), HUNG_CLI_MS);
      try {
        const output = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-net",
            "--allow-env",
            "--allow-read",
            MAIN,
            ...args,
          ],
          env: { NO_COLOR: "1", BCS_URL: url, BCS_TOKEN: "", ...env },
          stdout: "piped",
          stderr: "piped",
          signal: hung.signal,
        }).output();
        assert.ok(!hung.signal.aborted, `the CLI hung: ${args.join(" ")}`);
        const decoder = new TextDecoder();
        return {
          code: output.code,
          stdout: decoder.decode(output.stdout),
          stderr: decoder.decode(output.stderr),
        };
      } finally {
        clearTimeout(timer);
      }
    },
    async [Symbol.asyncDispose]() {
      disposed.resolve();
      await server.shutdown();
      await h[Symbol.asyncDispose]();
    },
  };
}

function _ok(result: { code: number; stdout: string; stderr: string }) {
  assert.equal(result.code, 0, `exit ${result.code}: ${result.stderr}`);
  return result.stdout;
}

Deno.test("charms CLI: create, register, list, show, run, disable, enable, status as the operator", async () => {
  await using s = await _serve();
  const op = ["--token", ADMIN_TOKEN];
  assert.match(
    _ok(
      await s.cli([
        "create",
        ...op,
        `--space=${SPACE}`,
        "--recipe=counter",
        "--charm-id=c1",
        '--argument={"step":2}',
      ]),
    ),
    new RegExp(`^created ${SPACE}/c1$`, "m"),
  );
  assert.match(
    _ok(await s.cli(["register", ...op, "manual", `${SPACE}/c1`])),
    /^registered .*\/c1 with manual$/m,
  );
  const list = _ok(await s.cli(["list", ...op]));
  const [heading, row] = list.trim().split("\n");
  assert.match(
    heading!,
    /^STATUS\s+SPACE\/CHARM\s+RECIPE\s+LAST RUN\s+FAILS\s+LAST ERROR$/,
  );
  assert.match(
    row!,
    new RegExp(`^ok\\s+${SPACE}/c1\\s+counter\\s+never\\s+0$`),
  );
  const show = _ok(await s.cli(["show", ...op, `${SPACE}/c1`]));
  assert.match(show, /^integrations\s+manual$/m);
  assert.match(show, /^argument\s+\{"step":2\}$/m);
  assert.match(
    _ok(await s.cli(["run", ...op, `${SPACE}/c1`])),
    /^enqueued run [0-9a-f-]+$/m,
  );
  assert.equal(s.h.sent.length, 1);
  assert.match(
    _ok(await s.cli(["disable", ...op, `${SPACE}/c1`])),
    /^disabled: status disabled$/m,
  );
  assert.match(
    _ok(await s.cli(["enable", ...op, `${SPACE}/c1`])),
    /^enabled: status ok$/m,
  );

  const status = _ok(await s.cli(["status"], { BCS_TOKEN: ADMIN_TOKEN }));
  assert.match(status, /^charms\s+1 total, 1 enabled, 0 disabled$/m);
  assert.match(status, /^health\s+ok$/m);
  assert.match(status, /^queue\s+native, 0 running$/m);
  assert.match(status, new RegExp(`^ok\\s+${SPACE}/c1\\s+counter`, "m"));

  const json = JSON.parse(_ok(await s.cli(["list", ...op, "--json"])));
  assert.deepEqual(json.charms.map((c: { charmId: string }) => c.charmId), [
    "c1",
  ]);
});

Deno.test("charms CLI: status without a token shows the public counts only", async () => {
  await using s = await _serve();
  await createCounter(s.h, "c1", SPACE, OPERATOR);
  const out = _ok(await s.cli(["status"]));
  assert.match(out, /^charms\s+1 total/m);
  assert.match(out, /operator only/);
  assert.doesNotMatch(out, /^queue/m);
});

Deno.test("charms CLI: token mints a JWS the service accepts for the identity's own space only", async () => {
  await using s = await _serve();
  await createCounter(s.h, "mine", SPACE, OPERATOR);
  await createCounter(s.h, "theirs", OTHER_SPACE, OPERATOR);
  // The audience comes from /health.
  const token = _ok(await s.cli(["token", "--passphrase", "common user"]))
    .trim();
  assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
  const get = (path: string) =>
    fetch(`${s.url}${path}`, { headers: { authorization: `Bearer ${token}` } })
      .then(async (r) => ({ status: r.status, body: await r.json() }));
  assert.equal((await get(`/api/charms/${SPACE}/mine`)).status, 200);
  const refused = await get(`/api/charms/${OTHER_SPACE}/theirs`);
  assert.equal(refused.status, 403);

  // --derive and --json; the derived identity owns OTHER_SPACE.
  const minted = JSON.parse(_ok(
    await s.cli([
      "token",
      "--passphrase=common user",
      "--derive=toolshed-system",
      "--ttl=60",
      "--json",
    ]),
  ));
  assert.equal(minted.iss, (await otherSpaceIdentity()).did);
  assert.equal(minted.aud, s.h.serviceDid);
  assert.equal(minted.exp - minted.iat, 60);

  // Other commands mint a token themselves from --passphrase.
  const list = _ok(
    await s.cli(["list", `--space=${SPACE}`], {
      BCS_PASSPHRASE: "common user",
    }),
  );
  assert.match(list, /\/mine\s+counter/);
  const other = await s.cli([
    "list",
    `--space=${OTHER_SPACE}`,
    "--passphrase=common user",
  ]);
  assert.equal(other.code, 1);
  assert.match(
    other.stderr,
    /^error: GET \/api\/charms\?space=.* failed with 403: Cannot list the charms of space/,
  );
});

Deno.test("charms CLI: token and did read a PKCS#8 key file", async () => {
  await using s = await _serve();
  const key = await Identity.generate();
  const path = await Deno.makeTempFile({ suffix: ".pem" });
  try {
    await Deno.writeTextFile(path, key.toPkcs8Pem());
    assert.equal(
      _ok(await s.cli(["did", `--key-file=${path}`])).trim(),
      key.did,
    );
    const token = _ok(
      await s.cli([
        "token",
        `--key-file=${path}`,
        `--audience=${s.h.serviceDid}`,
      ]),
    ).trim();
    const res = await fetch(`${s.url}/api/charms`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ space: key.did, recipe: "counter" }),
    });
    assert.equal(res.status, 201, await res.text());
    await Deno.writeTextFile(path, "not a key");
    const bad = await s.cli(["token", `--key-file=${path}`]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: --key-file: ".*" is not a PEM key/);
    assert.doesNotMatch(bad.stderr, /not a key"/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("charms CLI: keygen prints a key file whose DID goes to stderr", async () => {
  await using s = await _serve();
  const out = await s.cli(["keygen"]);
  assert.equal(out.code, 0);
  const identity = await Identity.fromPkcs8Pem(out.stdout);
  assert.equal(out.stderr.trim(), `did: ${identity.did}`);
});

Deno.test("charms CLI: bad flags and arguments exit 2, service errors exit 1, each one line", async (t) => {
  await using s = await _serve();
  const cases: [string[], number, RegExp, Record<string, string>?][] = [
    [
      ["list", "--frobnicate"],
      2,
      /^error: --frobnicate: unknown option; see --help$/,
    ],
    [
      ["explode"],
      2,
      /^error: "explode" is not a command; use one of status, list/,
    ],
    [["show"], 2, /^error: expected <space>\/<charmId>, got nothing$/],
    [
      ["show", "did:key:zzz/c1"],
      2,
      /^error: "did:key:zzz" is not an Ed25519 did:key/,
    ],
    [["run", "nodid"], 2, /^error: "nodid" is not <space>\/<charmId>/],
    [["create", "--recipe=counter"], 2, /^error: --space: required$/],
    [
      ["create", "--space=alice", "--recipe=counter"],
      2,
      /^error: --space: "alice" is not a did:key/,
    ],
    [["list", "--limit"], 2, /^error: --limit: missing value/],
    [["token"], 2, /^error: give --passphrase=<p> or --key-file=<pem>$/],
    [
      ["token", "--passphrase=x", "--ttl=7200"],
      2,
      /^error: --ttl: "7200" is not a whole number of seconds from 1 to 3600$/,
    ],
    [["list", "--url=nope"], 2, /^error: --url: "nope" is not a URL$/],
    [
      ["list", "--url=localhost:8000"],
      2,
      /^error: --url: "localhost:8000" is not an http:\/\/ or https:\/\/ URL$/,
    ],
    [
      ["list", "--url=ftp://127.0.0.1/"],
      2,
      /^error: --url: "ftp:\/\/127.0.0.1\/" is not an http:\/\/ or https:\/\/ URL$/,
    ],
    [
      ["list"],
      2,
      /^error: BCS_URL: "localhost:8000" is not an http:\/\/ or https:\/\/ URL$/,
      { BCS_URL: "localhost:8000" },
    ],
    [
      ["token", "--passphrase="],
      2,
      /^error: --passphrase: must not be empty \(is the shell variable you passed unset\?\)$/,
    ],
    [
      ["list", `--space=${SPACE}`, "--passphrase", ""],
      2,
      /^error: --passphrase: must not be empty \(is the shell variable you passed unset\?\)$/,
    ],
    [
      ["list", "--token="],
      2,
      /^error: --token: must not be empty \(is the shell variable you passed unset\?\)$/,
    ],
    [
      ["list", "--limit=0"],
      2,
      /^error: --limit: 0 is out of range; use an integer from 1 to 1000$/,
    ],
    [
      ["list", "--limit=1001", `--token=${ADMIN_TOKEN}`],
      2,
      /^error: --limit: 1001 is out of range; use an integer from 1 to 1000$/,
    ],
    [
      ["dead-letters", "--limit=2.5"],
      2,
      /^error: --limit: "2.5" is not a whole number; use an integer from 1 to 1000$/,
    ],
    [
      ["list", "--status=broken"],
      2,
      /^error: --status: "broken" is not accepted; use one of ok, failing, disabled, needs-reauth$/,
    ],
    [
      ["list", "--status=OK"],
      2,
      /^error: --status: "OK" is not accepted; use one of ok, failing/,
    ],
    [
      ["status", "--timeout=0"],
      2,
      /^error: --timeout: 0 is out of range; use an integer from 1 to 600$/,
    ],
    [
      ["status"],
      2,
      /^error: BCS_TIMEOUT_MS: "soon" is not a whole number; use an integer from 1 to 600000$/,
      { BCS_TIMEOUT_MS: "soon" },
    ],
    [
      ["list"],
      1,
      /^error: GET \/api\/charms failed with 401: missing bearer token/,
    ],
    [
      ["show", `${SPACE}/nope`, `--token=${ADMIN_TOKEN}`],
      1,
      /^error: GET \/api\/charms\/.*\/nope failed with 404: Charm .*\/nope does not exist$/,
    ],
    [
      ["list", "--token=wrong"],
      1,
      /^error: GET \/api\/charms failed with 401: invalid bearer token/,
    ],
    [
      ["status", "--url=http://127.0.0.1:9"],
      1,
      /^error: cannot reach the service at http:\/\/127.0.0.1:9/,
    ],
  ];
  for (const [args, code, error, env] of cases) {
    await t.step(
      `${args.join(" ")}${env ? JSON.stringify(env) : ""}`,
      async () => {
        const out = await s.cli(args, env);
        assert.equal(out.code, code, out.stderr);
        assert.equal(out.stdout, "");
        const lines = out.stderr.trim().split("\n");
        assert.equal(lines.length, 1, `one line, got:\n${out.stderr}`);
        assert.match(lines[0]!, error);
      },
    );
  }
});

Deno.test("charms CLI: a service that does not answer fails each request after --timeout / BCS_TIMEOUT_MS with one line", async (t) => {
  await using s = await _serve();
  const fast = { BCS_TIMEOUT_MS: "200", BCS_TOKEN: ADMIN_TOKEN };
  const noReply = (path: string) =>
    `GET ${path}: no reply from ${s.url} within 200 ms (raise --timeout or BCS_TIMEOUT_MS)`;

  await t.step("status when nothing answers", async () => {
    s.silent.add("/api/status");
    s.silent.add("/health");
    const out = await s.cli(["status"], fast);
    assert.equal(out.code, 1, out.stderr);
    assert.equal(out.stdout, "");
    assert.equal(out.stderr.trim(), `error: ${noReply("/api/status")}`);
  });

  await t.step("status when only /health does not answer", async () => {
    s.silent.delete("/api/status");
    const out = await s.cli(["status"], fast);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^charms\s+0 total/m);
    const health = out.stdout.split("\n").find((l) => l.startsWith("health"));
    assert.equal(
      health?.replace(/^health\s+/, ""),
      `unknown: ${noReply("/health")}`,
    );
  });

  await t.step("token, whose audience comes from /health", async () => {
    const out = await s.cli(["token", "--passphrase=common user"], fast);
    assert.equal(out.code, 1, out.stderr);
    assert.equal(out.stdout, "");
    const lines = out.stderr.trim().split("\n");
    assert.equal(lines.length, 1, out.stderr);
    assert.match(
      lines[0]!,
      /^error: cannot read the service's DID from .*\/health: GET \/health: no reply from .* within 200 ms .*\(give --audience, or set --url\)$/,
    );
  });
});

Deno.test("charms CLI: --help lists every command and exits 0", async () => {
  await using s = await _serve();
  const out = _ok(await s.cli(["--help"]));
  for (
    const command of [
      "status",
      "list",
      "show",
      "create",
      "register",
      "run",
      "enable",
      "disable",
      "token",
    ]
  ) {
    assert.match(out, new RegExp(`^  ${command}\\s`, "m"));
  }
});

Deno.test("charms CLI: delegates, dead-letters and replay", async () => {
  await using s = await _serve();
  const owner = { BCS_PASSPHRASE: "common user" };
  const delegate = (await otherSpaceIdentity()).did;
  assert.match(
    _ok(await s.cli(["delegates", SPACE, `--add=${delegate}`], owner)),
    /^added did:key:/m,
  );
  assert.match(
    _ok(await s.cli(["delegates", SPACE], owner)),
    new RegExp(`^${delegate}\\s`, "m"),
  );
  assert.match(
    _ok(await s.cli(["delegates", SPACE, `--remove=${delegate}`], owner)),
    /^removed /m,
  );
  assert.match(
    _ok(await s.cli(["dead-letters", `--token=${ADMIN_TOKEN}`])),
    /no dead letters/,
  );
  const missing = await s.cli(["replay", "nope", `--token=${ADMIN_TOKEN}`]);
  assert.equal(missing.code, 1);
  assert.match(
    missing.stderr,
    /failed with 404: Dead letter "nope" does not exist/,
  );
});

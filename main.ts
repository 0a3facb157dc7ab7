/**
 * Entrypoint: reads the configuration, opens KV, builds the service, then
 * registers the cron, starts the queue listener and serves HTTP. Logic lives
 * in the modules it wires.
 *
 * @module
 */
import { registerCron } from "./cron.ts";
import { type Config, loadConfig, usage } from "./config/config.ts";
import { createApp } from "./http/app.ts";
import { isExposed, loadIdentity } from "./identity/load_identity.ts";
import {
  assertGoogleConfig,
  GOOGLE_ENV_VARS,
  GOOGLE_INTEGRATION_IDS,
  googleConfigProblems,
  missingGoogleClient,
} from "./integrations/_google_config.ts";
import { INTEGRATIONS } from "./integrations/manifest.ts";
import { ConfigError } from "./lib/errors.ts";
import { logger, setupLogging } from "./lib/log.ts";
import { loadSecretKeys, type SecretKeys } from "./lib/secrets.ts";
import { VERSION } from "./lib/version.ts";
import { chooseQueue, createQueue } from "./queue/select_driver.ts";
import { describeKvPath, openServiceKv } from "./store/open_kv.ts";
import { RECIPES } from "./recipes/mod.ts";
import { createService } from "./service/service.ts";
import {
  describeReencryptReport,
  reencryptSecrets,
} from "./store/cell_codec.ts";

/** Runs a startup step; a `ConfigError` exits 2 with its one line. */
async function orExit<T>(step: () => T | Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`error: ${error.message}`);
    Deno.exit(2);
  }
}

const env = Deno.env.toObject();
const config: Config = await orExit(() =>
  loadConfig(Deno.args, env, INTEGRATIONS.map((i) => i.id))
);
if (config.help) {
  console.log(usage(INTEGRATIONS, [{
    heading: "Google integrations, gmail and gcal (see docs/google.md)",
    variables: GOOGLE_ENV_VARS,
  }]));
  Deno.exit(0);
}
if (!config.initialize) {
  // A malformed Google variable would fail every run of a Google charm, in
  // any process (manual runs); --initialize reports it (with what is
  // missing) instead.
  await orExit(() => assertGoogleConfig(env));
}
// On Deno Deploy, or listening beyond loopback: nothing is granted for
// being local (open access, the development identity, private webhooks).
const exposed = isExposed(env);
// The keys sealing secret cell fields (OAuth tokens) in KV.
const secrets: SecretKeys | null = await orExit(() => loadSecretKeys(env));

await setupLogging(config.logLevel);
const log = logger("main");
const kv = await orExit(() => openServiceKv(config.kvPath));
const ownerId = crypto.randomUUID();
const queueChoice = chooseQueue(config, env);
log.info("Queue driver: {driver} ({reason})", {
  driver: queueChoice.driver,
  reason: queueChoice.reason,
});

/** Re-seals secrets left in plaintext or under `SECRETS_KEY_PREVIOUS`. */
async function reencrypt(keys: SecretKeys): Promise<string> {
  const report = await reencryptSecrets(kv, RECIPES, keys, (ref, error) => {
    logger("main", "secrets").error("{message}", {
      charm: `${ref.space}/${ref.charmId}`,
      message: error.message,
    });
  });
  return describeReencryptReport(report, keys);
}

if (config.initialize) {
  // Needs no identity: it creates registries and re-seals secrets only.
  const setup = createService(config, {
    kv,
    queue: createQueue(kv, queueChoice, config, ownerId),
    allIntegrations: INTEGRATIONS,
    recipes: RECIPES,
    env,
    secrets,
  });
  const lines = await setup.initialize();
  // gmail and gcal report the Google variables themselves; without them a
  // malformed one still stops `start` (assertGoogleConfig), so say it here.
  if (!config.integrations.some((id) => GOOGLE_INTEGRATION_IDS.includes(id))) {
    lines.push(...googleConfigProblems(env).map((line) => `google: ${line}`));
  }
  for (const line of lines) console.log(line);
  if (secrets !== null) console.log(await reencrypt(secrets));
  kv.close();
  Deno.exit(0);
}

// The operator identity: the service's DID, the audience of identity tokens.
const identity = await orExit(() => loadIdentity(env));
const service = createService(config, {
  kv,
  queue: createQueue(kv, queueChoice, config, ownerId),
  worker: queueChoice.worker,
  ownerId,
  allIntegrations: INTEGRATIONS,
  recipes: RECIPES,
  env,
  secrets,
  signer: identity.identity,
});

const cronAbort = new AbortController();
registerCron(async () => {
  try {
    await service.onCron();
  } catch (error) {
    logger("cron").error("Tick failed; Deno.cron retries it: {error}", {
      error: String(error),
    });
    throw error;
  }
}, { signal: cronAbort.signal });

log.info("Service identity {did} (from {source})", {
  did: identity.identity.did,
  source: identity.source,
});
if (secrets === null) {
  log.warn(
    "SECRETS_KEY is not set: OAuth tokens and other secret cell fields are stored in plaintext in KV (local development only; see docs/secrets.md)",
  );
} else {
  log.info("Secret cell fields are encrypted with key {kid}", {
    kid: secrets.current.kid,
  });
}
{
  // `deno task start` runs gmail: without a client it runs nothing useful,
  // which deserves a line at startup, not only in --initialize.
  const google = config.integrations.filter((id) =>
    GOOGLE_INTEGRATION_IDS.includes(id)
  );
  const missing = missingGoogleClient(env);
  if (google.length > 0 && missing.length > 0) {
    log.warn(
      "{integrations}: {missing} not set: Google tokens cannot be refreshed, so a charm's runs fail once its access token expires (see docs/google.md; --integration=manual runs other charms)",
      { integrations: google.join(", "), missing: missing.join(", ") },
    );
  }
}
// Signals are handled from here on, so a SIGTERM during startup is a
// graceful stop too (it waits for startup to finish first).
let server: Deno.HttpServer | null = null;
let starting: Promise<void> = Promise.resolve();
let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info("Received {signal}: stopping", { signal });
  cronAbort.abort();
  await starting.catch(() => {});
  await service.shutdown();
  await server?.shutdown();
  kv.close();
  log.info("Stopped");
  Deno.exit(0);
}
Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));

const startedAt = Date.now();
const app = createApp(service.deps, {
  adminToken: config.adminToken,
  serviceDid: identity.identity.did,
  exposed,
  version: VERSION,
  startedAt,
  healthMaxTickAgeMs: 2 * 60_000 + 30_000,
});
try {
  server = Deno.serve({
    port: config.port,
    hostname: config.host,
    onListen: ({ hostname, port }) => {
      // An IPv6 address goes in brackets in a URL.
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      log.info(
        "Listening on http://{host}:{port} (KV at {kvPath}, integrations: {integrations})",
        {
          host,
          port,
          kvPath: describeKvPath(config.kvPath),
          integrations: config.integrations.join(", "),
        },
      );
      if (config.adminToken === null && !exposed) {
        // The port it listens on: PORT=0 picks one.
        log.warn(
          "ADMIN_TOKEN is not set: requests to localhost:{port} from this machine act as the operator without a token (local development)",
          { port },
        );
      }
    },
  }, app.fetch);
} catch (error) {
  kv.close();
  if (error instanceof Deno.errors.AddrInUse) {
    console.error(
      `error: PORT: ${config.host}:${config.port} is already in use; stop the other process or set PORT`,
    );
    Deno.exit(1);
  }
  // Anything else is the address itself: a HOST that is not a host name or
  // IP, does not resolve, or is not this machine's (or a port the process
  // may not bind). One line naming the setting, as for any bad setting.
  const field = error instanceof Deno.errors.PermissionDenied ? "PORT" : "HOST";
  console.error(
    `error: ${field}: cannot listen on ${config.host}:${config.port}: ${
      error instanceof Error ? error.message : String(error)
    }`,
  );
  Deno.exit(2);
}
starting = service.start();
await starting;
if (secrets?.previous) {
  // A rotation is under way: re-seal everything under the new key in the
  // background, so SECRETS_KEY_PREVIOUS can be dropped once this says done.
  const keys = secrets;
  log.info(
    "SECRETS_KEY_PREVIOUS is set (key {previous}): re-encrypting secrets with key {current}",
    { previous: keys.previous!.kid, current: keys.current.kid },
  );
  reencrypt(keys).then(
    (line) => log.info("Rotation pass done: {line}", { line }),
    (error) =>
      log.error("Rotation pass failed: {error}", { error: String(error) }),
  );
}

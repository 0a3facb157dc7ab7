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
import { isDeployed, loadIdentity } from "./identity/load_identity.ts";
import { INTEGRATIONS } from "./integrations/manifest.ts";
import { ConfigError } from "./lib/errors.ts";
import { logger, setupLogging } from "./lib/log.ts";
import { VERSION } from "./lib/version.ts";
import { chooseQueue, createQueue } from "./queue/select_driver.ts";
import { withBusyRetry } from "./store/busy_retry.ts";
import { RECIPES } from "./recipes/mod.ts";
import { createService } from "./service/service.ts";

const env = Deno.env.toObject();
let config: Config;
try {
  config = loadConfig(Deno.args, env, INTEGRATIONS.map((i) => i.id));
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`error: ${error.message}`);
  Deno.exit(2);
}
if (config.help) {
  console.log(usage(INTEGRATIONS));
  Deno.exit(0);
}
// The operator identity: the service's DID, the audience of identity tokens.
let identity: Awaited<ReturnType<typeof loadIdentity>>;
try {
  identity = await loadIdentity(env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`error: ${error.message}`);
  Deno.exit(2);
}
const deployed = isDeployed(env);

await setupLogging(config.logLevel);
const log = logger("main");
if (config.kvPath !== ":memory:") {
  const dir = config.kvPath.replace(/[^/]*$/, "");
  if (dir !== "") await Deno.mkdir(dir, { recursive: true });
}
// Several processes may share a local KV file: retry SQLite lock contention.
const kv = withBusyRetry(await Deno.openKv(config.kvPath));
const ownerId = crypto.randomUUID();
const queueChoice = chooseQueue(config, env);
log.info("Queue driver: {driver} ({reason})", {
  driver: queueChoice.driver,
  reason: queueChoice.reason,
});
const service = createService(config, {
  kv,
  queue: createQueue(kv, queueChoice, config, ownerId),
  worker: queueChoice.worker,
  ownerId,
  allIntegrations: INTEGRATIONS,
  recipes: RECIPES,
  env,
});

if (config.initialize) {
  for (const line of await service.initialize()) console.log(line);
  kv.close();
  Deno.exit(0);
}

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
if (config.adminToken === null && !deployed) {
  log.warn(
    "ADMIN_TOKEN is not set: the API is open to anyone who can reach port {port} (local development)",
    {
      port: config.port,
    },
  );
}
const startedAt = Date.now();
const app = createApp(service.deps, {
  adminToken: config.adminToken,
  serviceDid: identity.identity.did,
  deployed,
  version: VERSION,
  startedAt,
  healthMaxTickAgeMs: 2 * 60_000 + 30_000,
});
let server: Deno.HttpServer;
try {
  server = Deno.serve({
    port: config.port,
    hostname: config.host,
    onListen: ({ hostname, port }) => {
      log.info(
        "Listening on http://{hostname}:{port} (KV at {kvPath}, integrations: {integrations})",
        {
          hostname,
          port,
          kvPath: config.kvPath,
          integrations: config.integrations.join(", "),
        },
      );
    },
  }, app.fetch);
} catch (error) {
  if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  console.error(
    `error: PORT: ${config.host}:${config.port} is already in use; stop the other process or set PORT`,
  );
  kv.close();
  Deno.exit(1);
}
await service.start();

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info("Received {signal}: stopping", { signal });
  cronAbort.abort();
  await service.shutdown();
  await server.shutdown();
  kv.close();
  log.info("Stopped");
  Deno.exit(0);
}
Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));

/**
 * HTTP: requests per second for `GET /api/status` and `GET
 * /api/charms?limit=50` with 10,000 charms, the app of `http/app.ts` served
 * by `Deno.serve` on 127.0.0.1 (a free port) in this process, and the load
 * from `bench/http_load.ts` in a subprocess, as the operator (admin token).
 *
 * @module
 */
import { createApp } from "../http/app.ts";
import { nativeQueue } from "../queue/native_queue.ts";
import { BENCH_SPACE, benchDeps, serviceKv } from "./bench_deps.ts";
import { type BenchKv, type KvKind, openBenchKv } from "./bench_kv.ts";
import type { LoadResult } from "./http_load.ts";
import { benchRecipes, noopRecipe } from "./recipes.ts";
import { seedCharmsBatched } from "./seed.ts";

/** The endpoints measured. */
export const HTTP_PATHS = ["/api/status", "/api/charms?limit=50"] as const;

const ADMIN_TOKEN = "bench-admin-token";

/** A server over a seeded KV; dispose to stop it. */
export interface HttpTarget extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`. */
  origin: string;
}

/** Seeds `charms` charms into a fresh KV and serves the app over it. */
export async function startHttpTarget(
  kind: KvKind,
  charms: number,
): Promise<HttpTarget> {
  const store: BenchKv = await openBenchKv(kind);
  await seedCharmsBatched(store.kv, { recipe: noopRecipe, count: charms });
  const kv = serviceKv(store.kv);
  const deps = await benchDeps({
    kv,
    queue: nativeQueue(kv),
    recipes: benchRecipes(noopRecipe),
    maxConcurrent: 5,
  });
  const app = createApp(deps, {
    adminToken: ADMIN_TOKEN,
    serviceDid: BENCH_SPACE,
    exposed: false,
    version: "bench",
    startedAt: Date.now(),
    healthMaxTickAgeMs: 150_000,
  });
  const { promise: listening, resolve } = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => resolve(port),
  }, app.fetch);
  const port = await listening;
  return {
    origin: `http://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await store[Symbol.asyncDispose]();
    },
  };
}

/** Runs the load generator once against `url`. */
export async function loadOnce(
  url: string,
  concurrency: number,
  durationMs: number,
): Promise<LoadResult> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      new URL("./http_load.ts", import.meta.url).pathname,
      url,
      String(concurrency),
      String(durationMs),
    ],
    env: { BENCH_TOKEN: ADMIN_TOKEN },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(durationMs + 60_000),
  }).output();
  if (!output.success) {
    throw new Error(
      `The load generator failed (${output.code}): ${
        new TextDecoder().decode(output.stderr).slice(-2000)
      }`,
    );
  }
  const stdout = new TextDecoder().decode(output.stdout).trim();
  const result = JSON.parse(stdout.split("\n").at(-1)!) as LoadResult;
  if (result.errors > 0) {
    throw new Error(
      `${result.errors} of ${result.requests} requests to ${url} failed`,
    );
  }
  return result;
}

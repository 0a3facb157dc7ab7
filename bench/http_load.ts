/**
 * A bounded loopback load generator: `concurrency` loops each fetching `url`
 * one request after another for `durationMs`, after a short warm-up. Runs as
 * its own process so it does not share an event loop with the server.
 *
 * Usage: `deno run -A bench/http_load.ts <url> <concurrency> <durationMs>`
 * with the bearer token in `BENCH_TOKEN`; prints one JSON line of
 * {@linkcode LoadResult}.
 *
 * @module
 */
import { percentile } from "./stats.ts";

/** What one load run measured. */
export interface LoadResult {
  requests: number;
  /** Responses other than 200, and network errors. */
  errors: number;
  elapsedMs: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number };
}

/** Requests sent before timing starts, to warm the server and its JIT. */
export const WARMUP_REQUESTS = 200;

/** Runs the load against `url`. */
export async function load(
  url: string,
  token: string | null,
  concurrency: number,
  durationMs: number,
): Promise<LoadResult> {
  const headers: HeadersInit = token === null
    ? {}
    : { authorization: `Bearer ${token}` };
  const once = async (): Promise<boolean> => {
    try {
      const response = await fetch(url, { headers });
      await response.arrayBuffer();
      return response.status === 200;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < WARMUP_REQUESTS; i += concurrency) {
    await Promise.all(Array.from({ length: concurrency }, once));
  }
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const t = performance.now();
        if (!await once()) errors++;
        latencies.push(performance.now() - t);
      }
    }),
  );
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    errors,
    elapsedMs,
    requestsPerSecond: latencies.length / (elapsedMs / 1000),
    latencyMs: {
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies.at(-1) ?? NaN,
    },
  };
}

if (import.meta.main) {
  const [url, concurrency, durationMs] = Deno.args;
  if (!url || !concurrency || !durationMs) {
    throw new TypeError(
      "usage: http_load.ts <url> <concurrency> <durationMs>",
    );
  }
  const result = await load(
    url,
    Deno.env.get("BENCH_TOKEN") ?? null,
    Number(concurrency),
    Number(durationMs),
  );
  console.log(JSON.stringify(result));
}

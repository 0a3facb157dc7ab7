/**
 * Fan-out at scale: 10,000 and 100,000 charms registered with the `manual`
 * integration on a KV file; one cron tick's fan-out enqueues every due run
 * (one slot at the default 60 s interval). Each repetition runs in a fresh
 * process (`bench/fanout_worker.ts`) on a fresh copy of the seeded file, so
 * its peak RSS is the fan-out's alone and no earlier repetition's queue
 * backlog is in the file.
 *
 * @module
 */
import type { FanoutWorkerResult } from "./fanout_worker.ts";
import { noopRecipe } from "./recipes.ts";
import { seedCharmsBatched, seedDifference } from "./seed.ts";

/** A seeded KV file per size, made once and copied per repetition. */
export interface FanoutTemplates extends AsyncDisposable {
  /** Path of the seeded file for each size. */
  paths: Map<number, string>;
  dir: string;
}

/**
 * Seeds one KV file with the largest size, copying it aside at each smaller
 * size on the way (sizes ascending).
 *
 * @throws {Error} when the batched seeder no longer writes what
 *   `createCharm` + `registerCharm` write.
 */
export async function prepareFanoutTemplates(
  sizes: readonly number[],
  onProgress: (line: string) => void,
): Promise<FanoutTemplates> {
  const difference = await seedDifference(noopRecipe);
  if (difference !== null) {
    throw new Error(`The batched seeder is out of date: ${difference}`);
  }
  const dir = await Deno.makeTempDir({ prefix: "bcs-bench-fanout-" });
  const paths = new Map<number, string>();
  const working = `${dir}/working.sqlite3`;
  let seeded = 0;
  const sorted = [...sizes].sort((a, b) => a - b);
  for (const size of sorted) {
    const kv = await Deno.openKv(working);
    const started = performance.now();
    await seedCharmsBatched(kv, {
      recipe: noopRecipe,
      count: size - seeded,
      from: seeded,
    });
    kv.close();
    onProgress(
      `seeded ${size.toLocaleString("en")} charms (${
        ((performance.now() - started) / 1000).toFixed(1)
      } s)`,
    );
    seeded = size;
    const path = `${dir}/charms_${size}.sqlite3`;
    await _copyKv(working, path);
    paths.set(size, path);
  }
  await _removeKv(working);
  return {
    paths,
    dir,
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Runs one fan-out repetition on a copy of `template`. */
export async function fanoutOnce(
  template: string,
  expected: number,
  timeoutMs: number,
): Promise<FanoutWorkerResult> {
  const path = template.replace(/\.sqlite3$/, "_run.sqlite3");
  await _copyKv(template, path);
  try {
    const command = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        ...(await serviceV8Flags()),
        new URL("./fanout_worker.ts", import.meta.url).pathname,
        path,
      ],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    });
    const output = await command.output();
    const stdout = new TextDecoder().decode(output.stdout);
    if (!output.success) {
      throw new Error(
        `The fan-out worker failed (${output.code}): ${
          new TextDecoder().decode(output.stderr).slice(-2000)
        }`,
      );
    }
    const result = JSON.parse(
      stdout.trim().split("\n").at(-1)!,
    ) as FanoutWorkerResult;
    if (result.enqueued !== expected) {
      throw new Error(
        `The fan-out enqueued ${result.enqueued} runs, expected ${expected}`,
      );
    }
    return result;
  } finally {
    await _removeKv(path);
  }
}

const SQLITE_SUFFIXES = ["", "-wal", "-shm"];

async function _copyKv(from: string, to: string): Promise<void> {
  for (const suffix of SQLITE_SUFFIXES) {
    try {
      await Deno.copyFile(from + suffix, to + suffix);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound) || suffix === "") {
        throw error;
      }
    }
  }
}

async function _removeKv(path: string): Promise<void> {
  for (const suffix of SQLITE_SUFFIXES) {
    await Deno.remove(path + suffix).catch(() => {});
  }
}

/**
 * The V8 flags `deno task start` runs the service with (from `deno.json`), so
 * the fan-out worker's memory is the service's.
 */
export async function serviceV8Flags(): Promise<string[]> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  ) as { tasks: Record<string, string> };
  return config.tasks.start!.split(/\s+/).filter((arg) =>
    arg.startsWith("--v8-flags=")
  );
}

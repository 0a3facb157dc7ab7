/**
 * Opening the KV a measurement runs on: a fresh SQLite file in a temporary
 * directory, or `:memory:`.
 *
 * @module
 */

/** Where a measurement's KV lives. */
export type KvKind = "file" | "memory";

/** An open bench KV; dispose to close it and delete its files. */
export interface BenchKv extends AsyncDisposable {
  kv: Deno.Kv;
  kind: KvKind;
  /** The SQLite file, or `:memory:`. */
  path: string;
}

/**
 * Opens a fresh KV of `kind`. A file KV is `bench.sqlite3` in a new
 * temporary directory, or `path` when given (an existing file to reuse).
 */
export async function openBenchKv(
  kind: KvKind,
  path?: string,
): Promise<BenchKv> {
  let dir: string | null = null;
  if (kind === "file" && path === undefined) {
    dir = await Deno.makeTempDir({ prefix: "bcs-bench-" });
    path = `${dir}/bench.sqlite3`;
  }
  const resolved = kind === "memory" ? ":memory:" : path!;
  const kv = await Deno.openKv(resolved);
  return {
    kv,
    kind,
    path: resolved,
    async [Symbol.asyncDispose]() {
      try {
        kv.close();
      } catch {
        // Already closed by the measurement.
      }
      if (dir !== null) await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A temporary directory, removed on dispose. */
export async function tempDir(): Promise<
  { path: string } & AsyncDisposable
> {
  const path = await Deno.makeTempDir({ prefix: "bcs-bench-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

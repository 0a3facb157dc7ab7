/**
 * Opens the service's Deno KV: a local file (its directory created), a
 * KV Connect URL, `:memory:`, or with no path the platform's default
 * database (Deno Deploy's attached one). The handle retries SQLite lock
 * contention, since several processes may share one local file.
 *
 * @module
 */
import { ConfigError, toError } from "../lib/errors.ts";
import { withBusyRetry } from "./busy_retry.ts";

/**
 * Opens KV at `path` (`null`: the default database).
 *
 * @throws {ConfigError} naming `KV_PATH` when it cannot be opened.
 */
export async function openServiceKv(path: string | null): Promise<Deno.Kv> {
  try {
    if (path === null) return withBusyRetry(await Deno.openKv());
    const local = path !== ":memory:" && !/^https?:\/\//.test(path);
    if (local) {
      const dir = path.replace(/[^/]*$/, "");
      if (dir !== "") await Deno.mkdir(dir, { recursive: true });
    }
    return withBusyRetry(await Deno.openKv(path));
  } catch (error) {
    throw new ConfigError(
      `KV_PATH: cannot open ${describeKvPath(path)}: ${toError(error).message}`,
      { cause: error },
    );
  }
}

/** How to name `path` in logs. */
export function describeKvPath(path: string | null): string {
  return path ?? "the default database";
}

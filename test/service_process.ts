/**
 * Runs `main.ts` as a subprocess for end-to-end tests: the real service on a
 * real KV file, reached over HTTP on loopback. Output is collected so a
 * failing test can show it.
 *
 * @module
 */
import { waitFor } from "./test_deps.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** The permissions `deno task start` grants. */
export const SERVICE_PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
];

/** A running service process. */
export interface ServiceProcess extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` once listening. */
  url: string;
  /** Everything printed so far (stdout and stderr, interleaved by line). */
  output(): string;
  /** Sends a signal and waits (bounded) for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Fetches a path and parses the JSON reply (loosely typed, for tests). */
  json(
    path: string,
    init?: RequestInit,
    // deno-lint-ignore no-explicit-any
  ): Promise<{ status: number; body: any }>;
}

/** Runs `main.ts` with `args` and `env` and returns the output and exit code. */
export async function runMain(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...SERVICE_PERMISSIONS, MAIN, ...args],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code,
    stdout: decoder.decode(stdout),
    stderr: decoder.decode(stderr),
  };
}

/**
 * Starts the service and waits until it listens (bounded). Pass `PORT=0`
 * (the default here) to get a free port.
 */
export async function startService(
  args: string[],
  env: Record<string, string>,
  options: { cwd?: string } = {},
): Promise<ServiceProcess> {
  // With `cwd`, the `main.ts` of that tree (a copy of the project) runs.
  const main = options.cwd === undefined ? MAIN : "main.ts";
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...SERVICE_PERMISSIONS, main, ...args],
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    env: { NO_COLOR: "1", HOST: "127.0.0.1", PORT: "0", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited: number | null = null;
  const status = child.status.then((s) => (exited = s.code));

  const url = await waitFor("the service to listen", () => {
    const match = text.match(/Listening on (http:\/\/127\.0\.0\.1:\d+)/);
    return match?.[1] ?? (exited !== null ? "exited" : null);
  }, 30_000).catch((error) => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    throw error;
  });
  if (url === "exited") {
    await pumps;
    throw new Error(`service exited with ${exited} before listening:\n${text}`);
  }

  async function stop(signal: Deno.Signal = "SIGTERM"): Promise<number> {
    if (exited === null) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const code = await Promise.race([
      status,
      new Promise<null>((resolve) => {
        timer = setTimeout(() => resolve(null), 20_000);
      }),
    ]);
    clearTimeout(timer);
    if (code === null) {
      child.kill("SIGKILL");
      await status;
      throw new Error(
        `service did not exit within 20 s of ${signal}:\n${text}`,
      );
    }
    await pumps;
    return code;
  }

  return {
    url,
    output: () => text,
    stop,
    async json(path, init) {
      const response = await fetch(`${url}${path}`, init);
      const body = await response.json();
      return { status: response.status, body };
    },
    async [Symbol.asyncDispose]() {
      if (exited === null) await stop("SIGKILL").catch(() => {});
    },
  };
}

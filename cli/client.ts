/**
 * The CLI's HTTP client: JSON requests to a running service, with the bearer
 * token, and one error type whose message is the line the CLI prints.
 *
 * @module
 */

/** A failure the CLI reports as one line; `exitCode` 2 for usage, 1 else. */
export class CliError extends Error {
  override name = "CliError";
  readonly exitCode: 1 | 2;

  constructor(message: string, exitCode: 1 | 2, options?: ErrorOptions) {
    super(message, options);
    this.exitCode = exitCode;
  }
}

/** A bad flag, argument or input file (exit 2). */
export function usageError(message: string): CliError {
  return new CliError(message, 2);
}

/** Talks to one service. */
export interface ApiClient {
  /** The service's base URL, without a trailing slash. */
  readonly url: string;
  /**
   * Sends a request and returns the JSON body.
   *
   * @throws {CliError} (exit 1) naming the request and the server's error
   *   when the status is not 2xx, or when the service cannot be reached.
   */
  // deno-lint-ignore no-explicit-any
  request(method: string, path: string, body?: unknown): Promise<any>;
}

/** Options for {@linkcode createClient}. */
export interface ClientOptions {
  url: string;
  /** Resolves the bearer token lazily (minting one may need `/health`). */
  token: () => Promise<string | null>;
  fetch?: typeof fetch;
  /** Per-request timeout, ms. */
  timeoutMs?: number;
}

/** A client for the service at `options.url`. */
export function createClient(options: ClientOptions): ApiClient {
  const url = options.url.replace(/\/+$/, "");
  const doFetch = options.fetch ?? fetch;
  return {
    url,
    async request(method, path, body) {
      const headers: Record<string, string> = { accept: "application/json" };
      const token = await options.token();
      if (token !== null) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers["content-type"] = "application/json";
      let response: Response;
      try {
        response = await doFetch(`${url}${path}`, {
          method,
          headers,
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
        });
      } catch (error) {
        throw new CliError(
          `cannot reach the service at ${url}: ${
            error instanceof Error ? error.message : String(error)
          } (set --url or BCS_URL)`,
          1,
          { cause: error },
        );
      }
      const text = await response.text();
      let json: unknown = null;
      try {
        json = text === "" ? null : JSON.parse(text);
      } catch {
        // Not JSON: reported below if the status is an error.
      }
      if (!response.ok) {
        const reason = json !== null && typeof json === "object" &&
            "error" in json
          ? String((json as { error: unknown }).error)
          : text.slice(0, 200) || response.statusText;
        throw new CliError(
          `${method} ${path} failed with ${response.status}: ${reason}`,
          1,
        );
      }
      return json;
    },
  };
}

/**
 * The CLI's HTTP client: JSON requests to a running service, with the bearer
 * token and a timeout on each, and one error type whose message is the line
 * the CLI prints.
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

/** How long one request may take when no timeout is given, ms. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/** Talks to one service. */
export interface ApiClient {
  /** The service's base URL, without a trailing slash. */
  readonly url: string;
  /**
   * Sends a request and returns the JSON body.
   *
   * @throws {CliError} (exit 1) naming the request and the server's error
   *   when the status is not 2xx, or when the service cannot be reached or
   *   does not answer within the timeout.
   */
  // deno-lint-ignore no-explicit-any
  request(method: string, path: string, body?: unknown): Promise<any>;
  /**
   * `GET /health` without a token: its JSON body whatever the status (an
   * unhealthy service answers 503 and still names its DID).
   *
   * @throws {CliError} (exit 1) when the service cannot be reached, does not
   *   answer within the timeout, or the body is not JSON.
   */
  health(): Promise<unknown>;
}

/** Options for {@linkcode createClient}. */
export interface ClientOptions {
  url: string;
  /** Resolves the bearer token lazily (minting one may need `/health`). */
  token: () => Promise<string | null>;
  fetch?: typeof fetch;
  /** Per request, reply body included; default {@linkcode DEFAULT_TIMEOUT_MS}. */
  timeoutMs?: number;
}

/** A client for the service at `options.url`. */
export function createClient(options: ClientOptions): ApiClient {
  const url = options.url.replace(/\/+$/, "");
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  /** Status and body text of one request, bounded by the timeout. */
  async function send(
    method: string,
    path: string,
    init: RequestInit,
  ): Promise<{ response: Response; text: string }> {
    try {
      const response = await doFetch(`${url}${path}`, {
        ...init,
        method,
        signal: AbortSignal.timeout(timeoutMs),
      });
      // The signal bounds the body too: a reply that stalls midway times out.
      return { response, text: await response.text() };
    } catch (error) {
      if (error instanceof DOMException && error.name === "TimeoutError") {
        throw new CliError(
          `${method} ${path}: no reply from ${url} within ${
            _duration(timeoutMs)
          } (raise --timeout or BCS_TIMEOUT_MS)`,
          1,
          { cause: error },
        );
      }
      throw new CliError(
        `cannot reach the service at ${url}: ${
          error instanceof Error ? error.message : String(error)
        } (set --url or BCS_URL)`,
        1,
        { cause: error },
      );
    }
  }

  return {
    url,
    async request(method, path, body) {
      const headers: Record<string, string> = { accept: "application/json" };
      const token = await options.token();
      if (token !== null) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers["content-type"] = "application/json";
      const { response, text } = await send(method, path, {
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
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
    async health() {
      const { response, text } = await send("GET", "/health", {
        headers: { accept: "application/json" },
      });
      try {
        return JSON.parse(text);
      } catch {
        throw new CliError(
          `GET /health answered ${response.status} without JSON`,
          1,
        );
      }
    },
  };
}

/** `10 s`, or `250 ms` when not whole seconds. */
function _duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

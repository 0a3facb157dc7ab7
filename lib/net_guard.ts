/**
 * Where outbound requests from charms may go: the guard against server-side
 * request forgery (a webhook charm pointed at `http://169.254.169.254/` or a
 * database on the private network).
 *
 * When restricted (outside local development), a URL is refused if its host is, or resolves
 * to, a loopback, private, link-local, unspecified, multicast or reserved
 * address, unless the host is listed in `WEBHOOK_ALLOWED_HOSTS`. Every
 * address a name resolves to (A and AAAA) must be public, and both look-ups
 * must answer (a record type the name does not have is an answer; a timeout
 * or a failed query is not, and refuses the host for now). IPv4 addresses
 * embedded in IPv6 ones (`::ffff:127.0.0.1`, NAT64 `64:ff9b::/96`, 6to4
 * `2002::/16`, the deprecated `::a.b.c.d`) are judged by the IPv4 address.
 * `new URL()` already turns the other spellings of an IPv4 address
 * (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`) into dotted decimal, and IPv6
 * ones into their short form, before this module sees them.
 *
 * What it cannot prevent: a name that resolves to a public address when
 * checked and to a private one when `fetch` connects (DNS rebinding). Runs
 * check again each time, which narrows the window; network-level egress
 * rules close it.
 *
 * @module
 */

/** What kind of destination an IP address is. */
export type AddressKind =
  | "public"
  | "loopback"
  | "private"
  | "link-local"
  | "unspecified"
  | "multicast"
  | "reserved";

/** The policy for outbound requests, carried in `ServiceDeps` and runs. */
export interface EgressPolicy {
  /** Refuse non-public destinations (outside local development). */
  restricted: boolean;
  /**
   * Hosts allowed whatever they resolve to, normalized as `new URL()` gives
   * them: lower case, without IPv6 brackets or a trailing dot.
   */
  allowedHosts: readonly string[];
  /**
   * Resolves a name's A or AAAA records (`Deno.resolveDns` in production).
   * "No such record" must reject with `Deno.errors.NotFound`; any other
   * rejection refuses the host (retriable).
   */
  resolveDns(
    name: string,
    type: "A" | "AAAA",
    options?: { signal?: AbortSignal },
  ): Promise<string[]>;
}

/** Whether a URL may be called, and if not why. */
export type UrlVerdict =
  | { ok: true }
  | {
    ok: false;
    /** `host x is a loopback address`: names the host, never the path. */
    reason: string;
    /**
     * `true` when it may pass later (the name did not resolve, or a look-up
     * failed).
     */
    retriable: boolean;
  };

/** How long a URL check waits for DNS. */
const DNS_TIMEOUT_MS = 5_000;

/**
 * Builds the policy. The service restricts it outside local development
 * (`isLocalDevelopment` in `identity/load_identity.ts`: on Deno Deploy, a
 * `HOST` beyond loopback, or an `ADMIN_TOKEN`).
 */
export function egressPolicy(options: {
  restricted: boolean;
  allowedHosts?: readonly string[];
  resolveDns?: EgressPolicy["resolveDns"];
}): EgressPolicy {
  return {
    restricted: options.restricted,
    allowedHosts: (options.allowedHosts ?? []).map(_normalizeHost),
    resolveDns: options.resolveDns ??
      ((name, type, opts) =>
        Deno.resolveDns(
          name,
          type,
          opts?.signal ? { signal: opts.signal } : {},
        )),
  };
}

/**
 * Checks that `url` may be called under `policy`.
 *
 * @param signal bounds the DNS look-ups (besides their own 5 s)
 */
export async function checkUrl(
  url: string | URL,
  policy: EgressPolicy,
  signal?: AbortSignal,
): Promise<UrlVerdict> {
  let parsed: URL;
  try {
    parsed = typeof url === "string" ? new URL(url) : url;
  } catch {
    return { ok: false, reason: "is not a URL", retriable: false };
  }
  if (!policy.restricted) return { ok: true };
  const host = _normalizeHost(parsed.hostname);
  if (policy.allowedHosts.includes(host)) return { ok: true };
  const refuse = (reason: string, retriable = false): UrlVerdict => ({
    ok: false,
    reason,
    retriable,
  });
  const literal = classifyAddress(host);
  if (literal !== null) {
    return literal === "public"
      ? { ok: true }
      : refuse(`host ${host} is ${_describe(literal)}`);
  }
  if (host === "localhost" || host.endsWith(".localhost")) {
    return refuse(`host ${host} is ${_describe("loopback")}`);
  }
  const timeout = AbortSignal.timeout(DNS_TIMEOUT_MS);
  const bounded = signal ? AbortSignal.any([signal, timeout]) : timeout;
  const answers = await Promise.allSettled(
    (["A", "AAAA"] as const).map((type) =>
      policy.resolveDns(host, type, { signal: bounded })
    ),
  );
  const addresses: string[] = [];
  // A look-up that failed for another reason than "no such record" (a
  // timeout, a refused query) says nothing about what else the name points
  // to: the host is refused until every look-up answers.
  let failed: { type: "A" | "AAAA"; error: unknown } | null = null;
  for (const [i, answer] of answers.entries()) {
    if (answer.status === "fulfilled") addresses.push(...answer.value);
    else if (!(answer.reason instanceof Deno.errors.NotFound)) {
      failed ??= { type: i === 0 ? "A" : "AAAA", error: answer.reason };
    }
  }
  for (const address of addresses) {
    const kind = classifyAddress(address) ?? "reserved";
    if (kind !== "public") {
      // The address itself stays out of the message: it would map the
      // private network for whoever reads the charm's last error.
      return refuse(`host ${host} resolves to ${_describe(kind)}`);
    }
  }
  if (failed !== null) {
    const { type, error } = failed;
    return refuse(
      `host ${host} cannot be checked: its ${type} look-up failed (${
        _firstLine(error)
      })`,
      true,
    );
  }
  if (addresses.length === 0) {
    return refuse(`host ${host} does not resolve`, true);
  }
  return { ok: true };
}

/**
 * A host as `URL.hostname` gives it, compared case-insensitively, without
 * IPv6 brackets or a trailing dot: `"[::1]"` → `"::1"`, `"Example.COM."` →
 * `"example.com"`.
 */
function _normalizeHost(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  return h;
}

/**
 * Parses a comma-separated host list (`WEBHOOK_ALLOWED_HOSTS`): names or
 * addresses, as in a URL, without port or path. Entries are normalized the
 * way `new URL()` would (`Example.com` → `example.com`, `[::1]` → `::1`).
 *
 * @throws {TypeError} naming the first entry that is not a host.
 */
export function parseHostList(text: string): string[] {
  const hosts: string[] = [];
  for (const raw of text.split(",")) {
    const entry = raw.trim();
    if (entry === "") continue;
    const bad = new TypeError(
      `"${entry}" is not a host name or address (no scheme, port or path; IPv6 in brackets)`,
    );
    if (/[/@?#\s]/.test(entry)) throw bad;
    let url: URL;
    try {
      url = new URL(`http://${entry}`);
    } catch {
      throw bad;
    }
    if (url.port !== "" || entry.endsWith(":")) throw bad;
    hosts.push(_normalizeHost(url.hostname));
  }
  return hosts;
}

/**
 * The kind of an IP address given as text (dotted-decimal IPv4, or IPv6 with
 * or without brackets); `null` when it is not an IP address (a name).
 *
 * @example
 * ```ts
 * classifyAddress("10.1.2.3"); // "private"
 * classifyAddress("::ffff:7f00:1"); // "loopback" (IPv4-mapped 127.0.0.1)
 * classifyAddress("example.com"); // null
 * ```
 */
export function classifyAddress(text: string): AddressKind | null {
  const host = _normalizeHost(text);
  const v4 = _parseIpv4(host);
  if (v4 !== null) return _classifyIpv4(v4);
  const v6 = parseIpv6(host);
  if (v6 !== null) return _classifyIpv6(v6);
  return null;
}

/** Four bytes of a strict dotted-decimal IPv4 address, else `null`. */
function _parseIpv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    if (!/^(0|[1-9]\d{0,2})$/.test(part)) return null;
    const n = Number(part);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return bytes;
}

/**
 * Sixteen bytes of an IPv6 address (with `::` and an optional trailing
 * dotted IPv4 part), else `null`. Zone ids (`%eth0`) are not accepted.
 */
export function parseIpv6(text: string): Uint8Array | null {
  if (!text.includes(":") || !/^[0-9a-f:.]+$/i.test(text)) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (part: string): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]!;
      if (piece.includes(".")) {
        // A dotted IPv4 tail: only as the last piece.
        const v4 = i === pieces.length - 1 ? _parseIpv4(piece) : null;
        if (v4 === null) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-f]{1,4}$/i.test(piece)) return null;
        out.push(parseInt(piece, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

function _classifyIpv4(b: Uint8Array): AddressKind {
  const [a, c] = [b[0]!, b[1]!];
  if (a === 0) return "unspecified"; // 0.0.0.0/8, "this network"
  if (a === 127) return "loopback";
  if (a === 10) return "private";
  if (a === 172 && c >= 16 && c <= 31) return "private";
  if (a === 192 && c === 168) return "private";
  if (a === 100 && c >= 64 && c <= 127) return "private"; // 100.64/10, CGNAT
  if (a === 169 && c === 254) return "link-local";
  if (a >= 224 && a <= 239) return "multicast";
  if (a >= 240) return "reserved"; // 240/4 and the broadcast address
  if (a === 192 && c === 0 && b[2] === 0) return "reserved"; // 192.0.0/24
  if (a === 198 && (c === 18 || c === 19)) return "reserved"; // benchmarking
  return "public";
}

function _classifyIpv6(b: Uint8Array): AddressKind {
  const zeros = (from: number, to: number) =>
    b.subarray(from, to).every((x) => x === 0);
  if (zeros(0, 16)) return "unspecified";
  if (zeros(0, 15) && b[15] === 1) return "loopback";
  // IPv4-mapped ::ffff:a.b.c.d and the deprecated IPv4-compatible ::a.b.c.d.
  if (zeros(0, 10) && b[10] === 0xff && b[11] === 0xff) {
    return _classifyIpv4(b.subarray(12, 16));
  }
  if (zeros(0, 12)) return _classifyIpv4(b.subarray(12, 16));
  // NAT64 64:ff9b::/96 reaches the embedded IPv4 address.
  if (
    b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b &&
    zeros(4, 12)
  ) {
    return _classifyIpv4(b.subarray(12, 16));
  }
  // 64:ff9b:1::/48, local-use NAT64.
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b) {
    return "private";
  }
  // 6to4 2002:a.b.c.d::/48 tunnels to the embedded IPv4 address.
  if (b[0] === 0x20 && b[1] === 0x02) return _classifyIpv4(b.subarray(2, 6));
  if ((b[0]! & 0xfe) === 0xfc) return "private"; // fc00::/7, unique local
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return "link-local"; // fe80::/10
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0xc0) return "private"; // fec0::/10
  if (b[0] === 0xff) return "multicast";
  if (b[0] === 0x01 && b[1] === 0x00 && zeros(2, 8)) return "reserved"; // 100::/64
  if (b[0] === 0x20 && b[1] === 0x01 && b[2] === 0x0d && b[3] === 0xb8) {
    return "reserved"; // 2001:db8::/32, documentation
  }
  return "public";
}

function _firstLine(error: unknown): string {
  const text = error instanceof Error
    ? error.message || error.name
    : String(error);
  const line = text.split("\n")[0]!;
  return line.length > 100 ? `${line.slice(0, 97)}...` : line;
}

function _describe(kind: AddressKind): string {
  return {
    public: "a public address",
    loopback: "a loopback address",
    private: "a private address",
    "link-local": "a link-local address",
    unspecified: "an unspecified address",
    multicast: "a multicast address",
    reserved: "a reserved address",
  }[kind];
}

import assert from "node:assert/strict";
import {
  type AddressKind,
  checkUrl,
  classifyAddress,
  type EgressPolicy,
  egressPolicy,
  parseHostList,
  parseIpv6,
} from "./net_guard.ts";

/** URL → the kind of its host, through `new URL()` as the guard sees it. */
const URL_TABLE: [string, AddressKind][] = [
  // IPv4, and the spellings URL parsing turns into dotted decimal.
  ["http://127.0.0.1/", "loopback"],
  ["http://127.255.255.254/", "loopback"],
  ["http://2130706433/", "loopback"],
  ["http://0x7f000001/", "loopback"],
  ["http://0x7f.1/", "loopback"],
  ["http://0177.0.0.1/", "loopback"],
  ["http://127.1/", "loopback"],
  ["http://%31%32%37.0.0.1/", "loopback"],
  ["http://0.0.0.0/", "unspecified"],
  ["http://0/", "unspecified"],
  ["http://10.0.0.1/", "private"],
  ["http://10.255.255.255/", "private"],
  ["http://172.16.0.1/", "private"],
  ["http://172.31.255.255/", "private"],
  ["http://172.15.0.1/", "public"],
  ["http://172.32.0.1/", "public"],
  ["http://192.168.1.1/", "private"],
  ["http://192.169.1.1/", "public"],
  ["http://100.64.0.1/", "private"],
  ["http://169.254.169.254/", "link-local"],
  ["http://0xa9fea9fe/", "link-local"],
  ["http://224.0.0.1/", "multicast"],
  ["http://255.255.255.255/", "reserved"],
  ["http://240.0.0.1/", "reserved"],
  ["http://8.8.8.8/", "public"],
  ["https://93.184.216.34:8443/x", "public"],
  // IPv6, in any spelling URL parsing accepts.
  ["http://[::1]/", "loopback"],
  ["http://[0:0:0:0:0:0:0:1]/", "loopback"],
  ["http://[::]/", "unspecified"],
  ["http://[fc00::1]/", "private"],
  ["http://[fd12:3456:789a::1]/", "private"],
  ["http://[fe80::1]/", "link-local"],
  ["http://[febf::1]/", "link-local"],
  ["http://[fec0::1]/", "private"],
  ["http://[ff02::1]/", "multicast"],
  ["http://[2606:4700::1111]/", "public"],
  ["http://[2001:db8::1]/", "reserved"],
  // IPv4 inside IPv6: judged by the IPv4 address.
  ["http://[::ffff:127.0.0.1]/", "loopback"],
  ["http://[::ffff:7f00:1]/", "loopback"],
  ["http://[::ffff:10.1.2.3]/", "private"],
  ["http://[::ffff:169.254.169.254]/", "link-local"],
  ["http://[::ffff:8.8.8.8]/", "public"],
  ["http://[::127.0.0.1]/", "loopback"],
  ["http://[64:ff9b::7f00:1]/", "loopback"],
  ["http://[64:ff9b::808:808]/", "public"],
  ["http://[2002:7f00:1::]/", "loopback"],
  ["http://[2002:c0a8:101::1]/", "private"],
];

Deno.test("classifyAddress() sorts every spelling of an address new URL() accepts", async (t) => {
  for (const [url, kind] of URL_TABLE) {
    await t.step(`${url} is ${kind}`, () => {
      const host = new URL(url).hostname;
      assert.equal(classifyAddress(host), kind, `host ${host}`);
    });
  }
});

Deno.test("classifyAddress() is null for names and malformed addresses", () => {
  for (
    const text of [
      "example.com",
      "localhost",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.2.3.4",
      "::1::2",
      "1:2:3:4:5:6:7:8:9",
      "fe80::1%eth0",
      "::ffff:1.2.3",
      "12345::",
      "",
    ]
  ) {
    assert.equal(classifyAddress(text), null, text);
  }
});

Deno.test("parseIpv6() expands :: and dotted tails", () => {
  const hex = (text: string) =>
    [...parseIpv6(text)!].map((b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(hex("::1"), "00000000000000000000000000000001");
  assert.equal(hex("1::"), "00010000000000000000000000000000");
  assert.equal(hex("::ffff:1.2.3.4"), "00000000000000000000ffff01020304");
  assert.equal(
    hex("1:2:3:4:5:6:7:8"),
    "00010002000300040005000600070008",
  );
  assert.equal(
    parseIpv6("1:2:3:4:5:6:7::8"),
    null,
    ":: must stand for a group",
  );
});

Deno.test("parseHostList() normalizes hosts and refuses ports, paths and schemes", () => {
  assert.deepEqual(
    parseHostList(" Hooks.Example.com, 10.0.0.5 ,[fd00::1],,localhost. "),
    ["hooks.example.com", "10.0.0.5", "fd00::1", "localhost"],
  );
  assert.deepEqual(parseHostList(""), []);
  for (
    const bad of ["host:8080", "http://host", "host/path", "a b", "[::1", "u@h"]
  ) {
    assert.throws(
      () => parseHostList(bad),
      (error: Error) =>
        error instanceof TypeError && error.message.includes(`"${bad}"`),
      bad,
    );
  }
});

/**
 * A policy whose DNS answers from `table` (name → type → addresses, or the
 * error the look-up fails with); a missing entry is "no such record".
 */
function policy(
  table: Record<string, { A?: string[] | Error; AAAA?: string[] | Error }>,
  options: { restricted?: boolean; allowedHosts?: string[] } = {},
): EgressPolicy & { lookups: string[] } {
  const lookups: string[] = [];
  return {
    ...egressPolicy({
      restricted: options.restricted ?? true,
      allowedHosts: options.allowedHosts ?? [],
      resolveDns: (name, type) => {
        lookups.push(`${name} ${type}`);
        const answer = table[name]?.[type];
        if (answer === undefined) {
          return Promise.reject(
            new Deno.errors.NotFound(`no ${type} for ${name}`),
          );
        }
        return answer instanceof Error
          ? Promise.reject(answer)
          : Promise.resolve(answer);
      },
    }),
    lookups,
  };
}

Deno.test("checkUrl() allows everything when not restricted, without DNS", async () => {
  const p = policy({}, { restricted: false });
  for (const url of ["http://127.0.0.1:9000/x", "http://unresolvable.test/"]) {
    assert.deepEqual(await checkUrl(url, p), { ok: true });
  }
  assert.deepEqual(p.lookups, []);
});

Deno.test("checkUrl() refuses private literals when restricted, naming the host", async () => {
  const p = policy({});
  assert.deepEqual(await checkUrl("http://[::ffff:127.0.0.1]:8080/x?k=v", p), {
    ok: false,
    reason: "host ::ffff:7f00:1 is a loopback address",
    retriable: false,
  });
  assert.deepEqual(await checkUrl("http://169.254.169.254/latest", p), {
    ok: false,
    reason: "host 169.254.169.254 is a link-local address",
    retriable: false,
  });
  assert.deepEqual(await checkUrl("https://8.8.8.8/", p), { ok: true });
  assert.deepEqual(p.lookups, []);
});

Deno.test("checkUrl() refuses a name if any of its addresses is private, without naming the address", async () => {
  const p = policy({
    "public.test": { A: ["93.184.216.34"], AAAA: ["2606:2800:220:1::1"] },
    "mixed.test": { A: ["93.184.216.34"], AAAA: ["fd00::5"] },
    "internal.test": { A: ["10.1.2.3"] },
    "mapped.test": { AAAA: ["::ffff:192.168.0.1"] },
  });
  assert.deepEqual(await checkUrl("https://public.test/hook", p), { ok: true });
  assert.deepEqual(await checkUrl("https://mixed.test/", p), {
    ok: false,
    reason: "host mixed.test resolves to a private address",
    retriable: false,
  });
  assert.deepEqual(await checkUrl("http://Internal.Test./", p), {
    ok: false,
    reason: "host internal.test resolves to a private address",
    retriable: false,
  });
  assert.deepEqual(await checkUrl("http://mapped.test/", p), {
    ok: false,
    reason: "host mapped.test resolves to a private address",
    retriable: false,
  });
  assert.ok(p.lookups.includes("internal.test A"));
  assert.ok(p.lookups.includes("internal.test AAAA"));
});

Deno.test("checkUrl() refuses localhost names and names that do not resolve (retriable)", async () => {
  const p = policy({});
  for (const url of ["http://localhost:8000/", "http://api.localhost/"]) {
    const verdict = await checkUrl(url, p);
    assert.equal(verdict.ok, false);
    assert.match((verdict as { reason: string }).reason, /loopback/);
  }
  assert.deepEqual(await checkUrl("https://nowhere.test/", p), {
    ok: false,
    reason: "host nowhere.test does not resolve",
    retriable: true,
  });
  assert.deepEqual(await checkUrl("not a url", p), {
    ok: false,
    reason: "is not a URL",
    retriable: false,
  });
});

Deno.test("checkUrl() refuses a name when a look-up fails for another reason than no such record (retriable)", async () => {
  const p = policy({
    "a-timed-out.test": {
      A: new Deno.errors.TimedOut("dns query timed out"),
      AAAA: ["2606:2800:220:1::1"],
    },
    "aaaa-refused.test": {
      A: ["93.184.216.34"],
      AAAA: new Error("proto error: query refused\nsecond line"),
    },
    "v6-only.test": { AAAA: ["2606:2800:220:1::1"] },
    "failed-and-private.test": {
      A: new Deno.errors.TimedOut("dns query timed out"),
      AAAA: ["fd00::5"],
    },
  });
  assert.deepEqual(await checkUrl("https://a-timed-out.test/", p), {
    ok: false,
    reason:
      "host a-timed-out.test cannot be checked: its A look-up failed (dns query timed out)",
    retriable: true,
  });
  assert.deepEqual(await checkUrl("https://aaaa-refused.test/", p), {
    ok: false,
    reason:
      "host aaaa-refused.test cannot be checked: its AAAA look-up failed (proto error: query refused)",
    retriable: true,
  });
  // "No such record" is an answer: a name with only AAAA records passes.
  assert.deepEqual(await checkUrl("https://v6-only.test/", p), { ok: true });
  // A private answer is final even when the other look-up failed.
  assert.deepEqual(await checkUrl("https://failed-and-private.test/", p), {
    ok: false,
    reason: "host failed-and-private.test resolves to a private address",
    retriable: false,
  });
});

Deno.test("checkUrl() allows hosts in WEBHOOK_ALLOWED_HOSTS whatever they are", async () => {
  const p = policy({ "internal.test": { A: ["10.1.2.3"] } }, {
    allowedHosts: parseHostList("Internal.test,127.0.0.1,[::1]"),
  });
  for (
    const url of [
      "http://internal.test:8080/",
      "http://127.0.0.1:9000/",
      "http://2130706433/",
      "http://[::1]/",
    ]
  ) {
    assert.deepEqual(await checkUrl(url, p), { ok: true }, url);
  }
  assert.deepEqual(p.lookups, []);
  assert.equal((await checkUrl("http://127.0.0.2/", p)).ok, false);
});

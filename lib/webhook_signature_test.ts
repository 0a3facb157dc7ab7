import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import { base64url, flattenedVerify, importJWK } from "jose";
import type { CharmRef } from "../charm/charm.ts";
import { publicKeyFromDidKey } from "../charm/did.ts";
import { runCharm } from "../handlers/run_charm.ts";
import { Identity } from "../identity/identity.ts";
import { RECIPES } from "../recipes/mod.ts";
import { createCharm } from "../store/charms.ts";
import {
  makeTestDeps,
  manualRunMessageFor,
  SPACE,
  TEST_SIGNER_PASSPHRASE,
} from "../test/test_deps.ts";
import {
  KEY_HEADER,
  SIGNATURE_HEADER,
  signWebhookBody,
} from "./webhook_signature.ts";

/** One request the receiver got, exactly as sent. */
interface Received {
  url: string;
  headers: Headers;
  body: Uint8Array;
}

/** A loopback receiver keeping raw bodies and headers; dispose to stop. */
function receiver(): AsyncDisposable & { url: string; got: Received[] } {
  const got: Received[] = [];
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      got.push({
        url: request.url,
        headers: request.headers,
        body: new Uint8Array(await request.arrayBuffer()),
      });
      return Response.json({ result: { ok: true } });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    got,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Runs a webhook charm pointed at `url` once; returns the outcome. */
async function runWebhook(url: string, nowMs: number) {
  await using deps = await makeTestDeps({ now: () => nowMs });
  const ref: CharmRef = { space: SPACE, charmId: "hook" };
  await createCharm(deps.kv, ref, RECIPES.get("webhook")!, { url }, nowMs);
  return await runCharm(deps, manualRunMessageFor(ref, nowMs, "r1"));
}

/** The Ed25519 public key inside a `did:key`, as jose's key. */
async function joseKeyOf(did: string) {
  return await importJWK(
    {
      kty: "OKP",
      crv: "Ed25519",
      x: base64url.encode(publicKeyFromDidKey(did)),
    },
    "EdDSA",
  );
}

/** Verifies a detached, unencoded-payload JWS header value with jose. */
async function joseVerify(
  signatureHeader: string,
  body: Uint8Array,
  did: string,
) {
  const [protectedPart, payload, signature] = signatureHeader.split(".");
  assert.equal(payload, "", "detached: the payload part is empty");
  return await flattenedVerify(
    { protected: protectedPart!, payload: body, signature: signature! },
    await joseKeyOf(did),
    { algorithms: ["EdDSA"] },
  );
}

/** The `verifyWebhook` of docs/webhooks.md, loaded from the doc itself. */
async function docsVerifier(): Promise<
  (
    request: Request,
    did: string,
    myUrl: string,
    maxAgeSeconds?: number,
  ) => Promise<Uint8Array>
> {
  const doc = await Deno.readTextFile(
    new URL("../docs/webhooks.md", import.meta.url),
  );
  const after = doc.split("<!-- verify-snippet -->")[1];
  const code = after?.match(/```ts\n([\s\S]*?)```/)?.[1];
  assert.ok(code, "docs/webhooks.md has the verify snippet");
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(file, code);
    return (await import(pathToFileURL(file).href)).verifyWebhook;
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("signWebhookBody() makes a detached EdDSA JWS over the exact body, with the DID and a timestamp", async () => {
  const identity = await Identity.fromPassphrase("signer");
  const body = new TextEncoder().encode('{"a": 1,  "b":"é"}');
  const nowMs = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
  const headers = await signWebhookBody(identity, body, {
    url: "https://hooks.example/run?x=1",
    nowMs,
  });
  assert.equal(headers[KEY_HEADER], identity.did);
  const { protectedHeader } = await joseVerify(
    headers[SIGNATURE_HEADER]!,
    body,
    identity.did,
  );
  assert.deepEqual(protectedHeader, {
    alg: "EdDSA",
    b64: false,
    crit: ["b64"],
    kid: identity.did,
    iat: Math.floor(nowMs / 1000),
    htu: "https://hooks.example/run?x=1",
  });
  // One changed byte, or another key, and it no longer verifies.
  const tampered = body.slice();
  tampered[2] = tampered[2]! ^ 1;
  await assert.rejects(
    joseVerify(headers[SIGNATURE_HEADER]!, tampered, identity.did),
    /signature verification failed/,
  );
  await assert.rejects(
    joseVerify(
      headers[SIGNATURE_HEADER]!,
      body,
      (await Identity.fromPassphrase("someone else")).did,
    ),
    /signature verification failed/,
  );
});

Deno.test("a webhook run's request carries the operator's signature, which the receiver verifies with jose from the DID", async () => {
  await using hook = receiver();
  const nowMs = Date.now();
  assert.equal(await runWebhook(`${hook.url}/run?k=v`, nowMs), "succeeded");
  assert.equal(hook.got.length, 1);
  const { headers, body } = hook.got[0]!;
  const operator = await Identity.fromPassphrase(TEST_SIGNER_PASSPHRASE);
  assert.equal(headers.get("bcs-key"), operator.did);
  const signature = headers.get("bcs-signature")!;
  assert.match(signature, /^[\w-]+\.\.[\w-]+$/);

  const { protectedHeader } = await joseVerify(signature, body, operator.did);
  assert.ok(protectedHeader !== undefined);
  assert.equal(protectedHeader.kid, operator.did);
  assert.equal(protectedHeader.iat, Math.floor(nowMs / 1000));
  assert.equal(protectedHeader.htu, `${hook.url}/run?k=v`);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(body)), {
    space: SPACE,
    charmId: "hook",
    slot: nowMs,
    attempt: 1,
  });

  // A body changed in transit fails verification.
  const forged = new TextEncoder().encode(
    new TextDecoder().decode(body).replace('"attempt":1', '"attempt":2'),
  );
  assert.notDeepEqual(forged, body);
  await assert.rejects(
    joseVerify(signature, forged, operator.did),
    /signature verification failed/,
  );
});

Deno.test("the verify snippet in docs/webhooks.md accepts the service's request and refuses tampered, foreign and stale ones", async () => {
  const verifyWebhook = await docsVerifier();
  await using hook = receiver();
  assert.equal(await runWebhook(`${hook.url}/run`, Date.now()), "succeeded");
  const { headers, body } = hook.got[0]!;
  const url = `${hook.url}/run`;
  const did = (await Identity.fromPassphrase(TEST_SIGNER_PASSPHRASE)).did;
  const request = (b: Uint8Array, h: Headers = headers) =>
    new Request("http://receiver/run", {
      method: "POST",
      headers: h,
      body: b as Uint8Array<ArrayBuffer>,
    });

  assert.deepEqual(await verifyWebhook(request(body), did, url), body);

  const tampered = body.slice();
  tampered[tampered.length - 2] = tampered[tampered.length - 2]! ^ 1;
  await assert.rejects(
    verifyWebhook(request(tampered), did, url),
    /bad signature/,
  );
  await assert.rejects(
    verifyWebhook(
      request(body),
      (await Identity.fromPassphrase("someone else")).did,
      url,
    ),
    /do not trust/,
  );
  const unsigned = new Headers(headers);
  unsigned.delete("bcs-signature");
  await assert.rejects(
    verifyWebhook(request(body, unsigned), did, url),
    /missing or malformed/,
  );

  // Signed ten minutes ago: a replay.
  const old = await signWebhookBody(
    await Identity.fromPassphrase(TEST_SIGNER_PASSPHRASE),
    body,
    { url: `${hook.url}/run`, nowMs: Date.now() - 600_000 },
  );
  await assert.rejects(
    verifyWebhook(request(body, new Headers(old)), did, url),
    /stale signature/,
  );

  // Signed for another receiver: a replay to this one.
  await assert.rejects(
    verifyWebhook(request(body), did, "https://hooks.example.com/run"),
    /signed for another URL/,
  );
});

import assert from "node:assert/strict";
import { decodeProtectedHeader, importJWK, jwtVerify } from "jose";
import { base64urlnopad } from "@scure/base";
import { Identity } from "./identity.ts";
import { MAX_TOKEN_TTL_SECONDS, mintToken } from "./token.ts";

const AUDIENCE = "did:key:z6Mkfuw7h6jDwqVb6wimYGys14JFcyTem4Kqvdj9DjpFhY88";
const NOW = Date.UTC(2025, 0, 1, 12, 0, 0);

Deno.test("mintToken() makes an EdDSA JWS that jose verifies with the issuer's key", async () => {
  const me = await Identity.fromPassphrase("common user");
  const minted = await mintToken(me, {
    audience: AUDIENCE,
    ttlSeconds: 600,
    nowMs: NOW,
  });
  assert.deepEqual(decodeProtectedHeader(minted.token), {
    alg: "EdDSA",
    typ: "JWT",
  });
  const key = await importJWK({
    kty: "OKP",
    crv: "Ed25519",
    x: base64urlnopad.encode(me.publicKey),
  }, "EdDSA");
  const { payload } = await jwtVerify(minted.token, key, {
    audience: AUDIENCE,
    currentDate: new Date(NOW),
  });
  assert.deepEqual(payload, {
    iss: me.did,
    aud: AUDIENCE,
    iat: NOW / 1000,
    exp: NOW / 1000 + 600,
  });
  assert.equal(minted.exp, NOW / 1000 + 600);
});

Deno.test("mintToken() defaults to an hour and refuses longer or shorter lifetimes", async () => {
  const me = await Identity.fromPassphrase("common user");
  const minted = await mintToken(me, { audience: AUDIENCE, nowMs: NOW });
  assert.equal(minted.exp - minted.iat, MAX_TOKEN_TTL_SECONDS);
  for (const ttlSeconds of [0, -1, 3601, 1.5]) {
    await assert.rejects(
      () => mintToken(me, { audience: AUDIENCE, ttlSeconds }),
      (error: Error) => {
        assert.ok(error instanceof RangeError);
        assert.match(
          error.message,
          /^Cannot mint a token: ttl .* from 1 to 3600/,
        );
        return true;
      },
    );
  }
});

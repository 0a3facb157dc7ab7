import assert from "node:assert/strict";
import { GOOGLE_DEFAULT_URLS } from "../google/config.ts";
import { NonRetriableError } from "../lib/errors.ts";
import { checkGoogleConfig, googleConfigFromEnv } from "./_google_config.ts";

Deno.test("googleConfigFromEnv() defaults to Google and reads every variable", () => {
  assert.deepEqual(googleConfigFromEnv({}), {
    ...GOOGLE_DEFAULT_URLS,
    clientId: null,
    clientSecret: null,
    toolshedApiUrl: null,
  });
  assert.deepEqual(
    googleConfigFromEnv({
      GOOGLE_CLIENT_ID: "id",
      GOOGLE_CLIENT_SECRET: "secret",
      GOOGLE_TOKEN_URL: "http://127.0.0.1:9/token",
      GMAIL_API_URL: "http://localhost:9/gmail/v1/",
      GCAL_API_URL: "https://proxy.example.com/calendar/v3",
      TOOLSHED_API_URL: "",
    }),
    {
      tokenUrl: "http://127.0.0.1:9/token",
      gmailApiUrl: "http://localhost:9/gmail/v1",
      gcalApiUrl: "https://proxy.example.com/calendar/v3",
      clientId: "id",
      clientSecret: "secret",
      toolshedApiUrl: null,
    },
  );
});

Deno.test("googleConfigFromEnv() refuses a malformed URL or plain http off loopback, naming the variable", () => {
  assert.throws(
    () => googleConfigFromEnv({ GMAIL_API_URL: "gmail" }),
    (error) =>
      error instanceof NonRetriableError &&
      error.message === 'GMAIL_API_URL: "gmail" is not a URL',
  );
  assert.throws(
    () => googleConfigFromEnv({ GOOGLE_TOKEN_URL: "http://example.com/token" }),
    /^NonRetriableError: GOOGLE_TOKEN_URL: "http:\/\/example.com\/token" must be https/,
  );
});

Deno.test("checkGoogleConfig() says what is missing and how to get it", () => {
  const [missing] = checkGoogleConfig("gmail", { GOOGLE_CLIENT_ID: "id" });
  assert.match(
    missing!,
    /^gmail: missing GOOGLE_CLIENT_SECRET: create an OAuth client/,
  );
  assert.deepEqual(
    checkGoogleConfig("gcal", {
      GOOGLE_CLIENT_ID: "id",
      GOOGLE_CLIENT_SECRET: "s",
    }),
    ["gcal: Google OAuth client configured"],
  );
  assert.deepEqual(
    checkGoogleConfig("gcal", { TOOLSHED_API_URL: "https://toolshed.example" }),
    ["gcal: tokens are refreshed through the toolshed at TOOLSHED_API_URL"],
  );
  assert.deepEqual(
    checkGoogleConfig("gmail", {
      GOOGLE_CLIENT_ID: "id",
      GOOGLE_CLIENT_SECRET: "s",
      GCAL_API_URL: "ftp://x",
    }),
    [
      'gmail: GCAL_API_URL: "ftp://x" must be https (plain http only on a loopback host)',
      "gmail: Google OAuth client configured",
    ],
  );
});

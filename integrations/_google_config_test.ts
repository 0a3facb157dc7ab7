import assert from "node:assert/strict";
import { GOOGLE_DEFAULT_URLS } from "../google/config.ts";
import { ConfigError, NonRetriableError } from "../lib/errors.ts";
import {
  assertGoogleConfig,
  checkGoogleConfig,
  googleConfigFromEnv,
  googleConfigProblems,
} from "./_google_config.ts";

const CLIENT_ID = "123-abc.apps.googleusercontent.com";

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
  const [missing] = checkGoogleConfig("gmail", { GOOGLE_CLIENT_ID: CLIENT_ID });
  assert.match(
    missing!,
    /^gmail: missing GOOGLE_CLIENT_SECRET: create an OAuth client/,
  );
  assert.deepEqual(
    checkGoogleConfig("gcal", {
      GOOGLE_CLIENT_ID: CLIENT_ID,
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
      GOOGLE_CLIENT_ID: CLIENT_ID,
      GOOGLE_CLIENT_SECRET: "s",
      GCAL_API_URL: "ftp://x",
    }),
    [
      'gmail: GCAL_API_URL: "ftp://x" must be https (plain http only on a loopback host)',
      "gmail: Google OAuth client configured",
    ],
  );
});

Deno.test("googleConfigProblems() names every malformed variable, never a missing one", () => {
  assert.deepEqual(googleConfigProblems({}), []);
  assert.deepEqual(
    googleConfigProblems({ GOOGLE_CLIENT_ID: "", GOOGLE_CLIENT_SECRET: "" }),
    [],
  );
  assert.deepEqual(
    googleConfigProblems({
      GOOGLE_TOKEN_URL: "oauth2.googleapis.com/token",
      GMAIL_API_URL: "http://gmail.example.com/gmail/v1",
      TOOLSHED_API_URL: "toolshed",
    }),
    [
      'GOOGLE_TOKEN_URL: "oauth2.googleapis.com/token" is not a URL',
      'GMAIL_API_URL: "http://gmail.example.com/gmail/v1" must be https (plain http only on a loopback host)',
      'TOOLSHED_API_URL: "toolshed" is not a URL',
    ],
  );
});

Deno.test("googleConfigProblems() refuses a pasted-wrong client id or secret without echoing the secret", async (t) => {
  const secret = "GOCSPX-s3cr3t";
  const cases: [string, Record<string, string>, RegExp][] = [
    [
      "trailing newline",
      { GOOGLE_CLIENT_SECRET: `${secret}\n` },
      /^GOOGLE_CLIENT_SECRET: has leading or trailing whitespace; /,
    ],
    [
      "quotes kept by an env file",
      { GOOGLE_CLIENT_ID: `"${CLIENT_ID}"` },
      /^GOOGLE_CLIENT_ID: is wrapped in quotes; /,
    ],
    [
      "a space inside",
      { GOOGLE_CLIENT_SECRET: "GOCSPX s3cr3t" },
      /^GOOGLE_CLIENT_SECRET: contains a space, a control character or a non-ASCII character; /,
    ],
    [
      "the secret in the id's place",
      { GOOGLE_CLIENT_ID: secret, GOOGLE_CLIENT_SECRET: CLIENT_ID },
      /^GOOGLE_CLIENT_ID: does not end in "\.apps\.googleusercontent\.com"; /,
    ],
  ];
  for (const [name, env, expected] of cases) {
    await t.step(name, () => {
      const problems = googleConfigProblems(env);
      assert.equal(problems.length, 1, problems.join("\n"));
      assert.match(problems[0]!, expected);
      assert.ok(!problems[0]!.includes("s3cr3t"), problems[0]);
      assert.throws(
        () => googleConfigFromEnv(env),
        (error) =>
          error instanceof NonRetriableError && expected.test(error.message),
      );
    });
  }
  // Any id format is accepted by a token endpoint other than Google's own.
  assert.deepEqual(
    googleConfigProblems({
      GOOGLE_CLIENT_ID: "test-client",
      GOOGLE_TOKEN_URL: "http://127.0.0.1:9/token",
    }),
    [],
  );
  assert.deepEqual(
    googleConfigProblems({
      GOOGLE_CLIENT_ID: "test-client",
      TOOLSHED_API_URL: "https://toolshed.example",
    }),
    [],
  );
  // A malformed token URL is reported alone, not as a wrong id format too.
  assert.deepEqual(
    googleConfigProblems({
      GOOGLE_CLIENT_ID: "test-client",
      GOOGLE_TOKEN_URL: "127.0.0.1:9/token",
    }),
    ['GOOGLE_TOKEN_URL: "127.0.0.1:9/token" is not a URL'],
  );
});

Deno.test("assertGoogleConfig() refuses malformed variables, not missing ones", () => {
  const env = {
    GMAIL_API_URL: "gmail",
    GOOGLE_CLIENT_SECRET: " s",
  };
  assert.throws(
    () => assertGoogleConfig(env),
    (error) =>
      error instanceof ConfigError &&
      error.message ===
        'GOOGLE_CLIENT_SECRET: has leading or trailing whitespace; set it to the value exactly as the Google Cloud console shows it; GMAIL_API_URL: "gmail" is not a URL',
  );
  // Missing configuration starts.
  assertGoogleConfig({});
  assertGoogleConfig({ GOOGLE_CLIENT_ID: CLIENT_ID });
  assertGoogleConfig({
    GOOGLE_CLIENT_ID: CLIENT_ID,
    GOOGLE_CLIENT_SECRET: "GOCSPX-s3cr3t",
  });
});

Deno.test("checkGoogleConfig() reports a malformed client id or secret instead of a configured client", () => {
  assert.deepEqual(
    checkGoogleConfig("gmail", {
      GOOGLE_CLIENT_ID: CLIENT_ID,
      GOOGLE_CLIENT_SECRET: "'s'",
    }),
    [
      "gmail: GOOGLE_CLIENT_SECRET: is wrapped in quotes; set it to the value exactly as the Google Cloud console shows it",
    ],
  );
});

/**
 * Property-based tests of the API's body validation: arbitrary bodies sent
 * to the write routes never make the service fail (no 5xx), and every
 * refusal is JSON naming the field at fault.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { didKeyFromPublicKey } from "../charm/did.ts";
import { SPACE } from "../test/test_deps.ts";
import { type Harness, harness } from "./test_harness.ts";

const NUM_RUNS = 200;

/** The fields these routes read, and the resource a 404/409 names. */
const NAMED =
  /^(body|space|recipe|charmId|argument|integration)\b|^Charm did:key:\S+ (does not exist|already exists)$/;

const didKey = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(
  didKeyFromPublicKey,
);
const charmId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/);

/** Mostly a plausible value, sometimes anything JSON. */
function field<T>(plausible: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  return fc.oneof(
    { arbitrary: plausible, weight: 3 },
    { arbitrary: fc.jsonValue(), weight: 1 },
  );
}

/**
 * An object with `shape`'s fields (all of them, or any subset) and now and
 * then an unknown one.
 */
function objectBody(
  shape: Record<string, fc.Arbitrary<unknown>>,
): fc.Arbitrary<string> {
  return fc.tuple(
    fc.oneof(
      fc.record(shape, { noNullPrototype: true }),
      fc.record(shape, { requiredKeys: [], noNullPrototype: true }),
    ),
    fc.oneof(
      { arbitrary: fc.constant(null), weight: 4 },
      { arbitrary: fc.tuple(fc.string(), fc.jsonValue()), weight: 1 },
    ),
  ).map(([body, extra]) =>
    JSON.stringify(extra === null ? body : { ...body, [extra[0]]: extra[1] })
  );
}

/** A body: free text, any JSON, or an object shaped like the route's. */
function anyBody(
  shape: Record<string, fc.Arbitrary<unknown>>,
): fc.Arbitrary<string> {
  return fc.oneof(
    fc.string(),
    fc.jsonValue().map((value) => JSON.stringify(value)),
    { arbitrary: objectBody(shape), weight: 4 },
  );
}

const space = field(fc.oneof(didKey, fc.constant(SPACE)));
const integrationId = fc.constantFrom("manual", "gmail", "gcal", "nope");

async function checkAnswer(response: Response, what: string): Promise<void> {
  assert.ok(response.status < 500, `${what}: ${response.status}`);
  assert.match(
    response.headers.get("content-type") ?? "",
    /application\/json/,
    what,
  );
  const body = await response.json();
  if (response.status >= 400) {
    assert.equal(typeof body.error, "string", what);
    assert.match(body.error, NAMED, `${what}: ${body.error}`);
  }
}

function post(h: Harness, path: string, body: string): Promise<Response> {
  return h.call("POST", path, body);
}

Deno.test("POST /api/charms answers any body with a success or a 4xx naming the field", async () => {
  await using h = await harness({ integrationIds: ["manual"] });
  await fc.assert(
    fc.asyncProperty(
      anyBody({
        space,
        recipe: field(fc.constantFrom("counter", "webhook", "nope", "")),
        charmId: field(charmId),
        argument: fc.oneof(
          fc.jsonValue(),
          fc.record({ step: field(fc.integer()) }),
          fc.record({ url: field(fc.webUrl()) }),
        ),
      }),
      async (body) => {
        await checkAnswer(await post(h, "/api/charms", body), body);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("POST /api/integrations/:id/charms answers any body with a success or a 4xx naming the field", async () => {
  await using h = await harness({ integrationIds: ["manual"] });
  // Some charms exist, so valid registrations happen too.
  for (const id of ["a", "b", "c"]) {
    const created = await post(
      h,
      "/api/charms",
      JSON.stringify({ space: SPACE, recipe: "counter", charmId: id }),
    );
    assert.equal(created.status, 201);
  }
  await fc.assert(
    fc.asyncProperty(
      integrationId,
      anyBody({
        space,
        charmId: field(fc.oneof(fc.constantFrom("a", "b", "c"), charmId)),
      }),
      async (id, body) => {
        await checkAnswer(
          await post(h, `/api/integrations/${id}/charms`, body),
          `${id} ${body}`,
        );
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("POST /api/fanout answers any body with a success or a 4xx naming the field", async () => {
  await using h = await harness({ integrationIds: ["manual"] });
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.constant(""),
        anyBody({ integration: field(integrationId) }),
      ),
      async (body) => {
        await checkAnswer(await post(h, "/api/fanout", body), body);
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

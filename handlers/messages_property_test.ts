/**
 * Property-based tests of the queue message validator: whatever arrives
 * from the queue, `parseMessage` answers (never throws), accepts every valid
 * message unchanged, and names the bad field of an invalid one.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { didKeyFromPublicKey } from "../charm/did.ts";
import { parseMessage, type RunMessage } from "./messages.ts";

const NUM_RUNS = 200;

const didKey = fc.uint8Array({ minLength: 32, maxLength: 32 }).map(
  didKeyFromPublicKey,
);

const charmId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/);

/** Every valid run message: scheduled or manual, any field values allowed. */
const validRunMessage: fc.Arbitrary<RunMessage> = fc.record({
  type: fc.constant("run" as const),
  v: fc.constant(1 as const),
  space: didKey,
  charmId,
  integration: fc.option(fc.string({ minLength: 1, maxLength: 64 }), {
    nil: null,
  }),
  kind: fc.constantFrom("scheduled" as const, "manual" as const),
  slot: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
  runId: fc.string({ minLength: 1, maxLength: 64 }),
  attempt: fc.integer({ min: 1, max: 1000 }),
  enqueuedAt: fc.nat({ max: Number.MAX_SAFE_INTEGER }),
}, {
  noNullPrototype: true,
  requiredKeys: [
    "type",
    "v",
    "space",
    "charmId",
    "integration",
    "kind",
    "slot",
    "attempt",
    "enqueuedAt",
  ],
}).filter((m) => m.kind === "scheduled" || m.runId !== undefined);

/** Values no field of a run message accepts. */
const BAD_VALUES: Record<string, fc.Arbitrary<unknown>> = {
  type: fc.constantFrom("runs", "", "RUN", 1, null),
  v: fc.constantFrom(0, 2, "1", null),
  space: fc.oneof(
    fc.string().filter((s) => !s.startsWith("did:key:z6Mk")),
    fc.constant("did:key:z6MkNotBase58!!"),
    fc.integer(),
  ),
  charmId: fc.oneof(
    fc.constantFrom("", "-leading-dash", ".dot", "has space", "x".repeat(129)),
    fc.integer(),
  ),
  integration: fc.oneof(
    fc.constant(""),
    fc.string({ minLength: 65, maxLength: 80 }),
    fc.integer(),
  ),
  kind: fc.constantFrom("cron", "", 0),
  slot: fc.oneof(
    fc.integer({ max: -1 }),
    fc.double({ noInteger: true, noNaN: true }),
    fc.constant("0"),
  ),
  runId: fc.oneof(fc.constant(""), fc.string({ minLength: 65 }), fc.integer()),
  attempt: fc.oneof(
    fc.integer({ max: 0 }),
    fc.integer({ min: 1001 }),
    fc.constant(1.5),
  ),
  enqueuedAt: fc.oneof(fc.integer({ max: -1 }), fc.constant(null)),
};

const FIELDS = new Set(Object.keys(BAD_VALUES));

Deno.test("parseMessage() never throws, whatever the queue delivers", () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.jsonValue(), fc.anything(), validRunMessage.chain(_mangled)),
      (raw) => {
        const parsed = parseMessage(raw);
        if (!parsed.ok) {
          assert.equal(typeof parsed.reason, "string");
          assert.match(parsed.reason, /^\S+: ./);
        }
      },
    ),
    { numRuns: NUM_RUNS * 5 },
  );
});

Deno.test("parseMessage() accepts every valid run message unchanged", () => {
  fc.assert(
    fc.property(validRunMessage, (message) => {
      // What the queue hands back is a structured clone of what was sent.
      const parsed = parseMessage(structuredClone(message));
      assert.ok(parsed.ok, parsed.ok ? "" : parsed.reason);
      assert.deepEqual(parsed.message, message);
    }),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("parseMessage() names the field of a message with one bad value", () => {
  const field = fc.constantFrom(...Object.keys(BAD_VALUES));
  fc.assert(
    fc.property(
      validRunMessage,
      field.chain((name) => fc.tuple(fc.constant(name), BAD_VALUES[name]!)),
      (message, [name, value]) => {
        const parsed = parseMessage({ ...message, [name]: value });
        assert.ok(!parsed.ok, `accepted ${name} = ${JSON.stringify(value)}`);
        assert.ok(
          parsed.reason.startsWith(`${name}: `),
          `${name} = ${JSON.stringify(value)}: ${parsed.reason}`,
        );
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("parseMessage() refuses unknown fields and a manual run without runId", () => {
  fc.assert(
    fc.property(
      validRunMessage,
      fc.oneof(
        fc.string({ minLength: 1 }),
        fc.constantFrom("__proto__", "constructor", "toString"),
      ).filter((key) => !FIELDS.has(key)),
      fc.jsonValue(),
      (message, key, value) => {
        const extra = parseMessage({ ...message, [key]: value });
        assert.ok(!extra.ok);
        assert.ok(extra.reason.includes(`"${key}"`), extra.reason);

        const { runId: _, ...withoutRunId } = message;
        const manual = parseMessage({ ...withoutRunId, kind: "manual" });
        assert.ok(!manual.ok);
        assert.equal(manual.reason, "runId: a manual run needs runId");
      },
    ),
    { numRuns: NUM_RUNS },
  );
});

/** A valid message with fields dropped, duplicated into odd types or nulled. */
function _mangled(message: RunMessage): fc.Arbitrary<unknown> {
  const keys = Object.keys(message);
  return fc.record({
    drop: fc.subarray(keys),
    replace: fc.dictionary(fc.constantFrom(...keys), fc.anything()),
  }).map(({ drop, replace }) => {
    const copy: Record<string, unknown> = { ...message, ...replace };
    for (const key of drop) delete copy[key];
    return copy;
  });
}

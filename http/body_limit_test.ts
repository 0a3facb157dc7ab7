import assert from "node:assert/strict";
import { Hono } from "hono";
import { bodyLimit } from "./body_limit.ts";

function app(timeoutMs: number) {
  return new Hono()
    .use(
      "*",
      bodyLimit(100, (c) => c.json({ error: "too big" }, 413), {
        timeoutMs,
      }),
    )
    .post("/", async (c) => c.json({ got: await c.req.text() }));
}

/** A body that sends `first` and then nothing, never ending. */
function trickle(first: string): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(first));
    },
  });
}

Deno.test("bodyLimit() answers 408 to a body that stops arriving, with or without a length", async () => {
  const lengths: Record<string, string>[] = [{}, { "content-length": "90" }];
  for (const headers of lengths) {
    const res = await app(50).request("/", {
      method: "POST",
      headers,
      body: trickle("ab"),
    });
    assert.equal(res.status, 408);
    assert.deepEqual(await res.json(), {
      error: "body: not received within 0.05 s",
    });
  }
});

Deno.test("bodyLimit() hands on a body that arrives in time, and refuses one too long", async () => {
  const ok = await app(5_000).request("/", { method: "POST", body: "hello" });
  assert.deepEqual(await ok.json(), { got: "hello" });
  const big = await app(5_000).request("/", {
    method: "POST",
    body: "x".repeat(101),
  });
  assert.equal(big.status, 413);
  const streamed = await app(5_000).request("/", {
    method: "POST",
    body: ReadableStream.from([new TextEncoder().encode("x".repeat(101))]),
  });
  assert.equal(streamed.status, 413);
});

Deno.test("bodyLimit() answers 400, not a 500, to a body cut off mid-way", async () => {
  const res = await app(5_000).request("/", {
    method: "POST",
    body: new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("ab"));
        controller.error(new Error("connection reset"));
      },
    }),
  });
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), {
    error: "body: the connection closed before it ended",
  });
});

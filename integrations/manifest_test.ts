import assert from "node:assert/strict";
import { integrationFiles, renderManifest } from "../scripts/gen_manifest.ts";
import { INTEGRATIONS } from "./manifest.ts";

Deno.test("manifest lists every integration file (run `deno task manifest` if not)", async () => {
  const dir = new URL("./", import.meta.url);
  const expected = renderManifest(await integrationFiles(dir));
  const actual = await Deno.readTextFile(new URL("manifest.ts", dir));
  assert.equal(actual, expected);
});

Deno.test("integration ids are unique and match their file names", async () => {
  const files = await integrationFiles(new URL("./", import.meta.url));
  assert.deepEqual(
    INTEGRATIONS.map((integration) => `${integration.id}.ts`),
    files,
  );
});

/**
 * Follows the "Creating a New Integration" walkthrough in docs/google.md on a
 * copy of the project: the new `integrations/probe.ts` (taken from the doc)
 * makes the manifest check fail until `deno task manifest` runs, and then the
 * service discovers it and runs a charm through it.
 */
import assert from "node:assert/strict";
import { integrationFiles, renderManifest } from "../scripts/gen_manifest.ts";
import { startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";

const ROOT = new URL("../", import.meta.url);
/** Not needed to run the service, or large. */
const SKIP = new Set([".git", "data", "node_modules", "bench", "docs"]);

Deno.test({
  name:
    "a new integration file from the walkthrough is discovered by the manifest and runs charms",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const doc = await Deno.readTextFile(new URL("docs/google.md", ROOT));
    const block = /```ts\n(\/\/ integrations\/probe\.ts\n[\s\S]*?)```/.exec(
      doc,
    );
    assert.ok(block, "docs/google.md has the integrations/probe.ts example");

    const dir = await Deno.makeTempDir({ prefix: "bcs_new_integration_" });
    try {
      await _copyTree(ROOT, new URL(`file://${dir}/`));
      const integrations = new URL(`file://${dir}/integrations/`);
      await Deno.writeTextFile(new URL("probe.ts", integrations), block[1]!);

      // The manifest test's check: stale until the task runs.
      const manifest = new URL("manifest.ts", integrations);
      const stale = await Deno.readTextFile(manifest);
      const files = await integrationFiles(integrations);
      assert.ok(files.includes("probe.ts"));
      assert.notEqual(stale, renderManifest(files));

      const task = await _deno(dir, [
        "run",
        "--allow-read",
        "--allow-write",
        "scripts/gen_manifest.ts",
      ]);
      assert.equal(task.code, 0, task.output);
      const fresh = await Deno.readTextFile(manifest);
      assert.equal(fresh, renderManifest(files));
      assert.match(fresh, /import \$probe from "\.\/probe\.ts";/);

      const init = await _deno(dir, [
        "run",
        "-A",
        "main.ts",
        "--initialize",
        "--integration=probe",
      ], { KV_PATH: `${dir}/init.sqlite3` });
      assert.equal(init.code, 0, init.output);
      assert.match(init.output, /^probe: created the charm registry$/m);
      assert.match(init.output, /^probe: PROBE_TOKEN not set$/m);

      await using service = await startService(
        [
          "--integration=probe",
          "--interval=1",
          "--log-interval=3600",
        ],
        { KV_PATH: `${dir}/kv.sqlite3` },
        { cwd: dir },
      );
      const post = (path: string, body: unknown) =>
        fetch(`${service.url}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        }).then(async (r) => ({ status: r.status, body: await r.json() }));
      const created = await post("/api/charms", {
        space: SPACE,
        recipe: "counter",
        charmId: "probed",
      });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const registered = await post("/api/integrations/probe/charms", {
        space: SPACE,
        charmId: "probed",
      });
      assert.deepEqual(registered.body, { added: true, reenabled: false });
      assert.equal((await post("/api/fanout", {})).status, 200);
      await waitFor("a run of the probe charm", async () => {
        const response = await fetch(
          `${service.url}/api/charms/${SPACE}/probed`,
        );
        const body = await response.json();
        return body.cells?.result?.count >= 1;
      });
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

async function _copyTree(from: URL, to: URL): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (SKIP.has(entry.name)) continue;
    if (entry.isDirectory) {
      await _copyTree(
        new URL(`${entry.name}/`, from),
        new URL(`${entry.name}/`, to),
      );
    } else if (entry.isFile) {
      await Deno.copyFile(new URL(entry.name, from), new URL(entry.name, to));
    }
  }
}

async function _deno(
  cwd: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; output: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code,
    output: decoder.decode(stdout) + decoder.decode(stderr),
  };
}

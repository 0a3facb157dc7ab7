/**
 * Telemetry end to end: the service exports a span per run and per fan-out
 * and its metrics over OTLP (http/json) to a receiver on loopback.
 */
import assert from "node:assert/strict";
import { startService } from "./service_process.ts";
import { SPACE, waitFor } from "./test_deps.ts";

interface OtlpAttribute {
  key: string;
  value: Record<string, unknown>;
}

function _attributes(list: OtlpAttribute[] = []): Record<string, unknown> {
  return Object.fromEntries(
    list.map((a) => [a.key, Object.values(a.value)[0]]),
  );
}

Deno.test({
  name:
    "telemetry: spans for runs and fan-outs, run metrics and the disabled gauge reach an OTLP receiver",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const spans: { name: string; attributes: Record<string, unknown> }[] = [];
    const metricNames = new Set<string>();
    const receiver = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (request) => {
        const path = new URL(request.url).pathname;
        const body = await request.json().catch(() => ({}));
        if (path === "/v1/traces") {
          for (const rs of body.resourceSpans ?? []) {
            for (const ss of rs.scopeSpans ?? []) {
              for (const span of ss.spans ?? []) {
                spans.push({
                  name: span.name,
                  attributes: _attributes(span.attributes),
                });
              }
            }
          }
        } else if (path === "/v1/metrics") {
          for (const rm of body.resourceMetrics ?? []) {
            for (const sm of rm.scopeMetrics ?? []) {
              for (const metric of sm.metrics ?? []) {
                metricNames.add(metric.name);
              }
            }
          }
        }
        return Response.json({});
      },
    );
    const dir = await Deno.makeTempDir();
    const service = await startService(["--integration=manual"], {
      KV_PATH: `${dir}/kv.sqlite3`,
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.addr.port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_METRIC_EXPORT_INTERVAL: "200",
      OTEL_SERVICE_NAME: "bcs-test",
    });
    try {
      const post = (path: string, body?: unknown) =>
        service.json(path, {
          method: "POST",
          headers: { "content-type": "application/json" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
      assert.equal(
        (await post("/api/charms", {
          space: SPACE,
          recipe: "counter",
          charmId: "t1",
        })).status,
        201,
      );
      await post("/api/integrations/manual/charms", {
        space: SPACE,
        charmId: "t1",
      });
      await post("/api/fanout");
      assert.equal((await post(`/api/charms/${SPACE}/t1/run`)).status, 202);

      const run = await waitFor(
        "a charm.run span that succeeded",
        () =>
          spans.find((s) =>
            s.name === "charm.run" &&
            s.attributes["bcs.outcome"] === "succeeded"
          ),
      );
      assert.equal(run.attributes["bcs.space"], SPACE);
      assert.equal(run.attributes["bcs.charm"], "t1");
      assert.equal(run.attributes["bcs.attempt"], 1);
      assert.ok("bcs.integration" in run.attributes);
      const fanout = await waitFor(
        "a fanout span",
        () => spans.find((s) => s.name === "fanout"),
      );
      assert.equal(fanout.attributes["bcs.integration"], "manual");
      await waitFor(
        "the run metrics and the gauge",
        () =>
          [
            "bcs.runs",
            "bcs.run.duration",
            "bcs.charms.disabled",
            "bcs.fanout.enqueued",
          ]
            .every((name) => metricNames.has(name)),
      );
      assert.equal(await service.stop("SIGTERM"), 0);
    } catch (error) {
      console.error(service.output());
      throw error;
    } finally {
      await service[Symbol.asyncDispose]();
      await receiver.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

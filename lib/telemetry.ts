/**
 * Telemetry through Deno's built-in OpenTelemetry (`OTEL_DENO=true`) and
 * `@opentelemetry/api`: a span per charm run and per fan-out, run counts by
 * outcome, a run-duration histogram and a gauge of disabled charms. Without
 * `OTEL_DENO` the API is a no-op.
 *
 * @module
 */
import {
  type Attributes,
  metrics,
  type Span,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { VERSION } from "./version.ts";

const SCOPE = "background-charm-service";
const tracer = trace.getTracer(SCOPE, VERSION);
const meter = metrics.getMeter(SCOPE, VERSION);

/** Run deliveries, by `outcome` (and `integration`). */
export const runsCounter = meter.createCounter("bcs.runs", {
  description: "Run deliveries by outcome",
});

/** How long a run delivery took, ms, by `outcome`. */
export const runDuration = meter.createHistogram("bcs.run.duration", {
  description: "Duration of a run delivery",
  unit: "ms",
});

/** Runs enqueued by fan-outs, by `integration`. */
export const fanoutEnqueued = meter.createCounter("bcs.fanout.enqueued", {
  description: "Runs enqueued by fan-outs",
});

const disabledGauge = meter.createObservableGauge("bcs.charms.disabled", {
  description: "Charms disabled (by failures or by hand)",
});

/** Reports the disabled-charm count from `read` at each export. */
export function observeDisabledCharms(read: () => Promise<number>): void {
  disabledGauge.addCallback(async (result) => {
    try {
      result.observe(await read());
    } catch {
      // KV closed or unreachable: skip this observation.
    }
  });
}

/**
 * Runs `fn` inside a span named `name`. A thrown error marks the span as an
 * error and is rethrown.
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return await tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: error instanceof Error ? error.message : String(error),
      });
      throw error;
    } finally {
      span.end();
    }
  });
}

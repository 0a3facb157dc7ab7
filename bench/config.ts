/**
 * The benchmark's configuration: sizes and durations from environment
 * variables (and a few flags), validated once, with the defaults in one
 * place. `BENCH_QUICK=1` (or `--quick`) swaps in small sizes for a smoke run
 * of about a minute.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { KvKind } from "./bench_kv.ts";

/** The measurement groups, in the order they run. */
export const STEPS = ["throughput", "fanout", "lateness", "http"] as const;

/** One of {@linkcode STEPS}. */
export type Step = typeof STEPS[number];

/** The validated configuration. */
export interface BenchConfig {
  quick: boolean;
  /** Repetitions of every figure (at least 3 for a real run). */
  reps: number;
  /** KV kinds the throughput, lateness and HTTP steps run on. */
  kinds: KvKind[];
  steps: Step[];
  /** `--max-concurrent` of the service under test (its default is 5). */
  maxConcurrent: number;
  /** Baseline backlog sizes (messages). */
  baselineSizes: number[];
  /** End-to-end sizes (charms); each is compared with the equal baseline. */
  e2eCharms: number[];
  /** Charms for the two-process `kv` driver run. */
  twoProcessCharms: number;
  /** Fan-out sizes (charms). */
  fanoutSizes: number[];
  latenessCharms: number;
  /** A divisor of 60 000. */
  latenessIntervalMs: number;
  latenessCycles: number;
  httpCharms: number;
  httpDurationMs: number;
  httpConcurrency: number;
  /** Where results are written. */
  outPath: string;
  help: boolean;
}

/** Defaults for a real run; {@linkcode QUICK} overrides some. */
export const DEFAULTS = {
  reps: 3,
  kinds: ["file", "memory"] as KvKind[],
  maxConcurrent: 5,
  baselineSizes: [2_000, 20_000],
  e2eCharms: [2_000],
  twoProcessCharms: 1_000,
  fanoutSizes: [10_000, 100_000],
  latenessCharms: 1_000,
  latenessIntervalMs: 10_000,
  latenessCycles: 3,
  httpCharms: 10_000,
  httpDurationMs: 3_000,
  httpConcurrency: 32,
};

/** The smoke run's sizes. */
export const QUICK: Partial<typeof DEFAULTS> = {
  baselineSizes: [300, 1_000],
  e2eCharms: [300],
  twoProcessCharms: 100,
  fanoutSizes: [1_000, 5_000],
  latenessCharms: 200,
  latenessIntervalMs: 3_000,
  httpCharms: 1_000,
  httpDurationMs: 1_000,
};

/** Every variable, for `--help` and the docs. */
export const VARIABLES: [string, string][] = [
  ["BENCH_QUICK", "1 for the smoke run's small sizes (also --quick)"],
  ["BENCH_REPS", "repetitions of every figure (default 3; also --reps)"],
  ["BENCH_ONLY", `steps to run, of ${STEPS.join(", ")} (also --only)`],
  ["BENCH_KV", "KV kinds: file, memory (default both)"],
  ["BENCH_MAX_CONCURRENT", "the service's --max-concurrent (default 5)"],
  ["BENCH_BASELINE_SIZES", "native-queue backlogs, messages (2000,20000)"],
  ["BENCH_E2E_CHARMS", "end-to-end charms (2000)"],
  ["BENCH_TWO_PROCESS_CHARMS", "charms for the two-process kv run (1000)"],
  ["BENCH_FANOUT_SIZES", "fan-out registry sizes (10000,100000)"],
  ["BENCH_LATENESS_CHARMS", "charms in the lateness run (1000)"],
  ["BENCH_LATENESS_INTERVAL_S", "lateness interval, s, divides 60 (10)"],
  ["BENCH_LATENESS_CYCLES", "lateness cycles (3)"],
  ["BENCH_HTTP_CHARMS", "charms behind the HTTP run (10000)"],
  ["BENCH_HTTP_SECONDS", "seconds of load per HTTP figure (3)"],
  ["BENCH_HTTP_CONCURRENCY", "requests in flight (32)"],
  ["BENCH_OUT", "results file (bench/results.json; also --out)"],
];

/**
 * Reads the configuration.
 *
 * @throws {TypeError} naming every bad variable or flag.
 */
export function loadBenchConfig(
  args: readonly string[],
  env: Record<string, string | undefined>,
): BenchConfig {
  const { values } = parseArgs({
    args: [...args],
    options: {
      quick: { type: "boolean" },
      only: { type: "string" },
      reps: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
    allowPositionals: false,
  });
  const errors: string[] = [];
  const quick = values.quick === true || _truthy(env.BENCH_QUICK);
  const base = { ...DEFAULTS, ...(quick ? QUICK : {}) };
  const read = <T>(
    name: string,
    raw: string | undefined,
    fallback: T,
    parse: (value: string) => T,
  ): T => {
    if (raw === undefined || raw === "") return fallback;
    try {
      return parse(raw);
    } catch (error) {
      errors.push(`${name}: ${(error as Error).message}`);
      return fallback;
    }
  };
  const int = (min: number, max: number) => (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new RangeError(
        `"${value}" is not a whole number from ${min} to ${max}`,
      );
    }
    return n;
  };
  const ints = (min: number, max: number) => (value: string) =>
    value.split(",").map((part) => int(min, max)(part.trim()));

  const stepsRaw = values.only ?? env.BENCH_ONLY;
  const steps = read(
    "BENCH_ONLY",
    stepsRaw,
    [...STEPS],
    (value) =>
      value.split(",").map((part) => {
        const step = part.trim() as Step;
        if (!STEPS.includes(step)) {
          throw new TypeError(
            `"${part}" is not a step; use ${STEPS.join(", ")}`,
          );
        }
        return step;
      }),
  );
  const kinds = read(
    "BENCH_KV",
    env.BENCH_KV,
    base.kinds,
    (value) =>
      value.split(",").map((part) => {
        const kind = part.trim();
        if (kind !== "file" && kind !== "memory") {
          throw new TypeError(`"${part}" is not a KV kind; use file, memory`);
        }
        return kind;
      }),
  );
  const latenessIntervalS = read(
    "BENCH_LATENESS_INTERVAL_S",
    env.BENCH_LATENESS_INTERVAL_S,
    base.latenessIntervalMs / 1000,
    (value) => {
      const n = int(1, 60)(value);
      if (60 % n !== 0) throw new RangeError(`${n} does not divide 60`);
      return n;
    },
  );
  const config: BenchConfig = {
    quick,
    reps: read(
      "BENCH_REPS",
      values.reps ?? env.BENCH_REPS,
      base.reps,
      int(1, 100),
    ),
    kinds,
    steps,
    maxConcurrent: read(
      "BENCH_MAX_CONCURRENT",
      env.BENCH_MAX_CONCURRENT,
      base.maxConcurrent,
      int(1, 1000),
    ),
    baselineSizes: read(
      "BENCH_BASELINE_SIZES",
      env.BENCH_BASELINE_SIZES,
      base.baselineSizes,
      ints(1, 1_000_000),
    ),
    e2eCharms: read(
      "BENCH_E2E_CHARMS",
      env.BENCH_E2E_CHARMS,
      base.e2eCharms,
      ints(1, 1_000_000),
    ),
    twoProcessCharms: read(
      "BENCH_TWO_PROCESS_CHARMS",
      env.BENCH_TWO_PROCESS_CHARMS,
      base.twoProcessCharms,
      int(0, 1_000_000),
    ),
    fanoutSizes: read(
      "BENCH_FANOUT_SIZES",
      env.BENCH_FANOUT_SIZES,
      base.fanoutSizes,
      ints(1, 10_000_000),
    ),
    latenessCharms: read(
      "BENCH_LATENESS_CHARMS",
      env.BENCH_LATENESS_CHARMS,
      base.latenessCharms,
      int(1, 1_000_000),
    ),
    latenessIntervalMs: latenessIntervalS * 1000,
    latenessCycles: read(
      "BENCH_LATENESS_CYCLES",
      env.BENCH_LATENESS_CYCLES,
      base.latenessCycles,
      int(1, 100),
    ),
    httpCharms: read(
      "BENCH_HTTP_CHARMS",
      env.BENCH_HTTP_CHARMS,
      base.httpCharms,
      int(0, 10_000_000),
    ),
    httpDurationMs: read(
      "BENCH_HTTP_SECONDS",
      env.BENCH_HTTP_SECONDS,
      base.httpDurationMs / 1000,
      int(1, 600),
    ) * 1000,
    httpConcurrency: read(
      "BENCH_HTTP_CONCURRENCY",
      env.BENCH_HTTP_CONCURRENCY,
      base.httpConcurrency,
      int(1, 1000),
    ),
    outPath: values.out ?? env.BENCH_OUT ??
      new URL("./results.json", import.meta.url).pathname,
    help: values.help === true,
  };
  if (errors.length > 0) throw new TypeError(errors.join("\n"));
  return config;
}

/** `--help` text. */
export function usage(): string {
  const width = Math.max(...VARIABLES.map(([name]) => name.length));
  return [
    "deno task bench [--quick] [--only=step,...] [--reps=N] [--out=path]",
    "",
    "Environment variables:",
    ...VARIABLES.map(([name, text]) => `  ${name.padEnd(width)}  ${text}`),
  ].join("\n");
}

function _truthy(value: string | undefined): boolean {
  return value !== undefined && !["", "0", "false", "no"].includes(
    value.toLowerCase(),
  );
}

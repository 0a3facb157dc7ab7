/**
 * `deno task bench`: runs the benchmarks of issue 7, prints a progress line
 * per measurement and a table, and writes `bench/results.json`. See
 * `docs/benchmarks.md` for what each figure means.
 *
 * @module
 */
import { type BenchConfig, loadBenchConfig, usage } from "./config.ts";
import { KV_DRIVER, NATIVE_DRIVER } from "./drivers.ts";
import { describeMachine } from "./machine.ts";
import { formatRows, formatTargets, type Row, type Target } from "./report.ts";
import {
  fanoutStep,
  httpStep,
  latenessStep,
  type Progress,
  throughputStep,
} from "./steps.ts";

let config: BenchConfig;
try {
  config = loadBenchConfig(Deno.args, Deno.env.toObject());
} catch (error) {
  console.error(`error: ${(error as Error).message}`);
  Deno.exit(2);
}
if (config.help) {
  console.log(usage());
  Deno.exit(0);
}

const started = performance.now();
const progress: Progress = (line) =>
  console.log(
    `[bench ${
      ((performance.now() - started) / 1000).toFixed(1).padStart(6)
    } s] ${line}`,
  );
const machine = await describeMachine();
const drivers = { native: NATIVE_DRIVER, kv: KV_DRIVER };
progress(
  `${machine.cores} cores, ${
    Math.round(machine.memoryBytes / 2 ** 30)
  } GiB, Deno ${machine.deno}; steps: ${config.steps.join(", ")}${
    config.quick ? " (quick)" : ""
  }`,
);

const rows: Row[] = [];
const targets: Target[] = [];
const results: Record<string, unknown> = {};
const steps = {
  throughput: () => throughputStep(config, drivers, progress),
  fanout: () => fanoutStep(config, progress),
  lateness: () => latenessStep(config, drivers, progress),
  http: () => httpStep(config, progress),
};
for (const step of config.steps) {
  const output = await steps[step]();
  results[step] = output.results;
  rows.push(...output.rows);
  targets.push(...output.targets);
}

const durationS = (performance.now() - started) / 1000;
const { outPath: _, help: __, ...sizes } = config;
await Deno.writeTextFile(
  config.outPath,
  JSON.stringify(
    {
      machine: { ...machine, loadAverageAtEnd: Deno.loadavg() },
      config: sizes,
      durationS: Math.round(durationS),
      results,
      targets,
    },
    null,
    2,
  ) + "\n",
);
console.log();
console.log(formatRows(rows));
console.log();
console.log(formatTargets(targets));
console.log();
progress(`done in ${durationS.toFixed(0)} s; wrote ${config.outPath}`);

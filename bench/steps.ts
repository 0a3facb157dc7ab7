/**
 * The benchmark's steps. Each runs its measurements with progress lines,
 * and returns its part of `results.json`, its table rows and its targets.
 *
 * @module
 */
import type { KvKind } from "./bench_kv.ts";
import type { BenchConfig } from "./config.ts";
import type { DriverFactory } from "./drivers.ts";
import { endToEnd, type EndToEndResult } from "./end_to_end.ts";
import { fanoutOnce, prepareFanoutTemplates } from "./fanout_scale.ts";
import { HTTP_PATHS, loadOnce, startHttpTarget } from "./http_bench.ts";
import {
  kvCeiling,
  type KvCeilingResult,
  nativeCeiling,
} from "./kv_ceiling.ts";
import { type CycleLateness, lateness } from "./lateness.ts";
import { queueBaseline } from "./queue_baseline.ts";
import { fmt, type Row, type Target } from "./report.ts";
import { type Figure, figure, roundFigure } from "./stats.ts";
import type { ThreadBusy } from "./threads.ts";

/** The KV ceilings measured next to the end-to-end figures. */
const CEILINGS = ["native", "kv-runs", "kv"] as const;
type Ceiling = typeof CEILINGS[number];

/** How each ceiling is measured (`bench/kv_ceiling.ts`). */
const CEILING_RUNNERS: Record<
  Ceiling,
  (kind: KvKind, runs: number) => Promise<KvCeilingResult>
> = {
  native: nativeCeiling,
  "kv-runs": (kind, runs) => kvCeiling(kind, runs),
  kv: (kind, runs) => kvCeiling(kind, runs, { withFanout: true }),
};

const CEILING_LABELS: Record<Ceiling, string> = {
  native: "KV ceiling, native: the fan-out's and a pure run's KV requests",
  "kv-runs": "KV ceiling, kv driver: a pure run's KV requests",
  kv: "KV ceiling, kv driver: the fan-out's and a pure run's KV requests",
};

/** Prints progress lines with the time since the run started. */
export type Progress = (line: string) => void;

/** What a step hands back. */
export interface StepOutput {
  results: unknown;
  rows: Row[];
  targets: Target[];
}

/** The drivers a run measures. */
export interface Drivers {
  native: DriverFactory;
  kv: DriverFactory;
}

const MB = 1024 * 1024;

/**
 * Throughput, repetitions interleaved so each repetition's ratios compare
 * figures taken minutes apart at most: per repetition and KV kind, the
 * native-queue baseline at each backlog, then the service end to end on each
 * driver, then (file only) the `kv` driver with two processes.
 */
export async function throughputStep(
  config: BenchConfig,
  drivers: Drivers,
  progress: Progress,
): Promise<StepOutput> {
  const serviceDrivers = [drivers.native, drivers.kv];
  const baseline = new Map<string, number[]>();
  const enqueueMs = new Map<string, number[]>();
  const baselineCpu = new Map<string, number[]>();
  const baselineBusy = new Map<string, (ThreadBusy | null)[]>();
  const baselineMainCpu = new Map<string, (number | null)[]>();
  const e2e = new Map<string, EndToEndResult[]>();
  const ceiling = new Map<string, number[]>();
  const ceilingBusy = new Map<string, (ThreadBusy | null)[]>();
  const add = <T>(map: Map<string, T[]>, key: string, value: T) =>
    map.set(key, [...(map.get(key) ?? []), value]);
  const timeoutMs = (n: number) => 60_000 + n * 20;

  for (let rep = 1; rep <= config.reps; rep++) {
    for (const kind of config.kinds) {
      for (const size of config.baselineSizes) {
        const r = await queueBaseline(kind, size, timeoutMs(size));
        add(baseline, `${kind}/${size}`, r.messagesPerSecond);
        add(enqueueMs, `${kind}/${size}`, r.enqueueMs);
        add(baselineCpu, `${kind}/${size}`, r.cpuMsPerMessage);
        add(baselineBusy, `${kind}/${size}`, r.threadBusy);
        add(baselineMainCpu, `${kind}/${size}`, r.mainCpuMsPerMessage);
        progress(
          `baseline ${kind} ${fmt(size)} msgs #${rep}: ${
            fmt(r.messagesPerSecond)
          } msg/s`,
        );
      }
      for (const driver of serviceDrivers) {
        for (const charms of config.e2eCharms) {
          const r = await endToEnd({
            kind,
            driver,
            charms,
            maxConcurrent: config.maxConcurrent,
            processes: 1,
            timeoutMs: timeoutMs(charms),
          });
          _checkRuns(r, charms);
          add(e2e, `${driver.name}/1/${kind}/${charms}`, r);
          progress(
            `end-to-end ${driver.name} ${kind} ${fmt(charms)} charms #${rep}: ${
              fmt(r.runsPerSecond)
            } runs/s, ${fmt(r.kvOpsPerRun?.total ?? NaN)} KV ops/run`,
          );
        }
      }
      const ceilingRuns = config.e2eCharms[0]!;
      for (const which of CEILINGS) {
        const limit = await CEILING_RUNNERS[which](kind, ceilingRuns);
        const key = `${which}/${kind}/${ceilingRuns}`;
        add(ceiling, key, limit.runsPerSecond);
        add(ceilingBusy, key, limit.threadBusy);
        progress(
          `KV ceiling (${which}) ${kind} ${fmt(ceilingRuns)} runs #${rep}: ${
            fmt(limit.runsPerSecond)
          } runs/s`,
        );
      }
      if (
        kind === "file" && config.twoProcessCharms > 0
      ) {
        const charms = config.twoProcessCharms;
        const r = await endToEnd({
          kind,
          driver: drivers.kv,
          charms,
          maxConcurrent: config.maxConcurrent,
          processes: 2,
          timeoutMs: timeoutMs(charms) * 4,
        });
        _checkRuns(r, charms);
        add(e2e, `kv/2/${kind}/${charms}`, r);
        progress(
          `end-to-end kv ${kind} two processes ${fmt(charms)} charms #${rep}: ${
            fmt(r.runsPerSecond)
          } runs/s`,
        );
      }
    }
  }

  const rows: Row[] = [];
  const targets: Target[] = [];
  const results: Record<string, unknown> = {
    baseline: {},
    endToEnd: {},
  };
  const baselineOut = results.baseline as Record<string, unknown>;
  for (const kind of config.kinds) {
    for (const size of config.baselineSizes) {
      const values = baseline.get(`${kind}/${size}`)!;
      baselineOut[`${kind}/${size}`] = {
        kind,
        backlog: size,
        messagesPerSecond: roundFigure(figure(values)),
        enqueueMs: roundFigure(figure(enqueueMs.get(`${kind}/${size}`)!)),
        cpuMsPerMessage: roundFigure(
          figure(baselineCpu.get(`${kind}/${size}`)!),
        ),
        threadBusy: _busy(baselineBusy.get(`${kind}/${size}`)!),
        mainCpuMsPerMessage: _optionalFigure(
          baselineMainCpu.get(`${kind}/${size}`)!,
        ),
      };
      rows.push({
        measurement: `1. native queue baseline, ${fmt(size)} backlog`,
        kv: kind,
        figure: figure(values),
        unit: "msg/s",
      });
      rows.push({
        measurement: `   CPU per message (all threads)`,
        kv: kind,
        figure: figure(baselineCpu.get(`${kind}/${size}`)!),
        unit: "ms",
      });
      rows.push(..._busyRows(baselineBusy.get(`${kind}/${size}`)!, kind));
      rows.push(
        ..._mainCpuRows(
          baselineMainCpu.get(`${kind}/${size}`)!,
          kind,
          "message",
        ),
      );
    }
  }

  // The KV ceilings, each as a figure with its ratios to the baselines.
  results.kvCeiling = {};
  const ceilings = new Map<string, Record<string, Figure>>();
  for (const [key, values] of ceiling) {
    const kind = key.split("/")[1] as KvKind;
    ceilings.set(
      key,
      _ratios(
        values,
        config.baselineSizes.map((size) => baseline.get(`${kind}/${size}`)!),
        config.baselineSizes,
      ),
    );
  }
  const ceilingRows = (which: Ceiling): Row[] => {
    const out: Row[] = [];
    for (const [key, values] of ceiling) {
      const [of, kind, runs] = key.split("/") as [Ceiling, KvKind, string];
      if (of !== which) continue;
      const rate = figure(values);
      const ratios = ceilings.get(key)!;
      (results.kvCeiling as Record<string, unknown>)[key] = {
        driver: which === "native" ? "native" : "kv",
        withFanout: which !== "kv-runs",
        kind,
        runs: Number(runs),
        runsPerSecond: roundFigure(rate),
        ratioToBaseline: Object.fromEntries(
          Object.entries(ratios).map(([k, f]) => [k, roundFigure(f)]),
        ),
        threadBusy: _busy(ceilingBusy.get(key)!),
      };
      out.push({
        measurement: `${which === "native" ? 2 : 3}. ${
          CEILING_LABELS[which]
        }, ${fmt(Number(runs))} runs`,
        kv: kind,
        figure: rate,
        unit: "runs/s",
      });
      out.push(..._ratioRows(ratios, kind));
      out.push(..._busyRows(ceilingBusy.get(key)!, kind));
    }
    return out;
  };
  /**
   * The ceiling's ratio to the baseline at `size`, for a target over
   * `runs` runs (ceilings are measured at the first end-to-end size only).
   */
  const ceilingAt = (
    which: Ceiling,
    kind: KvKind,
    runs: number,
    size: number,
  ) => {
    const ratio = ceilings.get(`${which}/${kind}/${runs}`)?.[String(size)];
    return ratio === undefined ? undefined : `${fmt(ratio.median)}×`;
  };

  const e2eOut = results.endToEnd as Record<string, unknown>;
  for (const driver of [drivers.native, drivers.kv]) {
    const byDriver: Record<string, unknown> = {};
    e2eOut[driver.name] = byDriver;
    const step = driver.name === "native" ? "2" : "3";
    for (const processes of [1, 2] as const) {
      for (const kind of config.kinds) {
        const sizes = processes === 1
          ? config.e2eCharms
          : [config.twoProcessCharms];
        for (const charms of sizes) {
          const runs = e2e.get(`${driver.name}/${processes}/${kind}/${charms}`);
          if (runs === undefined) continue;
          const rate = figure(runs.map((r) => r.runsPerSecond));
          const ratios = _ratios(
            runs.map((r) => r.runsPerSecond),
            config.baselineSizes.map((size) =>
              baseline.get(`${kind}/${size}`)!
            ),
            config.baselineSizes,
          );
          const ops = runs[0]!.kvOpsPerRun;
          const cpu = runs[0]!.cpuMsPerRun === null
            ? null
            : figure(runs.map((r) => r.cpuMsPerRun!));
          byDriver[`${processes}p/${kind}/${charms}`] = {
            kind,
            processes,
            charms,
            runsPerSecond: roundFigure(rate),
            ratioToBaseline: Object.fromEntries(
              Object.entries(ratios).map(([k, f]) => [k, roundFigure(f)]),
            ),
            fanoutMs: roundFigure(figure(runs.map((r) => r.fanoutMs))),
            kvOpsPerRun: ops,
            kvOpCounts: runs[0]!.counts,
            cpuMsPerRun: cpu === null ? null : roundFigure(cpu),
            threadBusy: _busy(runs.map((r) => r.threadBusy)),
            mainCpuMsPerRun: _optionalFigure(
              runs.map((r) => r.mainCpuMsPerRun),
            ),
          };
          const label = processes === 2 ? ", 2 processes" : "";
          rows.push({
            measurement: `${step}. end to end, ${driver.name}${label}, ${
              fmt(charms)
            } charms`,
            kv: kind,
            figure: rate,
            unit: "runs/s",
          });
          rows.push(..._ratioRows(ratios, kind));
          if (cpu !== null) {
            rows.push({
              measurement: `   CPU per run (all threads)`,
              kv: kind,
              figure: cpu,
              unit: "ms",
            });
          }
          rows.push(..._busyRows(runs.map((r) => r.threadBusy), kind));
          rows.push(
            ..._mainCpuRows(runs.map((r) => r.mainCpuMsPerRun), kind, "run"),
          );
          if (ops !== null) {
            rows.push({
              measurement: `   KV ops per run (reads + writes)`,
              kv: kind,
              figure: null,
              unit: "",
              text: `${fmt(ops.total)} (${fmt(ops.reads)} + ${
                fmt(ops.writes)
              })`,
            });
          }
          if (processes === 2) continue;
          if (driver.name === "native") {
            const size = _nearest(config.baselineSizes, charms);
            const ratio = ratios[String(size)]!;
            targets.push({
              name: `end to end (${fmt(charms)} runs) ≥ 0.8× baseline (${
                fmt(size)
              } backlog), ${kind}`,
              target: "≥ 0.8×",
              value: `${fmt(ratio.median)}×`,
              met: ratio.median >= 0.8,
              ceiling: ceilingAt("native", kind, charms, size),
            });
          } else {
            // Against every backlog size: the native queue slows as its
            // backlog grows, so its rate at each size is a bar to clear.
            for (const [size, ratio] of Object.entries(ratios)) {
              const factor = _kvFactor(kind);
              targets.push({
                name: `kv driver (${fmt(charms)} runs) ≥ ${factor}× native (${
                  fmt(Number(size))
                } backlog), ${kind}`,
                target: `≥ ${factor}×`,
                value: `${fmt(ratio.median)}×`,
                met: ratio.median >= factor,
                ceiling: ceilingAt("kv", kind, charms, Number(size)),
              });
            }
          }
        }
      }
    }
    if (driver.name === "native") rows.push(...ceilingRows("native"));
    else rows.push(...ceilingRows("kv-runs"), ...ceilingRows("kv"));
  }
  return { results, rows, targets };
}

/** A figure of values every repetition has; `null` otherwise. */
function _optionalFigure(values: (number | null)[]): Figure | null {
  if (values.length === 0 || values.some((v) => v === null)) return null;
  return roundFigure(figure(values as number[]));
}

/** The main thread's CPU per message or per run, if measured. */
function _mainCpuRows(
  values: (number | null)[],
  kind: KvKind,
  per: "message" | "run",
): Row[] {
  const cpu = _optionalFigure(values);
  if (cpu === null) return [];
  return [{
    measurement: `   main-thread CPU per ${per}`,
    kv: kind,
    figure: cpu,
    unit: "ms",
  }];
}

/** Thread busy shares as figures; `null` where a repetition had none. */
function _busy(
  shares: (ThreadBusy | null)[],
): { main: Figure; kv: Figure } | null {
  if (shares.length === 0 || shares.some((b) => b === null)) return null;
  const all = shares as ThreadBusy[];
  return {
    main: roundFigure(figure(all.map((b) => b.main))),
    kv: roundFigure(figure(all.map((b) => b.kv))),
  };
}

/** The row saying which thread was busy (medians), if measured. */
function _busyRows(shares: (ThreadBusy | null)[], kind: KvKind): Row[] {
  const busy = _busy(shares);
  if (busy === null) return [];
  const pct = (f: Figure) => `${Math.round(f.median * 100)}%`;
  return [{
    measurement: `   busy: main thread / SQLite thread`,
    kv: kind,
    figure: null,
    unit: "",
    text: `${pct(busy.main)} / ${pct(busy.kv)}`,
  }];
}

/** Fan-out at scale: one cron tick's fan-out per size, each in a subprocess. */
export async function fanoutStep(
  config: BenchConfig,
  progress: Progress,
): Promise<StepOutput> {
  const sizes = [...config.fanoutSizes].sort((a, b) => a - b);
  await using templates = await prepareFanoutTemplates(sizes, progress);
  const runs = new Map<number, Awaited<ReturnType<typeof fanoutOnce>>[]>();
  for (let rep = 1; rep <= config.reps; rep++) {
    for (const size of sizes) {
      const r = await fanoutOnce(
        templates.paths.get(size)!,
        size,
        120_000 + size * 2,
      );
      runs.set(size, [...(runs.get(size) ?? []), r]);
      progress(
        `fan-out ${fmt(size)} charms #${rep}: ${
          fmt(r.elapsedMs / 1000)
        } s, peak RSS ${fmt(_peak(r) / MB)} MB`,
      );
    }
  }
  const rows: Row[] = [];
  const out: Record<string, unknown> = {};
  const peaks = new Map<number, Figure>();
  for (const size of sizes) {
    const r = runs.get(size)!;
    const seconds = figure(r.map((x) => x.elapsedMs / 1000));
    const peak = figure(r.map((x) => _peak(x) / MB));
    peaks.set(size, peak);
    out[String(size)] = {
      charms: size,
      seconds: roundFigure(seconds),
      runsEnqueuedPerSecond: roundFigure(
        figure(r.map((x) => x.enqueued / (x.elapsedMs / 1000))),
      ),
      peakRssMb: roundFigure(peak),
      rssBeforeMb: roundFigure(figure(r.map((x) => x.rssBeforeBytes / MB))),
      peakHeapMb: roundFigure(figure(r.map((x) => x.heapPeakBytes / MB))),
      enqueueCalls: r[0]!.enqueueCalls,
    };
    rows.push({
      measurement: `4. fan-out, ${fmt(size)} charms`,
      kv: "file",
      figure: seconds,
      unit: "s",
    });
    rows.push({
      measurement: `   peak RSS (process)`,
      kv: "file",
      figure: peak,
      unit: "MB",
    });
  }
  const smallest = sizes[0]!;
  const largest = sizes.at(-1)!;
  const rssRatio = peaks.get(largest)!.median / peaks.get(smallest)!.median;
  out.rssRatio = { of: `${largest}/${smallest}`, value: rssRatio };
  rows.push({
    measurement: `   peak RSS ${fmt(largest)} / ${fmt(smallest)}`,
    kv: "file",
    figure: null,
    unit: "",
    text: `${fmt(rssRatio)}×`,
  });
  const largestSeconds = figure(
    runs.get(largest)!.map((x) => x.elapsedMs / 1000),
  );
  const peakMax = peaks.get(largest)!.max;
  const scaled = largest < 100_000 ? ` (scaled: ${fmt(largest)})` : "";
  return {
    results: out,
    rows,
    targets: [
      {
        name: `fan-out of ${fmt(largest)} charms < 60 s${scaled}`,
        target: "< 60 s",
        value: `${fmt(largestSeconds.max)} s (worst)`,
        met: largestSeconds.max < 60,
      },
      {
        name: `peak RSS at ${fmt(largest)} charms < 200 MB${scaled}`,
        target: "< 200 MB",
        value: `${fmt(peakMax)} MB (worst)`,
        met: peakMax < 200,
      },
      {
        name: `RSS(${fmt(largest)}) ≤ 1.5 × RSS(${fmt(smallest)})`,
        target: "≤ 1.5×",
        value: `${fmt(rssRatio)}×`,
        met: rssRatio <= 1.5,
      },
    ],
  };
}

/** Schedule lateness per driver and KV kind; each cycle is a repetition. */
export async function latenessStep(
  config: BenchConfig,
  drivers: Drivers,
  progress: Progress,
): Promise<StepOutput> {
  const rows: Row[] = [];
  const targets: Target[] = [];
  const out: Record<string, unknown> = {
    intervalMs: config.latenessIntervalMs,
    charms: config.latenessCharms,
    cycles: config.latenessCycles,
  };
  const runs: [DriverFactory, KvKind][] = config.kinds.map((kind) => [
    drivers.native,
    kind,
  ]);
  // The kv driver on the file only: its lateness comes from its own polling,
  // not the store, and the step is bounded by wall time.
  runs.push([drivers.kv, "file"]);
  for (const [driver, kind] of runs) {
    const cycles: CycleLateness[] = await lateness({
      kind,
      driver,
      charms: config.latenessCharms,
      intervalMs: config.latenessIntervalMs,
      cycles: config.latenessCycles,
      maxConcurrent: config.maxConcurrent,
      onCycle: (cycle, r) =>
        progress(
          `lateness ${driver.name} ${kind} cycle ${cycle + 1}: p50 ${
            fmt(r.p50Ms)
          } ms, p99 ${fmt(r.p99Ms)} ms, max ${fmt(r.maxMs)} ms`,
        ),
    });
    const p50 = figure(cycles.map((c) => c.p50Ms));
    const p99 = figure(cycles.map((c) => c.p99Ms));
    const max = figure(cycles.map((c) => c.maxMs));
    const perTenth = Array.from(
      { length: 10 },
      (_, i) => cycles.reduce((sum, c) => sum + c.perTenth[i]!, 0),
    );
    const sortedTenths = [...perTenth].sort((a, b) => a - b);
    out[`${driver.name}/${kind}`] = {
      driver: driver.name,
      kind,
      p50Ms: roundFigure(p50),
      p99Ms: roundFigure(p99),
      maxMs: roundFigure(max),
      minMs: Math.min(...cycles.map((c) => c.minMs)),
      startsPerTenthOfInterval: perTenth,
      startsAfterInterval: cycles.reduce((s, c) => s + c.afterInterval, 0),
      tenthsMinOverMax: sortedTenths[0]! / sortedTenths.at(-1)!,
      cycles,
    };
    const label = `5. lateness, ${driver.name}, ${
      fmt(config.latenessCharms)
    } @ ${config.latenessIntervalMs / 1000} s`;
    rows.push({
      measurement: `${label} p50`,
      kv: kind,
      figure: p50,
      unit: "ms",
    });
    rows.push({ measurement: `   p99`, kv: kind, figure: p99, unit: "ms" });
    rows.push({ measurement: `   max`, kv: kind, figure: max, unit: "ms" });
    rows.push({
      measurement: `   starts per tenth of interval`,
      kv: kind,
      figure: null,
      unit: "",
      text: perTenth.join(" "),
    });
    targets.push({
      name: `lateness p99 < 2 s (${driver.name}, ${kind}, ${
        config.latenessIntervalMs / 1000
      } s interval)`,
      target: "< 2000 ms",
      value: `${fmt(p99.max)} ms (worst cycle)`,
      met: p99.max < 2000,
    });
  }
  return { results: out, rows, targets };
}

/** HTTP requests per second per KV kind and endpoint. */
export async function httpStep(
  config: BenchConfig,
  progress: Progress,
): Promise<StepOutput> {
  const rows: Row[] = [];
  const out: Record<string, unknown> = {
    charms: config.httpCharms,
    concurrency: config.httpConcurrency,
    durationMs: config.httpDurationMs,
    loadGenerator: "bench/http_load.ts (Deno fetch, subprocess)",
  };
  for (const kind of config.kinds) {
    await using target = await startHttpTarget(kind, config.httpCharms);
    progress(`http ${kind}: serving ${fmt(config.httpCharms)} charms`);
    const rates = new Map<string, number[]>();
    const p50s = new Map<string, number[]>();
    const p99s = new Map<string, number[]>();
    for (let rep = 1; rep <= config.reps; rep++) {
      for (const path of HTTP_PATHS) {
        const r = await loadOnce(
          target.origin + path,
          config.httpConcurrency,
          config.httpDurationMs,
        );
        rates.set(path, [...(rates.get(path) ?? []), r.requestsPerSecond]);
        p50s.set(path, [...(p50s.get(path) ?? []), r.latencyMs.p50]);
        p99s.set(path, [...(p99s.get(path) ?? []), r.latencyMs.p99]);
        progress(
          `http ${kind} GET ${path} #${rep}: ${
            fmt(r.requestsPerSecond)
          } req/s, p99 ${fmt(r.latencyMs.p99)} ms`,
        );
      }
    }
    for (const path of HTTP_PATHS) {
      const rate = figure(rates.get(path)!);
      out[`${kind} ${path}`] = {
        kind,
        path,
        requestsPerSecond: roundFigure(rate),
        latencyP50Ms: roundFigure(figure(p50s.get(path)!)),
        latencyP99Ms: roundFigure(figure(p99s.get(path)!)),
      };
      rows.push({
        measurement: `6. GET ${path}, ${fmt(config.httpCharms)} charms`,
        kv: kind,
        figure: rate,
        unit: "req/s",
      });
    }
  }
  return { results: out, rows, targets: [] };
}

/**
 * Each repetition's rate over the baseline's in the same repetition, per
 * backlog size (`baselines[i]` holds the repetitions at `sizes[i]`).
 */
function _ratios(
  rates: number[],
  baselines: number[][],
  sizes: readonly number[],
): Record<string, Figure> {
  return Object.fromEntries(
    sizes.map((size, s) => [
      String(size),
      figure(rates.map((rate, i) => rate / baselines[s]![i]!)),
    ]),
  );
}

function _ratioRows(ratios: Record<string, Figure>, kind: KvKind): Row[] {
  return Object.entries(ratios).map(([size, ratio]) => ({
    measurement: `   ratio to baseline at ${fmt(Number(size))}`,
    kv: kind,
    figure: ratio,
    unit: "×",
  }));
}

function _checkRuns(r: EndToEndResult, charms: number): void {
  if (r.succeeded !== charms || r.failed !== 0) {
    throw new Error(
      `End to end: ${r.succeeded} of ${charms} runs succeeded, ${r.failed} failed`,
    );
  }
}

function _kvFactor(kind: KvKind): number {
  return kind === "file" ? 3 : 8;
}

function _nearest(sizes: readonly number[], n: number): number {
  return [...sizes].sort((a, b) => Math.abs(a - n) - Math.abs(b - n))[0]!;
}

function _peak(
  r: { rssHighWaterBytes: number | null; rssPeakSampledBytes: number },
) {
  return Math.max(r.rssHighWaterBytes ?? 0, r.rssPeakSampledBytes);
}

/**
 * Summarises a V8 `.cpuprofile` (from `deno run --cpu-prof`): self time by
 * function and by file, heaviest first, and the idle share (time the
 * isolate waited on I/O, here on KV).
 *
 * Usage: `deno run --allow-read bench/cpu_profile_summary.ts <file>
 * [top=25]`.
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function and per file, in ms. */
export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  gcMs: number;
  byFunction: [string, number][];
  byFile: [string, number][];
}

/** Summarises a parsed profile. */
export function summarise(profile: CpuProfile): ProfileSummary {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  for (const [id, us] of selfUs) {
    const frame = nodes.get(id)!.callFrame;
    const name = frame.functionName || "(anonymous)";
    if (name === "(idle)") idle += us;
    if (name === "(garbage collector)") gc += us;
    const file = _shortUrl(frame.url) || name;
    const fn = `${name} ${file}:${frame.lineNumber + 1}`;
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  const sorted = (m: Map<string, number>) =>
    [...m].map(([k, v]) => [k, v / 1000] as [string, number])
      .sort((a, b) => b[1] - a[1]);
  return {
    totalMs: (profile.endTime - profile.startTime) / 1000,
    idleMs: idle / 1000,
    gcMs: gc / 1000,
    byFunction: sorted(byFunction),
    byFile: sorted(byFile),
  };
}

function _shortUrl(url: string): string {
  return url
    .replace(
      /^file:\/\/.*?\/(bench|handlers|store|queue|service|http|lib|charm|integrations)\//,
      "$1/",
    )
    .replace(/^.*node_modules\/\.deno\//, "npm:")
    .replace(/^ext:/, "ext:");
}

if (import.meta.main) {
  const [path, topText] = Deno.args;
  if (!path) throw new TypeError("usage: cpu_profile_summary.ts <file> [top]");
  const top = Number(topText ?? 25);
  const s = summarise(JSON.parse(await Deno.readTextFile(path)));
  const pct = (ms: number) => `${((100 * ms) / s.totalMs).toFixed(1)}%`;
  console.log(
    `total ${s.totalMs.toFixed(0)} ms; idle ${pct(s.idleMs)}; GC ${
      pct(s.gcMs)
    }`,
  );
  console.log("\nself time by file:");
  for (const [file, ms] of s.byFile.slice(0, top)) {
    console.log(
      `${pct(ms).padStart(6)}  ${ms.toFixed(0).padStart(6)} ms  ${file}`,
    );
  }
  console.log("\nself time by function:");
  for (const [fn, ms] of s.byFunction.slice(0, top)) {
    console.log(
      `${pct(ms).padStart(6)}  ${ms.toFixed(0).padStart(6)} ms  ${fn}`,
    );
  }
}

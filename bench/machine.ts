/**
 * The machine a benchmark ran on, recorded with its results.
 *
 * @module
 */

/** What the results record about the machine. */
export interface Machine {
  cores: number;
  cpuModel: string | null;
  memoryBytes: number;
  os: string;
  deno: string;
  v8: string;
  typescript: string;
  /** 1-, 5- and 15-minute load averages when the run started. */
  loadAverageAtStart: number[];
  date: string;
}

/** Reads the machine's description. */
export async function describeMachine(): Promise<Machine> {
  let cpuModel: string | null = null;
  try {
    const cpuinfo = await Deno.readTextFile("/proc/cpuinfo");
    cpuModel = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? null;
  } catch {
    // Not Linux: leave it out.
  }
  return {
    cores: navigator.hardwareConcurrency,
    cpuModel,
    memoryBytes: Deno.systemMemoryInfo().total,
    os: `${Deno.build.os} ${Deno.osRelease()} ${Deno.build.arch}`,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    loadAverageAtStart: Deno.loadavg(),
    date: new Date().toISOString(),
  };
}

/**
 * Which thread bounds a measurement. Deno runs a local KV's SQLite work on a
 * thread of its own (named `sw-…`, one per open KV, gone when it closes),
 * and everything else (the service's JavaScript, the KV calls' encoding and
 * decoding, the event loop) on the main thread. A figure bound by the main
 * thread gets faster with less JavaScript per run; one bound by the SQLite
 * thread only with fewer or cheaper KV requests.
 *
 * Read from `/proc/self/task` (Linux); `null` elsewhere. CPU times there are
 * in clock ticks of 10 ms (`USER_HZ` is 100 on Linux), so a share over a
 * measurement of half a second is good to about 2%.
 *
 * @module
 */

/** CPU time so far, ms, of the main thread and of the KV's SQLite threads. */
export interface ThreadCpu {
  mainMs: number;
  kvMs: number;
}

/** Busy share of each thread over a measurement (0..1). */
export interface ThreadBusy {
  main: number;
  kv: number;
}

const TICK_MS = 10;

/** Reads the threads' CPU times now; `null` where `/proc` is missing. */
export function threadCpu(): ThreadCpu | null {
  let tasks: Iterable<Deno.DirEntry>;
  try {
    tasks = Deno.readDirSync("/proc/self/task");
  } catch {
    return null;
  }
  let mainMs = 0;
  let kvMs = 0;
  for (const task of tasks) {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/self/task/${task.name}/stat`);
    } catch {
      continue; // The thread ended meanwhile.
    }
    const close = stat.lastIndexOf(")");
    const name = stat.slice(stat.indexOf("(") + 1, close);
    // Fields after the name start at field 3; utime and stime are 14 and 15.
    const fields = stat.slice(close + 2).split(" ");
    const ms = (Number(fields[11]) + Number(fields[12])) * TICK_MS;
    if (task.name === String(Deno.pid)) mainMs += ms;
    else if (name.startsWith("sw-")) kvMs += ms;
  }
  return { mainMs, kvMs };
}

/** Each thread's busy share between two readings `elapsedMs` apart. */
export function threadBusy(
  before: ThreadCpu | null,
  after: ThreadCpu | null,
  elapsedMs: number,
): ThreadBusy | null {
  if (before === null || after === null || elapsedMs <= 0) return null;
  return {
    main: (after.mainMs - before.mainMs) / elapsedMs,
    kv: (after.kvMs - before.kvMs) / elapsedMs,
  };
}

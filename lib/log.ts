/**
 * Logging through LogTape: one category per part of the service under the
 * root `bcs` (`bcs.cron`, `bcs.fanout`, `bcs.run`, `bcs.http`, ...), with
 * structured properties and readable lines on the console.
 *
 * @module
 */
import {
  configure,
  getConsoleSink,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";
import type { LogLevel } from "../config/config.ts";

/** Parts of the service that log. */
export type LogCategory =
  | "main"
  | "cron"
  | "fanout"
  | "run"
  | "queue"
  | "http"
  | "status"
  | "integration"
  | "charm";

/** The logger of one part of the service. */
export function logger(category: LogCategory, ...sub: string[]): Logger {
  return getLogger(["bcs", category, ...sub]);
}

/**
 * Configures LogTape once for the process. `extraSink` receives every record
 * too (tests capture logs with it).
 */
export async function setupLogging(
  level: LogLevel,
  extraSink?: Sink,
): Promise<void> {
  await configure({
    reset: true,
    sinks: {
      console: getConsoleSink({
        formatter: getTextFormatter({
          value: "bare",
          timestamp: "date-time-timezone",
        }),
      }),
      extra: extraSink ?? (() => {}),
    },
    loggers: [
      {
        category: ["bcs"],
        lowestLevel: level,
        sinks: ["console", "extra"],
      },
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["console"],
      },
    ],
  });
}

/** Undoes {@linkcode setupLogging} (tests). */
export async function resetLogging(): Promise<void> {
  await reset();
}

/** A sink that keeps records in an array (tests). */
export function memorySink(): Sink & { records: LogRecord[] } {
  const records: LogRecord[] = [];
  const sink = (record: LogRecord) => {
    records.push(record);
  };
  return Object.assign(sink, { records });
}

/**
 * Turning measurements into the printed table: rows of a figure with its
 * median, min and max, and the targets with whether each is met.
 *
 * @module
 */
import type { Figure } from "./stats.ts";

/** One printed row. */
export interface Row {
  measurement: string;
  kv: string;
  figure: Figure | null;
  unit: string;
  /** Text in place of a figure (KV ops per run, say). */
  text?: string;
}

/** A target from the issue and whether the run met it. */
export interface Target {
  name: string;
  target: string;
  /** The measured value, as printed. */
  value: string;
  /** `null` when it could not be measured in this run. */
  met: boolean | null;
  /**
   * What the KV serves for the same requests with no service code, in the
   * target's terms (`bench/kv_ceiling.ts`), where one was measured: a target
   * above it is out of any service's reach on this KV.
   */
  ceiling?: string;
}

/** Formats a number for the table: thousands separators, 3 significant. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return value.toLocaleString("en", {
    maximumFractionDigits: digits,
    minimumFractionDigits: 0,
  });
}

/** The results table as text. */
export function formatRows(rows: readonly Row[]): string {
  const cells = rows.map((row) => [
    row.measurement,
    row.kv,
    row.figure ? fmt(row.figure.median) : (row.text ?? "-"),
    row.figure ? fmt(row.figure.min) : "",
    row.figure ? fmt(row.figure.max) : "",
    row.figure ? row.unit : "",
  ]);
  return _table(["measurement", "kv", "median", "min", "max", "unit"], cells, [
    false,
    false,
    true,
    true,
    true,
    false,
  ]);
}

/** The targets table as text. */
export function formatTargets(targets: readonly Target[]): string {
  return _table(
    ["target", "wanted", "measured", "met", "KV ceiling"],
    targets.map((t) => [
      t.name,
      t.target,
      t.value,
      t.met === null ? "n/a" : t.met ? "yes" : "NO",
      t.ceiling ?? "",
    ]),
    [false, false, true, false, true],
  );
}

function _table(
  header: string[],
  rows: string[][],
  rightAlign: boolean[],
): string {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => r[i]!.length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) =>
      rightAlign[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)
    ).join("  ").trimEnd();
  return [
    line(header),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...rows.map(line),
  ].join("\n");
}

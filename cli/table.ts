/**
 * Plain-text tables for the terminal.
 *
 * @module
 */

/** One column: its heading and the most characters a cell shows. */
export interface Column {
  heading: string;
  maxWidth?: number;
}

/**
 * Formats rows as an aligned table with a heading line. Cells longer than
 * their column's `maxWidth` are cut with `…`; newlines become spaces.
 *
 * @example
 * ```ts
 * formatTable([{ heading: "name" }, { heading: "n" }], [["a", "1"]]);
 * // "name  n\na     1"
 * ```
 */
export function formatTable(
  columns: readonly Column[],
  rows: readonly (readonly string[])[],
): string {
  const cells = rows.map((row) =>
    columns.map((column, i) => _fit(row[i] ?? "", column.maxWidth))
  );
  const widths = columns.map((column, i) =>
    Math.max(column.heading.length, ...cells.map((row) => row[i]!.length))
  );
  const line = (row: readonly string[]) =>
    row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i]!))
      .join("  ").trimEnd();
  return [line(columns.map((c) => c.heading)), ...cells.map(line)].join("\n");
}

/** Formats `[key, value]` pairs as two aligned columns, no heading. */
export function formatPairs(pairs: readonly [string, string][]): string {
  const width = Math.max(0, ...pairs.map(([key]) => key.length));
  return pairs.map(([key, value]) => `${key.padEnd(width)}  ${value}`).join(
    "\n",
  );
}

function _fit(value: string, maxWidth: number | undefined): string {
  const flat = value.replace(/\s*\n\s*/g, " ");
  if (maxWidth === undefined || flat.length <= maxWidth) return flat;
  return `${flat.slice(0, Math.max(0, maxWidth - 1))}…`;
}

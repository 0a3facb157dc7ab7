/**
 * Summaries of repeated measurements: median, min and max, and percentiles
 * of samples.
 *
 * @module
 */

/** One figure over several repetitions. */
export interface Figure {
  median: number;
  min: number;
  max: number;
  /** Every repetition's value, in the order measured. */
  runs: number[];
}

/** Summarises repeated values of one figure. */
export function figure(values: readonly number[]): Figure {
  if (values.length === 0) {
    throw new RangeError("Cannot summarise a figure of no repetitions");
  }
  const sorted = [...values].sort((a, b) => a - b);
  return {
    median: percentile(sorted, 50),
    min: sorted[0]!,
    max: sorted.at(-1)!,
    runs: [...values],
  };
}

/**
 * The `p`th percentile (0-100) of ascending `sorted`, by the nearest-rank
 * method (so p99 of 1,000 samples is the 990th smallest).
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Rounds to `digits` significant digits, for tables and JSON. */
export function round(value: number, digits = 3): number {
  if (!Number.isFinite(value) || value === 0) return value;
  return Number(value.toPrecision(digits));
}

/** A figure rounded for output. */
export function roundFigure(f: Figure, digits = 3): Figure {
  return {
    median: round(f.median, digits),
    min: round(f.min, digits),
    max: round(f.max, digits),
    runs: f.runs.map((v) => round(v, digits)),
  };
}

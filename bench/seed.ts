/**
 * Creating many charms fast, through the service's own store functions
 * (`createCharm` + `registerCharm`) with many calls in flight, so the records
 * are exactly those the API writes.
 *
 * @module
 */
import type { CharmRef } from "../charm/charm.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import { createCharm, registerCharm } from "../store/charms.ts";
import { BENCH_SPACE } from "./bench_deps.ts";

/** Options for {@linkcode seedCharms}. */
export interface SeedOptions {
  recipe: AnyRecipe;
  /** Charms to create. */
  count: number;
  /** Index of the first charm (to add to an existing set). */
  from?: number;
  /** Integration to register with (default `manual`). */
  integration?: string;
  /** Calls in flight (default 64). */
  concurrency?: number;
  nowMs?: number;
  /** Called every 5,000 charms with the number created so far. */
  onProgress?: (done: number) => void;
}

/** The ref of bench charm number `i` (ids sort in creation order). */
export function benchCharmRef(i: number): CharmRef {
  return { space: BENCH_SPACE, charmId: `bench-${String(i).padStart(7, "0")}` };
}

/**
 * Creates `count` charms of `recipe` and registers each with the
 * integration, `concurrency` charms at a time.
 */
export async function seedCharms(
  kv: Deno.Kv,
  options: SeedOptions,
): Promise<void> {
  const from = options.from ?? 0;
  const end = from + options.count;
  const integration = options.integration ?? "manual";
  const nowMs = options.nowMs ?? Date.now();
  let next = from;
  let done = 0;
  async function worker(): Promise<void> {
    while (next < end) {
      const ref = benchCharmRef(next++);
      await createCharm(kv, ref, options.recipe, {}, nowMs);
      await registerCharm(kv, integration, ref, nowMs);
      done++;
      if (done % 5_000 === 0) options.onProgress?.(done);
    }
  }
  const workers = Array.from(
    { length: Math.min(options.concurrency ?? 64, options.count) },
    worker,
  );
  await Promise.all(workers);
}

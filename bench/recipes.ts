/**
 * Bench-only recipes, passed to the service through the recipes map (they are
 * not in `recipes/mod.ts`).
 *
 * @module
 */
import { z } from "zod";
import type { AnyRecipe } from "../charm/recipe.ts";
import { defineRecipe } from "../charm/recipe.ts";
import { RECIPES } from "../recipes/mod.ts";

/** A run start as {@linkcode stampRecipe} saw it. */
export interface RunStamp {
  charmId: string;
  slot: number;
  /** `ctx.now()` when the handler started, epoch ms. */
  startedAt: number;
}

/** Does nothing and returns at once: measures the service, not the charm. */
export const noopRecipe = defineRecipe({
  name: "bench-noop",
  description: "Benchmark: returns at once",
  argumentSchema: z.object({}).strict(),
  resultSchema: z.object({}),
  initialResult: () => ({}),
  pure: true,
  handlers: {
    bgUpdater: () => Promise.resolve(),
  },
});

/**
 * Builds a recipe that notes each run's start time and slot in `stamps` and
 * returns at once (no cell writes, so it costs what the no-op costs).
 */
export function stampRecipe(stamps: RunStamp[]): AnyRecipe {
  return defineRecipe({
    name: "bench-stamp",
    description: "Benchmark: notes when each run started",
    argumentSchema: z.object({}).strict(),
    resultSchema: z.object({}),
    initialResult: () => ({}),
    handlers: {
      bgUpdater(ctx) {
        stamps.push({
          charmId: ctx.charmId,
          slot: ctx.slot,
          startedAt: ctx.now(),
        });
        return Promise.resolve();
      },
    },
  });
}

/** The service's recipes plus `extra`. */
export function benchRecipes(
  ...extra: AnyRecipe[]
): ReadonlyMap<string, AnyRecipe> {
  return new Map([...RECIPES, ...extra.map((r) => [r.name, r] as const)]);
}

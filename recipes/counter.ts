/**
 * `counter`: a demo recipe that counts its runs.
 *
 * @module
 */
import { z } from "zod";
import { defineRecipe } from "../charm/recipe.ts";

const argumentSchema = z.object({
  /** Added to the count on every run. */
  step: z.number().int().min(1).max(1_000_000).default(1),
}).strict();

const resultSchema = z.object({
  count: z.number().int().min(0),
  lastRunAt: z.number().nullable(),
  lastSlot: z.number().nullable(),
});

/** Counts its runs in `result.count`. */
export const counterRecipe = defineRecipe({
  name: "counter",
  description: "Demo: counts its runs in result.count",
  argumentSchema,
  resultSchema,
  initialResult: () => ({ count: 0, lastRunAt: null, lastSlot: null }),
  // Only its cells change: its runs need no lease (charm/recipe.ts).
  pure: true,
  handlers: {
    bgUpdater(ctx) {
      const previous = ctx.result.get();
      ctx.result.set({
        count: previous.count + ctx.argument.get().step,
        lastRunAt: ctx.now(),
        lastSlot: ctx.slot,
      });
      return Promise.resolve();
    },
  },
});

/**
 * The recipe registry: every recipe the service can run, by name.
 *
 * To add a recipe, write `recipes/<name>.ts` exporting a `defineRecipe(...)`
 * and list it here.
 *
 * @module
 */
import type { AnyRecipe } from "../charm/recipe.ts";
import { counterRecipe } from "./counter.ts";
import { gcalImporterRecipe } from "./gcal_importer.ts";
import { gmailImporterRecipe } from "./gmail_importer.ts";
import { webhookRecipe } from "./webhook.ts";

/** All recipes, keyed by name. */
export const RECIPES: ReadonlyMap<string, AnyRecipe> = new Map<
  string,
  AnyRecipe
>(
  [counterRecipe, webhookRecipe, gmailImporterRecipe, gcalImporterRecipe].map((
    recipe,
  ) => [recipe.name, recipe]),
);

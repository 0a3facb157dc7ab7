/**
 * What the `gmail` and `gcal` integrations share: a charm registry (as every
 * bundled integration has) whose charms must keep Google OAuth tokens in
 * `argument.auth`, and a `prepare` that refreshes the token before each run
 * and hands the run an authorized {@linkcode GoogleSession}.
 *
 * @module
 */
import type { AnyRecipe } from "../charm/recipe.ts";
import type { UpdaterName } from "../charm/updaters.ts";
import { openGoogleSession } from "../google/session.ts";
import {
  defineRegistryIntegration,
  type Integration,
  type IntegrationConfig,
} from "./integration.ts";
import { checkGoogleConfig, googleConfigFromEnv } from "./_google_config.ts";

/** Options for {@linkcode defineGoogleIntegration}. */
export interface GoogleIntegrationOptions {
  id: string;
  name: string;
  description: string;
  updater: UpdaterName;
  cellCauseName: string;
}

/** Builds a Google integration (see the module doc). */
export function defineGoogleIntegration(
  options: GoogleIntegrationOptions,
): Integration {
  const base = defineRegistryIntegration({
    ...options,
    checkConfig: (env) => checkGoogleConfig(options.id, env),
  });
  const baseConfig = base.getIntegrationConfig();
  const config: IntegrationConfig = {
    ...baseConfig,
    isValidIntegrationCharm(charm, recipe) {
      const validity = baseConfig.isValidIntegrationCharm(charm, recipe);
      if (!validity.ok) return validity;
      return _hasAuth(recipe) ? validity : {
        ok: false,
        reason:
          `recipe "${recipe.name}" keeps no Google tokens (its argument has no "auth" field)`,
      };
    },
  };
  return {
    ...base,
    getIntegrationConfig: () => config,
    prepare: (deps, charm) =>
      openGoogleSession({
        kv: deps.kv,
        // Cannot throw: main.ts refuses to start any process with these
        // variables malformed (assertGoogleConfig).
        config: googleConfigFromEnv(deps.env),
        fetch: deps.fetch,
        signal: deps.signal,
        now: deps.now,
        secrets: deps.secrets,
        recipe: deps.recipe,
      }, { space: charm.space, charmId: charm.charmId }),
  };
}

/** Whether the recipe's argument is an object with an `auth` field. */
function _hasAuth(recipe: AnyRecipe): boolean {
  const shape = (recipe.argumentSchema as { shape?: unknown }).shape;
  return typeof shape === "object" && shape !== null && "auth" in shape;
}

/**
 * The `Integration` interface: what says which charms to run, and how.
 *
 * An integration is a file in `integrations/` whose default export is an
 * `Integration`; `deno task manifest` lists it in `integrations/manifest.ts`
 * (a test fails when the manifest is stale). The interface keeps the original
 * service's shape (`id`, `name`, `initialize()`, `getIntegrationConfig()`)
 * and extends it with what the pipeline needs: paged listing, the updater
 * stream to call and a `prepare` hook before each run.
 *
 * @module
 */
import type { Charm, CharmRef } from "../charm/charm.ts";
import type { DidKey } from "../charm/did.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import { UPDATER_NAMES, type UpdaterName } from "../charm/updaters.ts";
import type { SecretKeys } from "../lib/secrets.ts";
import { integrationCharmsPrefix, integrationKey } from "../store/keys.ts";

/** Whether a charm can run under an integration, and why not. */
export type Validity = { ok: true } | { ok: false; reason: string };

/** A page of registered charms. */
export interface CharmRefPage {
  charms: CharmRef[];
  /** `null` on the last page. */
  cursor: string | null;
}

/** The original service's integration configuration, extended with paging. */
export interface IntegrationConfig {
  id: string;
  name: string;
  /** The space holding the integration's own data, if it has one. */
  spaceId: DidKey | null;
  /** Name of the cell that lists the integration's charms (original field). */
  cellCauseName: string;
  /** Lists registered charms a page at a time (never all in memory). */
  fetchCharms(
    kv: Deno.Kv,
    page: { cursor: string | null; limit: number },
  ): Promise<CharmRefPage>;
  /** Checks that a charm can run under this integration. */
  isValidIntegrationCharm(charm: Charm, recipe: AnyRecipe): Validity;
}

/** What `initialize` and `prepare` get. */
export interface IntegrationDeps {
  kv: Deno.Kv;
  env: Record<string, string | undefined>;
  now(): number;
}

/** What `prepare` gets: the integration's deps and the run's fetch and signal. */
export interface PrepareDeps extends IntegrationDeps {
  /** The service's `fetch` (injected). */
  fetch: typeof fetch;
  /** The run's signal: aborted at the run's timeout or at shutdown. */
  signal: AbortSignal;
  /**
   * Keys for the charm's secret cell fields: a `prepare` that reads or
   * writes cells goes through `store/cell_codec.ts` with them.
   */
  secrets: SecretKeys | null;
  /** The charm's recipe (its `secretPaths` name the secret fields). */
  recipe: AnyRecipe;
}

/** An integration. */
export interface Integration {
  id: string;
  name: string;
  /** One line for `--help`. */
  description: string;
  /**
   * The updater stream its runs call; `null` calls the first stream in
   * `UPDATER_NAMES` that the recipe has.
   */
  updater: UpdaterName | null;
  /** Creates the registry idempotently; returns lines saying what it did. */
  initialize(deps: IntegrationDeps): Promise<string[]>;
  getIntegrationConfig(): IntegrationConfig;
  /**
   * Runs before each run of a charm, inside the run's timeout (a token
   * refresh, say); a throw fails the attempt. What it returns reaches the
   * stream handler as `ctx.prepared` (an authorized API session, say).
   */
  prepare?(deps: PrepareDeps, charm: Charm): Promise<unknown>;
}

/** The stream an integration's run calls for a recipe, or `null` if none. */
export function streamFor(
  updater: UpdaterName | null,
  recipe: AnyRecipe,
): UpdaterName | null {
  if (updater !== null) return recipe.handlers[updater] ? updater : null;
  return UPDATER_NAMES.find((name) => recipe.handlers[name] !== undefined) ??
    null;
}

/** Options for {@linkcode defineRegistryIntegration}. */
export interface RegistryIntegrationOptions {
  id: string;
  name: string;
  description: string;
  updater: UpdaterName | null;
  cellCauseName: string;
  /** Extra checks `initialize` reports on (configuration it needs, say). */
  checkConfig?(env: Record<string, string | undefined>): string[];
}

/**
 * Builds an integration whose charms are those registered to it in KV (the
 * `integration_charms` registry), which is what every bundled integration is.
 */
export function defineRegistryIntegration(
  options: RegistryIntegrationOptions,
): Integration {
  const config: IntegrationConfig = {
    id: options.id,
    name: options.name,
    spaceId: null,
    cellCauseName: options.cellCauseName,
    async fetchCharms(kv, { cursor, limit }) {
      const iterator = kv.list<unknown>(
        { prefix: integrationCharmsPrefix(options.id) },
        { limit, ...(cursor ? { cursor } : {}) },
      );
      const charms: CharmRef[] = [];
      for await (const entry of iterator) {
        charms.push({
          space: entry.key.at(-2) as DidKey,
          charmId: String(entry.key.at(-1)),
        });
      }
      return {
        charms,
        cursor: charms.length < limit ? null : iterator.cursor || null,
      };
    },
    isValidIntegrationCharm(_charm, recipe) {
      const stream = streamFor(options.updater, recipe);
      if (stream !== null) return { ok: true };
      return {
        ok: false,
        reason: options.updater === null
          ? `recipe "${recipe.name}" has none of the updater streams ${
            UPDATER_NAMES.join(", ")
          }`
          : `recipe "${recipe.name}" has no "${options.updater}" stream`,
      };
    },
  };
  return {
    id: options.id,
    name: options.name,
    description: options.description,
    updater: options.updater,
    async initialize({ kv, env, now }) {
      const lines: string[] = [];
      const { ok } = await kv.atomic()
        .check({ key: integrationKey(options.id), versionstamp: null })
        .set(integrationKey(options.id), { initializedAt: now() })
        .commit();
      lines.push(
        ok
          ? `${options.id}: created the charm registry`
          : `${options.id}: the charm registry already exists`,
      );
      lines.push(...(options.checkConfig?.(env) ?? []));
      return lines;
    },
    getIntegrationConfig: () => config,
  };
}

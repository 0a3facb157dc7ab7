/**
 * Creating many charms fast.
 *
 * - {@linkcode seedCharms} calls the service's own `createCharm` +
 *   `registerCharm` with many calls in flight: exactly what the API writes,
 *   at about 1,000 charms/s on a KV file (two commits per charm).
 * - {@linkcode seedCharmsBatched} writes the same records straight from the
 *   key builders of `store/keys.ts`, 100 charms per atomic operation, for
 *   the 10,000- and 100,000-charm measurements. {@linkcode seedDifference}
 *   checks, before every batched seeding, that the two write the same
 *   entries, so a change to the store cannot make the benchmark seed
 *   something the service would not.
 *
 * @module
 */
import { type CharmRef, initialCharmState } from "../charm/charm.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import { createCharm, registerCharm } from "../store/charms.ts";
import {
  cellKey,
  charmByStatusKey,
  charmIntegrationKey,
  charmKey,
  charmStateKey,
  integrationCharmKey,
  serviceCounterKey,
} from "../store/keys.ts";
import { BENCH_SPACE } from "./bench_deps.ts";

/** Options for the seeders. */
export interface SeedOptions {
  recipe: AnyRecipe;
  /** Charms to create. */
  count: number;
  /** Index of the first charm (to add to an existing set). */
  from?: number;
  /** Integration to register with (default `manual`). */
  integration?: string;
  /** Calls in flight for {@linkcode seedCharms} (default 64). */
  concurrency?: number;
  nowMs?: number;
  /** Called every 10,000 charms with the number created so far. */
  onProgress?: (done: number) => void;
}

/** Charms per atomic operation in {@linkcode seedCharmsBatched}. */
export const SEED_BATCH = 100;

/** The ref of bench charm number `i` (ids sort in creation order). */
export function benchCharmRef(i: number): CharmRef {
  return { space: BENCH_SPACE, charmId: `bench-${String(i).padStart(7, "0")}` };
}

/**
 * Creates charms with `createCharm` and registers each with `registerCharm`,
 * `concurrency` charms at a time.
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
      if (++done % 10_000 === 0) options.onProgress?.(done);
    }
  }
  await Promise.all(
    Array.from(
      {
        length: Math.max(1, Math.min(options.concurrency ?? 64, options.count)),
      },
      worker,
    ),
  );
}

/**
 * Writes the entries `createCharm(ref, recipe, {})` and `registerCharm`
 * would, for many charms per atomic operation (each checked absent first,
 * as `createCharm` does). {@linkcode seedDifference} keeps it honest.
 */
export async function seedCharmsBatched(
  kv: Deno.Kv,
  options: SeedOptions,
): Promise<void> {
  const from = options.from ?? 0;
  const end = from + options.count;
  const integration = options.integration ?? "manual";
  const nowMs = options.nowMs ?? Date.now();
  const argument = options.recipe.argumentSchema.parse({});
  const result = options.recipe.initialResult(argument);
  const state = {
    ...initialCharmState(),
    record: { recipe: options.recipe.name, createdAt: nowMs },
  };
  for (let i = from; i < end; i += SEED_BATCH) {
    const op = kv.atomic();
    const last = Math.min(end, i + SEED_BATCH);
    for (let j = i; j < last; j++) {
      const ref = benchCharmRef(j);
      op.check({ key: charmKey(ref), versionstamp: null })
        .set(charmKey(ref), {
          ...ref,
          recipe: options.recipe.name,
          createdAt: nowMs,
        })
        .set(cellKey(ref, "argument"), argument)
        .set(cellKey(ref, "result"), result)
        .set(charmStateKey(ref), state)
        .set(charmByStatusKey("ok", ref), true)
        .set(integrationCharmKey(integration, ref), { addedAt: nowMs })
        .set(charmIntegrationKey(ref, integration), true);
    }
    op.sum(serviceCounterKey("charms"), BigInt(last - i));
    const { ok } = await op.commit();
    if (!ok) {
      throw new Error(
        `Cannot seed charms ${i}..${last - 1}: one of them exists already`,
      );
    }
    const done = last - from;
    if (done % 10_000 === 0) options.onProgress?.(done);
  }
}

/**
 * Seeds three charms both ways into two in-memory KVs and compares every
 * entry. Returns `null` when they match, else the first difference.
 */
export async function seedDifference(
  recipe: AnyRecipe,
): Promise<string | null> {
  const nowMs = 1_700_000_000_000;
  const options = { recipe, count: 3, nowMs, concurrency: 1 };
  const dumps: string[][] = [];
  for (const seed of [seedCharms, seedCharmsBatched]) {
    const kv = await Deno.openKv(":memory:");
    try {
      await seed(kv, options);
      const entries: string[] = [];
      for await (const entry of kv.list({ prefix: [] })) {
        entries.push(JSON.stringify([entry.key, _plain(entry.value)]));
      }
      dumps.push(entries);
    } finally {
      kv.close();
    }
  }
  const [viaStore, batched] = dumps as [string[], string[]];
  for (let i = 0; i < Math.max(viaStore.length, batched.length); i++) {
    if (viaStore[i] !== batched[i]) {
      return `createCharm + registerCharm wrote ${
        viaStore[i] ?? "nothing"
      } where the batched seeder wrote ${batched[i] ?? "nothing"}`;
    }
  }
  return null;
}

function _plain(value: unknown): unknown {
  return value instanceof Deno.KvU64 ? `u64:${value.value}` : value;
}

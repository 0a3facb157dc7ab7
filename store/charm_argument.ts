/**
 * Replacing a charm's argument cell from outside a run (the API's
 * `PUT /api/charms/:space/:charmId/argument`): new settings, or new auth for
 * a charm that needs re-authentication.
 *
 * The write is one atomic operation: the cell, and for a parked charm
 * (`needsReauth`) the state un-parked with its status index moved, so the
 * next fan-out runs it again.
 *
 * @module
 */
import {
  type CharmRef,
  type CharmState,
  formatCharmRef,
  initialCharmState,
} from "../charm/charm.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import type { SecretKeys } from "../lib/secrets.ts";
import { encodeCell } from "./cell_codec.ts";
import {
  type ArgumentCheck,
  readCharmForUpdate,
  writeCharmState,
} from "./charms.ts";
import { cellKey } from "./keys.ts";
import { cellSize, MAX_CELL_BYTES } from "./kv_util.ts";

/**
 * Validates `argument` against the charm's recipe and stores it; a charm that
 * needed re-authentication no longer does.
 *
 * @param secrets seal the recipe's secret fields (OAuth tokens) with these
 *   keys; `null` stores them in plaintext
 * @param check runs on the parsed argument once it passed the schema and
 *   the size limit, before anything is written
 * @returns the charm's state after the write.
 * @throws {NotFoundError} when the charm does not exist.
 * @throws {TypeError} naming the field when the argument does not match the
 *   recipe's schema, or the cell would be too large.
 */
export async function replaceCharmArgument(
  kv: Deno.Kv,
  recipes: ReadonlyMap<string, AnyRecipe>,
  ref: CharmRef,
  argument: unknown,
  secrets: SecretKeys | null = null,
  check: ArgumentCheck | null = null,
): Promise<CharmState> {
  // The argument is parsed, checked and sealed once for the charm's recipe;
  // a retry after contention reuses it unless the recipe changed meanwhile.
  let prepared: { recipe: AnyRecipe; stored: unknown } | null = null;
  for (let attempt = 0; attempt < 10; attempt++) {
    const [charm, state] = await readCharmForUpdate(kv, ref);
    const recipe = recipes.get(charm.value.recipe);
    if (recipe === undefined) {
      throw new TypeError(
        `argument: cannot be checked: recipe "${charm.value.recipe}" is not registered in this service`,
      );
    }
    if (prepared === null || prepared.recipe !== recipe) {
      const parsed = recipe.argumentSchema.safeParse(argument);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new TypeError(
          `argument${issue?.path.length ? `.${issue.path.join(".")}` : ""}: ${
            issue?.message ?? "invalid"
          }`,
        );
      }
      const size = cellSize(parsed.data);
      if (size > MAX_CELL_BYTES) {
        throw new TypeError(
          `argument: ${size} bytes is over the ${MAX_CELL_BYTES}-byte cell limit`,
        );
      }
      if (check !== null) await check(recipe, parsed.data);
      prepared = {
        recipe,
        stored: await encodeCell(secrets, recipe, ref, "argument", parsed.data),
      };
    }
    const before = state.value ?? initialCharmState();
    const op = kv.atomic().check(charm).check(state)
      .set(cellKey(ref, "argument"), prepared.stored);
    let after = before;
    if (before.needsReauth) {
      after = { ...before, needsReauth: false, needsReauthReason: null };
      writeCharmState(op, charm.value, state.value, after);
    }
    if ((await op.commit()).ok) return after;
  }
  throw new Error(
    `Cannot replace the argument of charm ${
      formatCharmRef(ref)
    }: too much contention`,
  );
}

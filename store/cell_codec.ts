/**
 * The store boundary for secret cell fields: every cell write goes through
 * {@linkcode encodeCell} and every read a run or refresh uses through
 * {@linkcode decodeCell}, so handlers see plaintext and KV never holds it.
 *
 * A recipe names its secret fields in `secretPaths` (see `charm/recipe.ts`);
 * each present, non-empty value at such a path is sealed with
 * `lib/secrets.ts` (AES-GCM under `SECRETS_KEY`), bound to the charm, cell
 * and path. Without keys (`SECRETS_KEY` unset, local only) values are stored
 * as given. Plaintext found at a secret path (written before `SECRETS_KEY`
 * was set) is read as is and sealed on its next write, and so is a value
 * sealed under `SECRETS_KEY_PREVIOUS`.
 *
 * API replies use {@linkcode redactCell}: the same paths, shown as
 * `"[redacted]"`.
 *
 * @module
 */
import type { CharmRef } from "../charm/charm.ts";
import { type Charm, formatCharmRef } from "../charm/charm.ts";
import type { AnyRecipe, SecretPath } from "../charm/recipe.ts";
import {
  isSealed,
  openValue,
  sealValue,
  SecretDecryptionError,
  type SecretKeys,
} from "../lib/secrets.ts";
import { cellKey, type CellName, charmsPrefix } from "./keys.ts";
import { cellSize, MAX_CELL_BYTES } from "./kv_util.ts";

/**
 * A cell too large once its secret fields are sealed. A `TypeError`, so the
 * API answers it with a 400 like any other bad input.
 */
export class CellTooLargeError extends TypeError {
  override name = "CellTooLargeError";
}

/** What a redacted secret reads as in API replies. */
export const REDACTED = "[redacted]";

/** The part of a recipe this module reads. */
export type SecretPathsOf = Pick<AnyRecipe, "secretPaths">;

/**
 * The cell value to store: a copy of `value` with each secret field sealed
 * under the current key.
 *
 * @throws {CellTooLargeError} naming the cell when sealing makes it larger
 *   than a cell may be (sealed fields grow by about a third): callers
 *   checked the plaintext's size, and KV would refuse the value.
 */
export async function encodeCell(
  keys: SecretKeys | null,
  recipe: SecretPathsOf,
  ref: CharmRef,
  cell: CellName,
  value: unknown,
): Promise<unknown> {
  const paths = recipe.secretPaths?.[cell] ?? [];
  // A copy through JSON, which cells are: its strings are fresh, at a byte a
  // character when Latin-1. A string sliced from one that is not (a recipe's
  // `text.slice()`) stays at two, through KV too, and the cell would then
  // take twice what `cellSize` counts: over KV's 64 KiB where it allowed 60.
  const copy = value === undefined ? value : JSON.parse(JSON.stringify(value));
  if (keys === null || paths.length === 0) return copy;
  for (const path of paths) {
    const slot = _slot(copy, path);
    if (slot === null) continue;
    const field = slot.parent[slot.key];
    if (_isEmpty(field) || isSealed(field)) continue;
    slot.parent[slot.key] = await sealValue(
      keys,
      field,
      _context(ref, cell, path),
    );
  }
  const size = cellSize(copy);
  if (size > MAX_CELL_BYTES) {
    throw new CellTooLargeError(
      `${cell}: ${size} bytes once its secret fields are sealed, over the ${MAX_CELL_BYTES}-byte cell limit`,
    );
  }
  return copy;
}

/**
 * The cell value a run sees: `stored` with each sealed secret field opened.
 * Plaintext at a secret path is returned as is.
 *
 * @throws {SecretDecryptionError} naming `SECRETS_KEY` and the field when a
 *   sealed value was written with a key that is not configured, or does not
 *   authenticate (altered).
 */
export async function decodeCell(
  keys: SecretKeys | null,
  recipe: SecretPathsOf,
  ref: CharmRef,
  cell: CellName,
  stored: unknown,
): Promise<unknown> {
  const paths = recipe.secretPaths?.[cell] ?? [];
  if (paths.length === 0) return stored;
  let copy: unknown = undefined;
  for (const path of paths) {
    const sealed = _slot(stored, path);
    if (sealed === null || !isSealed(sealed.parent[sealed.key])) continue;
    copy ??= structuredClone(stored);
    const slot = _slot(copy, path)!;
    slot.parent[slot.key] = await openValue(
      keys,
      sealed.parent[sealed.key] as Parameters<typeof openValue>[1],
      _context(ref, cell, path),
      `${cell}.${path.join(".")} of charm ${formatCharmRef(ref)}`,
    );
  }
  return copy === undefined ? stored : copy;
}

/**
 * `value` for display: each non-empty secret field, and any sealed value
 * wherever it is, replaced by {@linkcode REDACTED}. Nothing is decrypted.
 */
export function redactCell(
  recipe: SecretPathsOf | undefined,
  cell: CellName,
  value: unknown,
): unknown {
  const copy = _redactSealed(structuredClone(value));
  for (const path of recipe?.secretPaths?.[cell] ?? []) {
    const slot = _slot(copy, path);
    if (slot !== null && !_isEmpty(slot.parent[slot.key])) {
      slot.parent[slot.key] = REDACTED;
    }
  }
  return copy;
}

/** What {@linkcode reencryptSecrets} did. */
export interface ReencryptReport {
  /** Charms whose recipe has secret fields. */
  checked: number;
  /** Cells rewritten under the current key. */
  rewritten: number;
  /** Cells left as they were: a sealed value no configured key opens. */
  unreadable: number;
  /** Cells left as they were: plaintext too large to fit once sealed. */
  tooLarge: number;
}

/**
 * Rewrites, under the current key, every secret field still stored in
 * plaintext or sealed under another key (`SECRETS_KEY_PREVIOUS`), one cell
 * at a time, each write checked against the cell's versionstamp (a cell
 * written meanwhile is left alone: that write sealed it already).
 *
 * Used at startup during a rotation and by `--initialize`; idempotent.
 */
export async function reencryptSecrets(
  kv: Deno.Kv,
  recipes: ReadonlyMap<string, SecretPathsOf>,
  keys: SecretKeys,
  onUnreadable: (
    ref: CharmRef,
    error: SecretDecryptionError | CellTooLargeError,
  ) => void = () => {},
): Promise<ReencryptReport> {
  const report: ReencryptReport = {
    checked: 0,
    rewritten: 0,
    unreadable: 0,
    tooLarge: 0,
  };
  for await (const entry of kv.list<Charm>({ prefix: charmsPrefix() })) {
    const recipe = recipes.get(entry.value.recipe);
    if (recipe?.secretPaths === undefined) continue;
    const ref: CharmRef = {
      space: entry.value.space,
      charmId: entry.value.charmId,
    };
    report.checked++;
    for (const cell of ["argument", "result"] as const) {
      const paths = recipe.secretPaths[cell] ?? [];
      if (paths.length === 0) continue;
      const stored = await kv.get(cellKey(ref, cell));
      if (stored.value === null) continue;
      const stale = paths.some((path) => {
        const slot = _slot(stored.value, path);
        if (slot === null) return false;
        const field = slot.parent[slot.key];
        return isSealed(field)
          ? field.kid !== keys.current.kid
          : !_isEmpty(field);
      });
      if (!stale) continue;
      let plain: unknown;
      try {
        plain = await decodeCell(keys, recipe, ref, cell, stored.value);
      } catch (error) {
        if (!(error instanceof SecretDecryptionError)) throw error;
        report.unreadable++;
        onUnreadable(ref, error);
        continue;
      }
      let sealed: unknown;
      try {
        sealed = await encodeCell(keys, recipe, ref, cell, plain);
      } catch (error) {
        // Left in plaintext, reported: one cell does not stop the pass.
        if (!(error instanceof CellTooLargeError)) throw error;
        report.tooLarge++;
        onUnreadable(ref, error);
        continue;
      }
      const { ok } = await kv.atomic().check(stored)
        .set(cellKey(ref, cell), sealed)
        .commit();
      if (ok) report.rewritten++;
    }
  }
  return report;
}

/** One line for logs and `--initialize`: what a re-encryption pass did. */
export function describeReencryptReport(
  report: ReencryptReport,
  keys: SecretKeys,
): string {
  return `secrets: ${report.checked} charm(s) with secret fields, ${report.rewritten} cell(s) re-encrypted with key ${keys.current.kid}, ${report.unreadable} unreadable${
    report.tooLarge > 0
      ? `, ${report.tooLarge} too large to seal (left in plaintext)`
      : ""
  }`;
}

/** The additional data binding a sealed field to its place. */
function _context(ref: CharmRef, cell: CellName, path: SecretPath): string {
  return JSON.stringify([
    "bcs-cell-secret",
    ref.space,
    ref.charmId,
    cell,
    ...path,
  ]);
}

/** The object holding the field at `path`, and its key; `null` if absent. */
function _slot(
  root: unknown,
  path: SecretPath,
): { parent: Record<string, unknown>; key: string } | null {
  if (path.length === 0) return null;
  let node: unknown = root;
  for (const key of path.slice(0, -1)) {
    if (!_isObject(node) || !Object.hasOwn(node, key)) return null;
    node = node[key];
  }
  const key = path.at(-1)!;
  if (!_isObject(node) || !Object.hasOwn(node, key)) return null;
  return { parent: node, key };
}

function _isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Absent, `null` or `""`: nothing secret to seal or hide. */
function _isEmpty(value: unknown): boolean {
  return value === undefined || value === null || value === "";
}

function _redactSealed(value: unknown): unknown {
  if (isSealed(value)) return REDACTED;
  if (Array.isArray(value)) return value.map(_redactSealed);
  if (!_isObject(value)) return value;
  for (const [key, field] of Object.entries(value)) {
    value[key] = _redactSealed(field);
  }
  return value;
}

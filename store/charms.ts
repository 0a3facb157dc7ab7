/**
 * Charm records, their cells, state and registrations in Deno KV.
 *
 * Every write of a record goes with its indexes in one atomic operation: the
 * charm, its cells, its state and its status-index entry are created together,
 * and a state change moves the status index and the disabled counter with it.
 *
 * @module
 */
import {
  type Charm,
  type CharmRef,
  type CharmState,
  type CharmStatus,
  charmStatus,
  formatCharmRef,
  initialCharmState,
} from "../charm/charm.ts";
import type { AnyRecipe } from "../charm/recipe.ts";
import { ConflictError, NotFoundError } from "../lib/errors.ts";
import type { SecretKeys } from "../lib/secrets.ts";
import { encodeCell } from "./cell_codec.ts";
import {
  cellKey,
  type CellName,
  charmByStatusKey,
  charmIntegrationKey,
  charmIntegrationsPrefix,
  charmKey,
  charmsByStatusPrefix,
  charmsPrefix,
  charmStateKey,
  integrationCharmKey,
  integrationCharmsPrefix,
  serviceCounterKey,
} from "./keys.ts";
import {
  addToCounter,
  cellSize,
  getManyByRange,
  getManyChunked,
  MAX_CELL_BYTES,
} from "./kv_util.ts";

/** A charm with its state, as listings show it. */
export interface CharmSummary extends Charm {
  status: CharmStatus;
  state: CharmState;
}

/** A charm with everything the detail view shows. */
export interface CharmDetail extends CharmSummary {
  integrations: string[];
  cells: Record<CellName, unknown>;
}

/**
 * Adds the state write, status-index move and disabled-counter change for a
 * state transition of `charm` to `op`. `before` is `null` for a new charm.
 * The state written carries the record's copy (`CharmState.record`), so a
 * state written before states carried it gets it with its next write.
 */
export function writeCharmState(
  op: Deno.AtomicOperation,
  charm: Charm,
  before: CharmState | null,
  after: CharmState,
): Deno.AtomicOperation {
  const ref: CharmRef = { space: charm.space, charmId: charm.charmId };
  op.set(
    charmStateKey(ref),
    after.record !== undefined ? after : {
      ...after,
      record: { recipe: charm.recipe, createdAt: charm.createdAt },
    },
  );
  const oldStatus = before === null ? null : charmStatus(before);
  const newStatus = charmStatus(after);
  if (oldStatus !== newStatus) {
    if (oldStatus !== null) op.delete(charmByStatusKey(oldStatus, ref));
    op.set(charmByStatusKey(newStatus, ref), true);
  }
  const wasDisabled = before?.disabled ?? false;
  if (wasDisabled !== after.disabled) {
    addToCounter(
      op,
      serviceCounterKey("charmsDisabled"),
      after.disabled ? 1 : -1,
    );
  }
  return op;
}

/**
 * Checks an argument that matched its recipe's schema beyond that schema
 * (I/O such as where a URL resolves), before it is stored: the API runs the
 * recipe's `checkArgument` here. Throws to refuse the argument.
 */
export type ArgumentCheck = (
  recipe: AnyRecipe,
  argument: unknown,
) => Promise<void>;

/**
 * Reads the charm records and states of `refs`, given in key order (as a
 * registry or index lists them): two range scans, not a `getMany` per five
 * charms. The fan-out and the listings read each page this way.
 */
export async function readCharmsWithState(
  kv: Deno.Kv,
  refs: readonly CharmRef[],
): Promise<
  { charm: Deno.KvEntryMaybe<Charm>; state: Deno.KvEntryMaybe<CharmState> }[]
> {
  const [charms, states] = await Promise.all([
    getManyByRange<Charm>(kv, refs.map(charmKey)),
    getManyByRange<CharmState>(kv, refs.map(charmStateKey)),
  ]);
  return refs.map((_, i) => ({ charm: charms[i]!, state: states[i]! }));
}

/**
 * Creates a charm with its cells and initial state.
 *
 * @param secrets seal the recipe's secret fields with these keys (`null`:
 *   store them in plaintext, as when `SECRETS_KEY` is unset)
 * @param check runs on the parsed argument once it passed the schema and
 *   the size limit, before anything is written
 * @throws {TypeError} when the argument does not match the recipe's schema or
 *   a cell is too large.
 * @throws {ConflictError} when the charm id is taken in that space.
 */
export async function createCharm(
  kv: Deno.Kv,
  ref: CharmRef,
  recipe: AnyRecipe,
  argument: unknown,
  nowMs: number,
  secrets: SecretKeys | null = null,
  check: ArgumentCheck | null = null,
): Promise<Charm> {
  const parsed = recipe.argumentSchema.safeParse(argument ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.length
      ? `argument.${issue.path.join(".")}`
      : "argument";
    // Field first, as every validation error the API returns.
    throw new TypeError(
      `${path}: ${issue?.message ?? "invalid"} (recipe "${recipe.name}")`,
    );
  }
  const result = recipe.initialResult(parsed.data);
  for (
    const [name, value] of [["argument", parsed.data], [
      "result",
      result,
    ]] as const
  ) {
    const size = cellSize(value);
    if (size > MAX_CELL_BYTES) {
      throw new TypeError(
        `${name}: ${size} bytes is over the ${MAX_CELL_BYTES}-byte cell limit`,
      );
    }
  }
  if (check !== null) await check(recipe, parsed.data);
  const charm: Charm = { ...ref, recipe: recipe.name, createdAt: nowMs };
  const op = kv.atomic()
    .check({ key: charmKey(ref), versionstamp: null })
    .set(charmKey(ref), charm)
    .set(
      cellKey(ref, "argument"),
      await encodeCell(secrets, recipe, ref, "argument", parsed.data),
    )
    .set(
      cellKey(ref, "result"),
      await encodeCell(secrets, recipe, ref, "result", result),
    );
  writeCharmState(op, charm, null, initialCharmState());
  addToCounter(op, serviceCounterKey("charms"), 1);
  const { ok } = await op.commit();
  if (!ok) {
    throw new ConflictError(`Charm ${formatCharmRef(ref)} already exists`);
  }
  return charm;
}

/**
 * Reads a charm's record and state entries for an update checked on both.
 *
 * @throws {NotFoundError} when the charm does not exist.
 */
export async function readCharmForUpdate(
  kv: Deno.Kv,
  ref: CharmRef,
): Promise<[Deno.KvEntry<Charm>, Deno.KvEntryMaybe<CharmState>]> {
  const [charm, state] = await kv.getMany<[Charm, CharmState]>([
    charmKey(ref),
    charmStateKey(ref),
  ]);
  if (charm.value === null) {
    throw new NotFoundError(`Charm ${formatCharmRef(ref)} does not exist`);
  }
  return [charm as Deno.KvEntry<Charm>, state];
}

/** Reads a charm with its state; `null` when it does not exist. */
export async function getCharmSummary(
  kv: Deno.Kv,
  ref: CharmRef,
): Promise<CharmSummary | null> {
  const [charm, state] = await kv.getMany<[Charm, CharmState]>([
    charmKey(ref),
    charmStateKey(ref),
  ]);
  if (charm.value === null) return null;
  const s = shownState(state.value);
  return { ...charm.value, status: charmStatus(s), state: s };
}

/**
 * A state as listings and the API show it: the initial one if there is none,
 * without the record's copy (the record's fields are beside it).
 */
export function shownState(state: CharmState | null): CharmState {
  if (state === null) return initialCharmState();
  const { record: _record, ...shown } = state;
  return shown;
}

/** The charm record a state carries a copy of, if it does. */
export function recordOf(
  ref: CharmRef,
  state: CharmState | null,
): Charm | null {
  const record = state?.record;
  return record === undefined
    ? null
    : { space: ref.space, charmId: ref.charmId, ...record };
}

/**
 * A charm's record (`null`: no such charm), its state and both cells. The
 * record is a value, not an entry: nothing checks it (it never changes).
 */
export type RunInputs = [
  Charm | null,
  Deno.KvEntryMaybe<CharmState>,
  Deno.KvEntryMaybe<unknown>,
  Deno.KvEntryMaybe<unknown>,
];

/**
 * A run's inputs, as a run reads them: three keys when the state carries the
 * record's copy (every state written since it does), else the record too.
 */
export async function readRunInputs(
  kv: Deno.Kv,
  ref: CharmRef,
): Promise<RunInputs> {
  const [state, argument, result] = await kv.getMany<
    [CharmState, unknown, unknown]
  >([
    charmStateKey(ref),
    cellKey(ref, "argument"),
    cellKey(ref, "result"),
  ]);
  const charm = recordOf(ref, state.value) ??
    (await kv.get<Charm>(charmKey(ref))).value;
  return [charm, state, argument, result];
}

/**
 * The states of `refs` (given in key order) and their records, as the
 * fan-out reads a page: one range scan of the states, and the records only
 * of charms whose state carries no copy of it (states written before it
 * did, or none: a missing charm).
 */
export async function readStatesWithRecords(
  kv: Deno.Kv,
  refs: readonly CharmRef[],
): Promise<{ charm: Charm | null; state: Deno.KvEntryMaybe<CharmState> }[]> {
  const states = await getManyByRange<CharmState>(kv, refs.map(charmStateKey));
  const charms = refs.map((ref, i) => recordOf(ref, states[i]!.value));
  const missing = refs.flatMap((_, i) => charms[i] === null ? [i] : []);
  if (missing.length > 0) {
    const keys = missing.map((i) => charmKey(refs[i]!));
    // Many (an older store): a range, which reads what it skips by key; a
    // few: by key.
    const records = missing.length > 10
      ? await getManyByRange<Charm>(kv, keys)
      : await getManyChunked<Charm>(kv, keys);
    missing.forEach((i, j) => (charms[i] = records[j]!.value));
  }
  return refs.map((_, i) => ({ charm: charms[i]!, state: states[i]! }));
}

/** A charm, its state and both cells, in one read (entries, for checks). */
export async function readCharmAndCells(
  kv: Deno.Kv,
  ref: CharmRef,
): Promise<
  [
    Deno.KvEntryMaybe<Charm>,
    Deno.KvEntryMaybe<CharmState>,
    Deno.KvEntryMaybe<unknown>,
    Deno.KvEntryMaybe<unknown>,
  ]
> {
  return await kv.getMany<[Charm, CharmState, unknown, unknown]>([
    charmKey(ref),
    charmStateKey(ref),
    cellKey(ref, "argument"),
    cellKey(ref, "result"),
  ]);
}

/**
 * Reads a charm with state, cells and integrations; `null` when absent. The
 * cells are as stored: secret fields sealed (show them through
 * `redactCell`, never as they are).
 */
export async function getCharmDetail(
  kv: Deno.Kv,
  ref: CharmRef,
): Promise<CharmDetail | null> {
  const [charm, state, argument, result] = await readCharmAndCells(kv, ref);
  if (charm.value === null) return null;
  const integrations: string[] = [];
  for await (const entry of kv.list({ prefix: charmIntegrationsPrefix(ref) })) {
    integrations.push(String(entry.key.at(-1)));
  }
  const s = shownState(state.value);
  return {
    ...charm.value,
    status: charmStatus(s),
    state: s,
    integrations,
    cells: { argument: argument.value, result: result.value },
  };
}

/** Options for {@linkcode listCharms}. */
export interface ListCharmsOptions {
  /** Only charms of this space. */
  space?: string;
  integration?: string;
  status?: CharmStatus;
  cursor?: string;
  limit: number;
}

/** A page of charms. `cursor` is `null` on the last page. */
export interface CharmPage {
  charms: CharmSummary[];
  cursor: string | null;
}

/**
 * Lists charms a page at a time, optionally filtered by space, integration
 * and status. With both filters the integration registry is scanned and filtered,
 * at most `limit * 10` entries per page, so a page may hold fewer than
 * `limit` charms and still have a cursor.
 *
 * The cursor names the last charm consumed (every listing's keys end in
 * `space, charmId`), so a page never skips a charm it fetched but did not
 * return.
 *
 * @throws {TypeError} when the cursor is not one a listing returned.
 */
export async function listCharms(
  kv: Deno.Kv,
  options: ListCharmsOptions,
): Promise<CharmPage> {
  const filterBoth = options.integration !== undefined &&
    options.status !== undefined;
  const base = options.integration !== undefined
    ? integrationCharmsPrefix(options.integration)
    : options.status !== undefined
    ? charmsByStatusPrefix(options.status)
    : charmsPrefix();
  // Every listing's keys end in `space, charmId`: a space narrows the prefix.
  const prefix = options.space === undefined ? base : [...base, options.space];
  const after = options.cursor ? decodeCursor(options.cursor) : null;
  if (
    after !== null && options.space !== undefined &&
    after.space !== options.space
  ) {
    throw new TypeError("cursor: not a cursor of this space's listing");
  }
  const scanLimit = filterBoth ? options.limit * 10 : options.limit;
  const refs: CharmRef[] = [];
  const selector = after === null
    ? { prefix }
    : { prefix, start: [...base, after.space, after.charmId] };
  // One extra: `start` is inclusive, and one more tells whether more remain.
  for await (
    const entry of kv.list(selector, { limit: scanLimit + 2 })
  ) {
    const ref = {
      space: entry.key.at(-2) as CharmRef["space"],
      charmId: String(entry.key.at(-1)),
    };
    if (after && ref.space === after.space && ref.charmId === after.charmId) {
      continue;
    }
    refs.push(ref);
  }
  const hasMore = refs.length > scanLimit;
  const scanned = refs.slice(0, scanLimit);
  const entries = await readCharmsWithState(kv, scanned);
  const charms: CharmSummary[] = [];
  let last: CharmRef | null = null;
  for (let i = 0; i < scanned.length; i++) {
    if (charms.length === options.limit) break;
    last = scanned[i]!;
    const charm = entries[i]!.charm.value;
    if (!charm) continue;
    const state = shownState(entries[i]!.state.value);
    const status = charmStatus(state);
    if (filterBoth && status !== options.status) continue;
    charms.push({ ...charm, status, state });
  }
  const consumedAll = last === scanned.at(-1);
  const cursor = last !== null && (hasMore || !consumedAll)
    ? encodeCursor(last)
    : null;
  return { charms, cursor };
}

/** An opaque listing cursor naming the last charm of a page. */
export function encodeCursor(ref: CharmRef): string {
  return btoa(JSON.stringify([ref.space, ref.charmId]))
    .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

/**
 * Reads a cursor from {@linkcode encodeCursor}.
 *
 * @throws {TypeError} when it is not one.
 */
export function decodeCursor(cursor: string): CharmRef {
  try {
    const json = atob(cursor.replaceAll("-", "+").replaceAll("_", "/"));
    const value = JSON.parse(json);
    if (
      Array.isArray(value) && value.length === 2 &&
      typeof value[0] === "string" && typeof value[1] === "string"
    ) {
      return { space: value[0] as CharmRef["space"], charmId: value[1] };
    }
  } catch {
    // Fall through to the error below.
  }
  throw new TypeError("cursor: not a cursor this API returned");
}

/**
 * Registers a charm with an integration (an upsert). Registering a disabled
 * charm re-enables it.
 *
 * @returns `added: true` when the charm was not registered before.
 * @throws {NotFoundError} when the charm does not exist.
 */
export async function registerCharm(
  kv: Deno.Kv,
  integration: string,
  ref: CharmRef,
  nowMs: number,
): Promise<{ added: boolean; reenabled: boolean }> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const [charm, state, registration] = await kv.getMany<
      [Charm, CharmState, unknown]
    >([
      charmKey(ref),
      charmStateKey(ref),
      integrationCharmKey(integration, ref),
    ]);
    if (charm.value === null) {
      throw new NotFoundError(`Charm ${formatCharmRef(ref)} does not exist`);
    }
    const before = state.value ?? initialCharmState();
    const added = registration.value === null;
    const reenabled = before.disabled;
    const op = kv.atomic().check(state).check(registration);
    if (added) {
      op.set(integrationCharmKey(integration, ref), { addedAt: nowMs })
        .set(charmIntegrationKey(ref, integration), true);
    }
    if (reenabled) {
      writeCharmState(op, charm.value, before, enabledState(before));
    }
    if (!added && !reenabled) return { added, reenabled };
    if ((await op.commit()).ok) return { added, reenabled };
  }
  throw new Error(
    `Cannot register charm ${formatCharmRef(ref)}: too much contention`,
  );
}

/** Removes a charm from an integration's registry; `false` if absent. */
export async function unregisterCharm(
  kv: Deno.Kv,
  integration: string,
  ref: CharmRef,
): Promise<boolean> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await kv.get(integrationCharmKey(integration, ref));
    if (entry.value === null) return false;
    const { ok } = await kv.atomic().check(entry)
      .delete(integrationCharmKey(integration, ref))
      .delete(charmIntegrationKey(ref, integration))
      .commit();
    if (ok) return true;
  }
  throw new Error(
    `Cannot unregister charm ${formatCharmRef(ref)}: too much contention`,
  );
}

/** The state after an operator (or registration) enables a charm. */
export function enabledState(before: CharmState): CharmState {
  return {
    ...before,
    disabled: false,
    disabledReason: null,
    consecutiveFailures: 0,
  };
}

/**
 * Enables or disables a charm.
 *
 * @throws {NotFoundError} when the charm does not exist.
 */
export async function setCharmDisabled(
  kv: Deno.Kv,
  ref: CharmRef,
  disabled: boolean,
  reason: string,
): Promise<CharmState> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const [charm, state] = await readCharmForUpdate(kv, ref);
    const before = state.value ?? initialCharmState();
    const after = disabled
      ? { ...before, disabled: true, disabledReason: reason }
      : enabledState(before);
    const op = kv.atomic().check(state);
    writeCharmState(op, charm.value, state.value, after);
    if ((await op.commit()).ok) return after;
  }
  throw new Error(
    `Cannot update charm ${formatCharmRef(ref)}: too much contention`,
  );
}

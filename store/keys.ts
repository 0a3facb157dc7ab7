/**
 * Every Deno KV key the service writes, built by named functions in this one
 * module. `docs/architecture.md` lists the same layout; keep them in step.
 *
 * @module
 */
import type { CharmRef, CharmStatus } from "../charm/charm.ts";

/** Which cell of a charm. */
export type CellName = "argument" | "result";

/** A stored charm: `Charm`. */
export function charmKey(ref: CharmRef): Deno.KvKey {
  return ["charms", ref.space, ref.charmId];
}

/** Prefix of all charms (optionally of one space). */
export function charmsPrefix(space?: string): Deno.KvKey {
  return space === undefined ? ["charms"] : ["charms", space];
}

/** A charm's cell value (JSON). */
export function cellKey(ref: CharmRef, cell: CellName): Deno.KvKey {
  return ["cells", ref.space, ref.charmId, cell];
}

/** A charm's run state: `CharmState`. */
export function charmStateKey(ref: CharmRef): Deno.KvKey {
  return ["charm_states", ref.space, ref.charmId];
}

/** Status index entry: `true`; one per charm, moved with its state. */
export function charmByStatusKey(
  status: CharmStatus,
  ref: CharmRef,
): Deno.KvKey {
  return ["charms_by_status", status, ref.space, ref.charmId];
}

/** Prefix of the status index for one status. */
export function charmsByStatusPrefix(status: CharmStatus): Deno.KvKey {
  return ["charms_by_status", status];
}

/** An integration's registry entry for a charm: `{addedAt}`. */
export function integrationCharmKey(
  integration: string,
  ref: CharmRef,
): Deno.KvKey {
  return ["integration_charms", integration, ref.space, ref.charmId];
}

/** Prefix of one integration's registry. */
export function integrationCharmsPrefix(integration: string): Deno.KvKey {
  return ["integration_charms", integration];
}

/** Reverse index: the integrations a charm is registered with: `true`. */
export function charmIntegrationKey(
  ref: CharmRef,
  integration: string,
): Deno.KvKey {
  return ["charm_integrations", ref.space, ref.charmId, integration];
}

/** Prefix of a charm's reverse integration index. */
export function charmIntegrationsPrefix(ref: CharmRef): Deno.KvKey {
  return ["charm_integrations", ref.space, ref.charmId];
}

/** An integration's registry marker: `{initializedAt}`. */
export function integrationKey(integration: string): Deno.KvKey {
  return ["integrations", integration];
}

/** Progress of one fan-out: `FanoutRecord`. */
export function fanoutKey(integration: string, tickMs: number, id: string) {
  return ["fanouts", integration, tickMs, id];
}

/** A run of one charm: `RunRecord`. `runKey` names the slot or manual run. */
export function runKey(ref: CharmRef, run: string): Deno.KvKey {
  return ["runs", ref.space, ref.charmId, run];
}

/** The per-charm lease held while a run executes: `Lease`. */
export function charmLeaseKey(ref: CharmRef): Deno.KvKey {
  return ["charm_leases", ref.space, ref.charmId];
}

/** A space's grant of access to another identity: `Delegate`. */
export function spaceDelegateKey(space: string, did: string): Deno.KvKey {
  return ["space_delegates", space, did];
}

/** Prefix of one space's delegates. */
export function spaceDelegatesPrefix(space: string): Deno.KvKey {
  return ["space_delegates", space];
}

/**
 * Bumped (with `sum`) by every grant in a space: grants check it, so two at
 * once cannot both pass the count of {@linkcode spaceDelegatesPrefix}.
 */
export function spaceDelegatesVersionKey(space: string): Deno.KvKey {
  return ["space_delegates_version", space];
}

/**
 * How many runs finished as `state` in the 5-minute bucket starting at
 * `bucketStartMs`: a `KvU64` summed in each run's outcome commit, for the
 * dashboard's last-hour counts.
 */
export function runCountKey(
  bucketStartMs: number,
  state: "succeeded" | "failed",
): Deno.KvKey {
  return ["run_counts", bucketStartMs, state];
}

/** Prefix of the run-count buckets (`runCountKey`). */
export function runCountsPrefix(): Deno.KvKey {
  return ["run_counts"];
}

/**
 * The lease held while one process refreshes a charm's OAuth token:
 * `AuthRefreshLease`, written with `expireIn`.
 */
export function authRefreshLeaseKey(ref: CharmRef): Deno.KvKey {
  return ["auth_refresh_leases", ref.space, ref.charmId];
}

/** A dead letter: `DeadLetter`. */
export function deadLetterKey(atMs: number, id: string): Deno.KvKey {
  return ["dead_letters", atMs, id];
}

/** Prefix of all dead letters, oldest first. */
export function deadLettersPrefix(): Deno.KvKey {
  return ["dead_letters"];
}

/** Where the queue stores a message it could not deliver. */
export function undeliveredKey(
  ref: CharmRef,
  run: string,
  attempt: number,
): Deno.KvKey {
  return ["undelivered", ref.space, ref.charmId, run, attempt];
}

/** Prefix of undelivered messages. */
export function undeliveredPrefix(): Deno.KvKey {
  return ["undelivered"];
}

/** Service-wide timestamps: `ServiceTimes`. */
export function serviceTimesKey(): Deno.KvKey {
  return ["service", "times"];
}

/** A service-wide counter (`Deno.KvU64`, written with `sum`). */
export function serviceCounterKey(name: ServiceCounter): Deno.KvKey {
  return ["service", "counters", name];
}

/** Names of the service-wide counters. */
export type ServiceCounter =
  | "cyclesCompleted"
  | "totalCharmsProcessed"
  | "totalSuccesses"
  | "totalFailures"
  | "charms"
  | "charmsDisabled"
  | "deadLetters";

/**
 * A job of the `kv` queue driver: `Job`. Ordered by due time within a shard;
 * a leased job is re-keyed to its lease expiry, so a crashed worker's job
 * comes due again by itself.
 */
export function queueJobKey(
  shard: number,
  dueAtMs: number,
  id: string,
): Deno.KvKey {
  return ["queue_jobs", shard, dueAtMs, id];
}

/** Prefix of one shard of the `kv` queue. */
export function queueShardPrefix(shard: number): Deno.KvKey {
  return ["queue_jobs", shard];
}

/** Bumped (with `sum`) on every `kv` enqueue, so idle workers can watch it. */
export function queueWakeKey(): Deno.KvKey {
  return ["queue_wake"];
}

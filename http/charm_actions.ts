/**
 * What a person can do to one charm from the API or the dashboard: run it
 * now, enable it, disable it. Both front ends call these, so the two behave
 * the same; authorization is the caller's job.
 *
 * @module
 */
import {
  type CharmRef,
  type CharmState,
  type CharmStatus,
  charmStatus,
  formatCharmRef,
} from "../charm/charm.ts";
import { runKeyOf, type RunMessage } from "../handlers/messages.ts";
import { ConflictError, NotFoundError } from "../lib/errors.ts";
import { logger } from "../lib/log.ts";
import type { ServiceDeps } from "../service/deps.ts";
import {
  getCharmDetail,
  setCharmDisabled,
  shownState,
} from "../store/charms.ts";
import { undeliveredKey } from "../store/keys.ts";

/**
 * Enqueues a manual run of a charm.
 *
 * @returns the run's id.
 * @throws {NotFoundError} when the charm does not exist.
 * @throws {ConflictError} when it is disabled.
 */
export async function enqueueManualRun(
  deps: ServiceDeps,
  ref: CharmRef,
): Promise<{ runId: string }> {
  const charm = await getCharmDetail(deps.kv, ref);
  if (charm === null) {
    throw new NotFoundError(`Charm ${formatCharmRef(ref)} does not exist`);
  }
  if (charm.state.disabled) {
    throw new ConflictError(
      `Cannot run charm ${
        formatCharmRef(ref)
      }: it is disabled; enable it first`,
    );
  }
  if (charm.state.needsReauth) {
    throw new ConflictError(
      `Cannot run charm ${
        formatCharmRef(ref)
      }: it needs re-authentication; replace its argument (PUT …/argument) first`,
    );
  }
  // Run it as the integration it is registered with would (its stream and
  // its prepare hook: a Google charm needs its token refreshed), falling
  // back to the first updater stream the recipe has.
  const recipe = deps.recipes.get(charm.recipe);
  const integration = recipe === undefined ? null : charm.integrations.find(
    (id) =>
      deps.allIntegrations.get(id)?.getIntegrationConfig()
        .isValidIntegrationCharm(charm, recipe).ok ?? false,
  ) ?? null;
  // A charm disabled between this check and the delivery is skipped by the
  // run handler, which reads the state again.
  const now = deps.now();
  const message: RunMessage = {
    type: "run",
    v: 1,
    space: ref.space,
    charmId: ref.charmId,
    integration,
    kind: "manual",
    slot: now,
    runId: crypto.randomUUID(),
    attempt: 1,
    enqueuedAt: now,
  };
  const { ok } = await deps.queue.enqueue(deps.kv.atomic(), message, {
    delayMs: 0,
    undeliveredKey: undeliveredKey(ref, runKeyOf(message), 1),
  }).commit();
  if (!ok) {
    throw new Error(
      `Cannot enqueue a run of ${formatCharmRef(ref)}: commit failed`,
    );
  }
  logger("http").info("Enqueued manual run {runId} of {charm}", {
    runId: message.runId,
    charm: formatCharmRef(ref),
  });
  return { runId: message.runId! };
}

/**
 * Enables or disables a charm by hand.
 *
 * @param by who did it, for the log and the disabled reason
 * @throws {NotFoundError} when the charm does not exist.
 */
export async function setDisabledByHand(
  deps: ServiceDeps,
  ref: CharmRef,
  disabled: boolean,
  by: string,
): Promise<{ status: CharmStatus; state: CharmState }> {
  const state = await setCharmDisabled(
    deps.kv,
    ref,
    disabled,
    `disabled by ${by}`,
  );
  logger("http").info("{by} {action} charm {charm}", {
    by,
    action: disabled ? "disabled" : "enabled",
    charm: formatCharmRef(ref),
  });
  return { status: charmStatus(state), state: shownState(state) };
}

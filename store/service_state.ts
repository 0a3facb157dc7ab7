/**
 * Service-wide state: cycle timestamps and counters. Counters are `KvU64`
 * values written with `sum`, so concurrent runs never lose an increment.
 *
 * @module
 */
import {
  type ServiceCounter,
  serviceCounterKey,
  serviceTimesKey,
} from "./keys.ts";
import { counterValue } from "./kv_util.ts";

/** Timestamps of the service's cycles (fan-out ticks), epoch ms. */
export interface ServiceTimes {
  startTime: number | null;
  lastCycleStart: number | null;
  lastCycleEnd: number | null;
  /** The last cron tick that reached this service. */
  lastTickAt: number | null;
}

/** The service state `/api/status` shows. */
export interface ServiceState extends ServiceTimes {
  cyclesCompleted: number;
  totalCharmsProcessed: number;
  totalSuccesses: number;
  totalFailures: number;
  deadLetters: number;
  charms: { total: number; enabled: number; disabled: number };
}

const COUNTERS: ServiceCounter[] = [
  "cyclesCompleted",
  "totalCharmsProcessed",
  "totalSuccesses",
  "totalFailures",
  "deadLetters",
  "charms",
  "charmsDisabled",
];

const EMPTY_TIMES: ServiceTimes = {
  startTime: null,
  lastCycleStart: null,
  lastCycleEnd: null,
  lastTickAt: null,
};

/** Reads the service state in one snapshot. */
export async function readServiceState(kv: Deno.Kv): Promise<ServiceState> {
  const entries = await kv.getMany([
    serviceTimesKey(),
    ...COUNTERS.map(serviceCounterKey),
  ]);
  const times = (entries[0]?.value as ServiceTimes | null) ?? EMPTY_TIMES;
  const count = (name: ServiceCounter) =>
    counterValue(
      entries[1 + COUNTERS.indexOf(name)] ??
        { value: null } as Deno.KvEntryMaybe<unknown>,
    );
  const total = count("charms");
  const disabled = Math.min(total, count("charmsDisabled"));
  return {
    ...EMPTY_TIMES,
    ...times,
    cyclesCompleted: count("cyclesCompleted"),
    totalCharmsProcessed: count("totalCharmsProcessed"),
    totalSuccesses: count("totalSuccesses"),
    totalFailures: count("totalFailures"),
    deadLetters: count("deadLetters"),
    charms: { total, enabled: total - disabled, disabled },
  };
}

/**
 * Updates the timestamps with `patch`, retrying on conflict (several
 * processes may tick at once).
 */
export async function updateServiceTimes(
  kv: Deno.Kv,
  patch: Partial<ServiceTimes>,
): Promise<void> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await kv.get<ServiceTimes>(serviceTimesKey());
    const next = { ...EMPTY_TIMES, ...entry.value, ...patch };
    if (
      (await kv.atomic().check(entry).set(serviceTimesKey(), next).commit()).ok
    ) {
      return;
    }
  }
  throw new Error("Cannot update the service times: too much contention");
}

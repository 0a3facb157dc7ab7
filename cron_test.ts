import assert from "node:assert/strict";
import {
  CRON_BACKOFF_MS,
  CRON_NAME,
  CRON_SCHEDULE,
  type CronFn,
  registerCron,
} from "./cron.ts";

Deno.test("registerCron() registers every minute with an explicit backoffSchedule", async () => {
  const calls: {
    name: string;
    schedule: string;
    backoff?: number[];
    handler: () => unknown;
  }[] = [];
  const cron: CronFn = (name, schedule, options, handler) => {
    calls.push({
      name,
      schedule,
      ...(options.backoffSchedule ? { backoff: options.backoffSchedule } : {}),
      handler,
    });
    return Promise.resolve();
  };
  let ticks = 0;
  await registerCron(() => {
    ticks++;
    return Promise.resolve();
  }, { cron });
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.name, CRON_NAME);
  assert.equal(calls[0]!.schedule, CRON_SCHEDULE);
  assert.equal(CRON_SCHEDULE, "* * * * *");
  assert.deepEqual(calls[0]!.backoff, CRON_BACKOFF_MS);
  assert.ok(CRON_BACKOFF_MS.length <= 5);
  await calls[0]!.handler();
  assert.equal(ticks, 1);
});

/**
 * A second service process for the end-to-end benchmark: listens to the
 * queue of the KV file it is given with the named driver and dispatches every
 * message as `service/service.ts` does, until its stdin closes.
 *
 * Usage: `deno run -A bench/e2e_worker.ts <kvPath> <driver> <maxConcurrent>
 * <clockAtMs>`; prints `ready` once listening.
 *
 * @module
 */
import { dispatch, listenOptions } from "../handlers/dispatch.ts";
import { benchDeps, serviceKv, ShiftedClock } from "./bench_deps.ts";
import { driverNamed } from "./drivers.ts";
import { benchRecipes, noopRecipe } from "./recipes.ts";

if (import.meta.main) {
  const [path, driverName, maxConcurrentText, clockAtText] = Deno.args;
  if (!path || !driverName || !maxConcurrentText || !clockAtText) {
    throw new TypeError(
      "usage: e2e_worker.ts <kvPath> <driver> <maxConcurrent> <clockAtMs>",
    );
  }
  const factory = driverNamed(driverName);
  const raw = await Deno.openKv(path);
  const kv = serviceKv(raw);
  const clock = new ShiftedClock();
  clock.set(Number(clockAtText));
  const maxConcurrent = Number(maxConcurrentText);
  const { queue, stop } = factory.create(
    kv,
    maxConcurrent,
    `bench-worker-${Deno.pid}`,
  );
  const deps = await benchDeps({
    kv,
    queue,
    recipes: benchRecipes(noopRecipe),
    maxConcurrent,
    now: clock.now,
  });
  const listening = queue.listen(
    (raw, delivery) => dispatch(deps, raw, delivery).then(() => {}),
    listenOptions(deps),
  );
  console.log("ready");
  // The parent closes stdin to stop this worker.
  for await (const _ of Deno.stdin.readable) {
    // Nothing is sent; this waits for end of input.
  }
  stop();
  raw.close();
  await listening.catch(() => {});
}

/**
 * A counting semaphore: at most `limit` holders at once, waiters served in
 * arrival order.
 *
 * @module
 */

/** Limits how many runs execute at once in this process. */
export class Semaphore {
  #available: number;
  #waiters: (() => void)[] = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) {
      throw new RangeError(
        `Semaphore limit must be a positive integer, got ${limit}`,
      );
    }
    this.#available = limit;
  }

  /** Holders right now. */
  get inUse(): number {
    return this.limit - this.#available;
  }

  /** Callers waiting for a permit. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Waits for a permit; call the returned function once to release it. */
  async acquire(): Promise<() => void> {
    if (this.#available > 0) {
      this.#available--;
    } else {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      if (next) next();
      else this.#available++;
    };
  }
}

/**
 * One line for a bad flag, naming it: a `node:util` `parseArgs` error, or a
 * value out of range. Shared by the service's configuration and the operator
 * CLI, which both exit 2 with it.
 *
 * @module
 */

/** Rewrites a `parseArgs` error as `--flag: problem`. */
export function describeParseArgsError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const unknown = message.match(/Unknown option '([^']+)'/);
  if (unknown) return `${unknown[1]}: unknown option; see --help`;
  const positional = message.match(/Unexpected argument '([^']+)'/);
  if (positional) {
    return `"${
      positional[1]
    }": unexpected argument; options look like --name=value, see --help`;
  }
  const missing = message.match(
    /Option '(?:-\w, )?(--[\w-]+) <value>' argument missing/,
  );
  if (missing) return `${missing[1]}: missing value; use ${missing[1]}=<value>`;
  const boolValue = message.match(
    /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/,
  );
  if (boolValue) return `${boolValue[1]}: takes no value`;
  return message.split("\n")[0] ?? "invalid arguments";
}

/**
 * Parses the integer option `name` (a flag or an environment variable) from
 * `min` to `max`.
 *
 * @throws {RangeError} `name: "x" is not a whole number; use an integer from
 *   min to max`, or `name: n is out of range; ...`.
 */
export function parseIntegerOption(
  name: string,
  value: string,
  min: number,
  max: number,
): number {
  const range = `use an integer from ${min} to ${max}`;
  if (!/^-?\d+$/.test(value.trim())) {
    throw new RangeError(`${name}: "${value}" is not a whole number; ${range}`);
  }
  const n = Number(value.trim());
  if (n < min || n > max) {
    throw new RangeError(`${name}: ${n} is out of range; ${range}`);
  }
  return n;
}

/**
 * Checks that the option `name` is exactly one of `choices`.
 *
 * @throws {RangeError} `name: "x" is not accepted; use one of a, b`.
 */
export function parseChoiceOption<T extends string>(
  name: string,
  value: string,
  choices: readonly T[],
): T {
  const choice = choices.find((c) => c === value);
  if (choice === undefined) {
    throw new RangeError(
      `${name}: "${value}" is not accepted; use one of ${choices.join(", ")}`,
    );
  }
  return choice;
}

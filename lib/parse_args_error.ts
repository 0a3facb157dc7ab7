/**
 * One line for a `node:util` `parseArgs` error, naming the flag: shared by the
 * service's configuration and the operator CLI, which both exit 2 with it.
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

import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import {
  describeParseArgsError,
  parseChoiceOption,
  parseIntegerOption,
} from "./parse_args_error.ts";

Deno.test("describeParseArgsError() names the flag", () => {
  const describe = (args: string[]) => {
    try {
      parseArgs({
        args,
        options: { limit: { type: "string" }, json: { type: "boolean" } },
        strict: true,
      });
    } catch (error) {
      return describeParseArgsError(error);
    }
    assert.fail(`parseArgs accepted ${args.join(" ")}`);
  };
  assert.equal(describe(["--nope"]), "--nope: unknown option; see --help");
  assert.equal(
    describe(["--limit"]),
    "--limit: missing value; use --limit=<value>",
  );
  assert.equal(describe(["--json=yes"]), "--json: takes no value");
});

Deno.test("parseIntegerOption() takes whole numbers in range, naming the option otherwise", () => {
  assert.equal(parseIntegerOption("--limit", "1", 1, 1000), 1);
  assert.equal(parseIntegerOption("--limit", " 1000 ", 1, 1000), 1000);
  const refused: [string, string][] = [
    ["0", "--limit: 0 is out of range; use an integer from 1 to 1000"],
    ["-3", "--limit: -3 is out of range; use an integer from 1 to 1000"],
    ["1001", "--limit: 1001 is out of range; use an integer from 1 to 1000"],
    [
      "2.5",
      '--limit: "2.5" is not a whole number; use an integer from 1 to 1000',
    ],
    ["", '--limit: "" is not a whole number; use an integer from 1 to 1000'],
    [
      "1e3",
      '--limit: "1e3" is not a whole number; use an integer from 1 to 1000',
    ],
  ];
  for (const [value, message] of refused) {
    assert.throws(
      () => parseIntegerOption("--limit", value, 1, 1000),
      { name: "RangeError", message },
      value,
    );
  }
});

Deno.test("parseChoiceOption() takes exactly one of the choices", () => {
  const choices = ["ok", "failing"] as const;
  assert.equal(parseChoiceOption("--status", "failing", choices), "failing");
  for (const value of ["OK", " ok", "broken", ""]) {
    assert.throws(
      () => parseChoiceOption("--status", value, choices),
      {
        name: "RangeError",
        message: `--status: "${value}" is not accepted; use one of ok, failing`,
      },
      value,
    );
  }
});

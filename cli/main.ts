/**
 * Entrypoint of the operator CLI (`deno task charms …`): wires the real
 * environment, console and files into {@linkcode runCli}.
 *
 * @module
 */
import { runCli } from "./cli.ts";

if (import.meta.main) {
  const code = await runCli(Deno.args, {
    env: Deno.env.toObject(),
    stdout: (line) => console.log(line),
    stderr: (line) => console.error(line),
    readTextFile: (path) => Deno.readTextFile(path),
  });
  Deno.exit(code);
}

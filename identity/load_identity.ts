/**
 * The service's operator identity, chosen once at startup from the
 * environment: `IDENTITY` (a PKCS#8 PEM key file), else `OPERATOR_PASS` (a
 * passphrase), else a development default that is refused wherever the
 * service is reachable from other machines.
 *
 * @module
 */
import { ConfigError, toError } from "../lib/errors.ts";
import { classifyAddress } from "../lib/net_guard.ts";
import { Identity } from "./identity.ts";

/**
 * The passphrase of the development identity: the charm ecosystem's own
 * local default, public knowledge, so never acceptable outside local
 * development.
 */
export const DEVELOPMENT_PASSPHRASE = "implicit trust";

/** Where the identity came from (safe to log: it names no key material). */
export type IdentitySource = "IDENTITY" | "OPERATOR_PASS" | "development";

/** The loaded identity and where it came from. */
export interface LoadedIdentity {
  identity: Identity;
  source: IdentitySource;
}

/** `true` on Deno Deploy, which sets `DENO_DEPLOYMENT_ID`. */
export function isDeployed(env: Record<string, string | undefined>): boolean {
  return (env.DENO_DEPLOYMENT_ID ?? "") !== "";
}

/**
 * `true` when other machines can reach the service: on Deno Deploy, or
 * listening on an address other than loopback (`HOST`, default
 * `127.0.0.1`). Then nothing is granted for being local: no open access
 * without `ADMIN_TOKEN`, no public development identity, and webhooks may
 * not reach private addresses. Only a loopback listener is local
 * development.
 */
export function isExposed(env: Record<string, string | undefined>): boolean {
  if (isDeployed(env)) return true;
  const host = (env.HOST || "127.0.0.1").replace(/^\[(.*)\]$/, "$1");
  if (host.toLowerCase() === "localhost") return false;
  return classifyAddress(host) !== "loopback";
}

/**
 * `true` in local development only: not exposed, and no `ADMIN_TOKEN` (one
 * shows the operator keeps strangers out: a loopback `HOST` behind a proxy,
 * say). Only then is anything granted for being local: the public
 * development identity, open access, and webhooks to private addresses.
 */
export function isLocalDevelopment(
  env: Record<string, string | undefined>,
): boolean {
  return !isExposed(env) && !env.ADMIN_TOKEN;
}

/**
 * Loads the operator identity from `env`.
 *
 * @param readTextFile reads the `IDENTITY` key file (injected for tests)
 * @throws {ConfigError} with a one-line message naming the variable when the
 *   key file cannot be read or parsed, or when no identity is configured on
 *   Deno Deploy. Messages never quote key material.
 */
export async function loadIdentity(
  env: Record<string, string | undefined>,
  readTextFile: (path: string) => Promise<string> = Deno.readTextFile,
): Promise<LoadedIdentity> {
  const path = env.IDENTITY ?? "";
  if (path !== "") {
    let pem: string;
    try {
      pem = await readTextFile(path);
    } catch (error) {
      throw new ConfigError(
        `IDENTITY: cannot read the key file "${path}": ${
          toError(error).message.split("\n")[0]
        }`,
      );
    }
    try {
      return { identity: await Identity.fromPkcs8Pem(pem), source: "IDENTITY" };
    } catch (error) {
      throw new ConfigError(
        `IDENTITY: the key file "${path}" is ${
          toError(error).message
        }; point IDENTITY at an Ed25519 key, or make a new one (a new file, not this one) with: deno task charms keygen > identity.pem`,
      );
    }
  }
  const passphrase = env.OPERATOR_PASS ?? "";
  if (passphrase === DEVELOPMENT_PASSPHRASE && !isLocalDevelopment(env)) {
    throw new ConfigError(
      "OPERATOR_PASS: is the development identity's public passphrase; outside local development (loopback HOST, no ADMIN_TOKEN, not on Deno Deploy) set a secret one",
    );
  }
  if (passphrase !== "") {
    return {
      identity: await Identity.fromPassphrase(passphrase),
      source: "OPERATOR_PASS",
    };
  }
  if (isDeployed(env)) {
    throw new ConfigError(
      "IDENTITY: not set, nor OPERATOR_PASS; the development identity is refused on Deno Deploy (DENO_DEPLOYMENT_ID is set): set IDENTITY to a PKCS#8 Ed25519 key file or OPERATOR_PASS to a secret passphrase",
    );
  }
  // Its passphrase is public: anyone could sign operator tokens with it.
  // Refused wherever strangers can reach the service, and wherever the
  // operator has shown they mean to keep them out (an ADMIN_TOKEN: a
  // loopback HOST behind a proxy, say).
  const why = isExposed(env)
    ? `HOST (${env.HOST}) is not a loopback address`
    : env.ADMIN_TOKEN
    ? "ADMIN_TOKEN is set"
    : null;
  if (why !== null) {
    throw new ConfigError(
      `IDENTITY: not set, nor OPERATOR_PASS; the development identity is refused when ${why}, since its passphrase is public: set IDENTITY to a PKCS#8 Ed25519 key file or OPERATOR_PASS to a secret passphrase`,
    );
  }
  return {
    identity: await Identity.fromPassphrase(DEVELOPMENT_PASSPHRASE),
    source: "development",
  };
}

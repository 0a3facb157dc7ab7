/**
 * `gmail`: runs registered charms' `googleUpdater` stream.
 *
 * The Gmail sync itself (token refresh, incremental import) is its own piece
 * of work; here the integration lists and validates its registered charms.
 *
 * @module
 */
import { defineRegistryIntegration } from "./integration.ts";
import { checkGoogleConfig } from "./_google_config.ts";

export default defineRegistryIntegration({
  id: "gmail",
  name: "Gmail",
  description: "Run googleUpdater on charms registered for Gmail import",
  updater: "googleUpdater",
  cellCauseName: "gmail-charms",
  checkConfig: (env) => checkGoogleConfig("gmail", env),
});

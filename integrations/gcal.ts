/**
 * `gcal`: runs registered charms' `calendarUpdater` stream.
 *
 * The Calendar sync itself is its own piece of work; here the integration
 * lists and validates its registered charms.
 *
 * @module
 */
import { defineRegistryIntegration } from "./integration.ts";
import { checkGoogleConfig } from "./_google_config.ts";

export default defineRegistryIntegration({
  id: "gcal",
  name: "Google Calendar",
  description: "Run calendarUpdater on charms registered for Calendar import",
  updater: "calendarUpdater",
  cellCauseName: "gcal-charms",
  checkConfig: (env) => checkGoogleConfig("gcal", env),
});

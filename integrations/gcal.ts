/**
 * `gcal`: runs the `calendarUpdater` stream of registered charms (the
 * `gcal-importer` recipe), refreshing each charm's Google token first.
 *
 * A charm is valid when its recipe has a `calendarUpdater` stream and keeps
 * Google tokens in `argument.auth`. See docs/google.md.
 *
 * @module
 */
import { defineGoogleIntegration } from "./_google_integration.ts";

export default defineGoogleIntegration({
  id: "gcal",
  name: "Google Calendar",
  description: "Run calendarUpdater on charms registered for Calendar import",
  updater: "calendarUpdater",
  cellCauseName: "gcal-charms",
});

/**
 * `gmail`: runs the `googleUpdater` stream of registered charms (the
 * `gmail-importer` recipe), refreshing each charm's Google token first.
 *
 * A charm is valid when its recipe has a `googleUpdater` stream and keeps
 * Google tokens in `argument.auth`. See docs/google.md.
 *
 * @module
 */
import { defineGoogleIntegration } from "./_google_integration.ts";

export default defineGoogleIntegration({
  id: "gmail",
  name: "Gmail",
  description: "Run googleUpdater on charms registered for Gmail import",
  updater: "googleUpdater",
  cellCauseName: "gmail-charms",
});

/**
 * `manual`: runs the charms named by `--charms` and those registered to it
 * through `POST /api/integrations/manual/charms`. Calls their `bgUpdater`
 * stream, as the original service did: charms whose streams need an
 * integration's session (`googleUpdater`, `calendarUpdater`) belong to that
 * integration, not here.
 *
 * @module
 */
import { defineRegistryIntegration } from "./integration.ts";

export default defineRegistryIntegration({
  id: "manual",
  name: "Manual",
  description:
    "Run the charms named by --charms and those registered via the API",
  updater: "bgUpdater",
  cellCauseName: "manual-charms",
});

/**
 * `manual`: runs the charms named by `--charms` and those registered to it
 * through `POST /api/integrations/manual/charms`. Calls the first updater
 * stream the recipe has.
 *
 * @module
 */
import { defineRegistryIntegration } from "./integration.ts";

export default defineRegistryIntegration({
  id: "manual",
  name: "Manual",
  description:
    "Run the charms named by --charms and those registered via the API",
  updater: null,
  cellCauseName: "manual-charms",
});

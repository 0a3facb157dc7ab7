/** The service version, reported by `/health` and `/api/status`. */
export const VERSION = "0.1.0";

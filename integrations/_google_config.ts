/**
 * Shared `--initialize` check of the Google OAuth client configuration.
 *
 * @module
 */

const REQUIRED = ["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"] as const;

/** Lines saying which Google variables are missing and how to get them. */
export function checkGoogleConfig(
  id: string,
  env: Record<string, string | undefined>,
): string[] {
  const missing = REQUIRED.filter((name) => !env[name]);
  if (missing.length === 0) return [`${id}: Google OAuth client configured`];
  return [
    `${id}: missing ${
      missing.join(", ")
    }: create an OAuth client (type "Web application") in the Google Cloud console under APIs & Services > Credentials, then set them in the environment`,
  ];
}

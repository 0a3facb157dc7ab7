/**
 * The browser half of `test/dashboard_test.ts`: drives Debian's chromium with
 * playwright-core against a running service and checks the dashboard.
 *
 * It runs as its own process because playwright needs `--allow-sys`, which
 * `deno task test` does not grant:
 *
 *   deno run -A test/dashboard_browser.ts <url> <operator-token> <space> \
 *     <charmId> <profiles-dir> <screenshot.png>
 *
 * Exits 0 when every check passed; otherwise prints the failure and exits 1.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type BrowserContext, chromium, type Page } from "playwright-core";

/** Where Debian's chromium package installs the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** Chromium with a fresh profile in `userDataDir`. */
async function _launch(
  userDataDir: string,
  javaScriptEnabled: boolean,
): Promise<BrowserContext> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `chromium is not installed at ${CHROMIUM}: run "apt-get install -y chromium" (.ci/run does)`,
    );
  }
  // Playwright passes `userDataDir` to chromium as --user-data-dir.
  return await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    javaScriptEnabled,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 30_000,
  });
}

/** Polls `check` (bounded) until it returns a value. */
async function _poll<T>(
  what: string,
  check: () => Promise<T | null>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await check();
    if (value !== null) return value;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function _checkDashboard(
  url: string,
  token: string,
  space: string,
  charmId: string,
  profiles: string,
  screenshot: string,
): Promise<void> {
  const row = (page: Page) =>
    page.locator(`tr[data-charm="${space}/${charmId}"]`);
  let browser: BrowserContext | null = null;
  try {
    // With JavaScript: the token is entered once and kept in the session.
    browser = await _launch(`${profiles}/js`, true);
    const page = await browser.newPage();
    await page.goto(url);
    assert.equal(await page.locator("#count-charms").textContent(), "1");
    assert.equal(await page.locator("tr[data-charm]").count(), 0);
    await page.locator('#token-form input[name="token"]').fill(token);
    await page.locator("#token-form button").click();
    await row(page).waitFor({ timeout: 15_000 });
    assert.equal(await row(page).locator("td.last-run").textContent(), "never");
    assert.equal(await row(page).locator(".badge").textContent(), "ok");

    await row(page).locator('button[data-action="run"]').click();
    await page.locator("#notice.ok").filter({ hasText: `Run now: ${charmId}` })
      .waitFor({ timeout: 15_000 });
    // The run happens in the service's queue; reload (the token stays in
    // sessionStorage) until the row shows it.
    const lastRun = await _poll("the last run to change", async () => {
      await page.reload();
      await row(page).waitFor({ timeout: 15_000 });
      const text = await row(page).locator("td.last-run").textContent();
      return text !== "never" ? text : null;
    }, 30_000);
    assert.match(lastRun ?? "", /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$/);
    assert.equal(await page.locator("#hour-succeeded").textContent(), "1");
    await page.screenshot({ path: screenshot, fullPage: true });
    await browser.close();
    browser = null;

    // Without JavaScript: the token in a form field, actions in forms.
    browser = await _launch(`${profiles}/nojs`, false);
    const plain = await browser.newPage();
    await plain.goto(url);
    await plain.locator('#token-form input[name="token"]').fill(token);
    await plain.locator("#token-form button").click();
    await row(plain).waitFor({ timeout: 15_000 });
    await row(plain).locator('button[data-action="disable"]').click();
    await row(plain).locator(".badge", { hasText: "disabled" })
      .waitFor({ timeout: 15_000 });
    assert.equal(
      await plain.locator("#notice").textContent(),
      `Disabled: ${charmId}`,
    );
  } finally {
    await browser?.close();
  }
}

if (import.meta.main) {
  const [url, token, space, charmId, profiles, screenshot] = Deno.args;
  if (screenshot === undefined) {
    console.error(
      "usage: dashboard_browser.ts <url> <token> <space> <charmId> <profiles-dir> <screenshot.png>",
    );
    Deno.exit(2);
  }
  try {
    await _checkDashboard(
      url!,
      token!,
      space!,
      charmId!,
      profiles!,
      screenshot,
    );
    console.log("dashboard checks passed");
    Deno.exit(0);
  } catch (error) {
    console.error(
      `dashboard check failed: ${
        error instanceof Error ? error.stack ?? error.message : error
      }`,
    );
    Deno.exit(1);
  }
}

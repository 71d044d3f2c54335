import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import type { DaemonProcess } from "./daemon-process.js";
import { devCa, type PanelBrowser, panelBrowser } from "./panel-client.js";

/** Debian's Chromium; never downloaded. Under CI=true its absence fails the run. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** Screenshots of every page, written by each run (gitignored). */
export const SCREENSHOTS = join(process.cwd(), "test-results", "panel");

/** The `skip` option of a describe that needs Chromium; throws under CI=true when it is missing. */
export function chromiumSkip(): false | string {
  if (existsSync(CHROMIUM)) return false;
  if (process.env.CI === "true")
    throw new Error(`${CHROMIUM} not found: install Debian's chromium (.ci/run does)`);
  return `${CHROMIUM} not installed`;
}

/** Headless Chromium, with the screenshot folder made. */
export function launchChromium(): Promise<Browser> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
}

/** Writes a full-page screenshot as test-results/panel/<name>.png (with `height`, only the top that high). */
export async function shot(page: Page, name: string, height?: number): Promise<void> {
  await page.screenshot({
    path: join(SCREENSHOTS, `${name}.png`),
    fullPage: true,
    clip: height === undefined ? undefined : { x: 0, y: 0, width: 1280, height },
  });
}

/** The serious and critical axe-core violations of the page, as "rule (count)". */
export async function axe(page: Page): Promise<string[]> {
  // Evaluated through the DevTools protocol: the page's CSP (no inline script) stays in force.
  await page.evaluate(
    readFileSync(join(process.cwd(), "node_modules", "axe-core", "axe.min.js"), "utf8"),
  );
  const result = (await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")) as {
    violations: { id: string; impact: string; nodes: unknown[] }[];
  };
  return result.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.nodes.length})`);
}

/** Signs in through the login form at `url` and waits for the signed-in header. */
export async function signIn(page: Page, url: string, user: string, password: string) {
  await page.goto(url);
  await page.getByLabel("User").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.keyboard.press("Enter");
  await page.getByTestId("principal").waitFor();
}

/** A dev daemon's panel, signed in as its dev admin outside the browser. */
export interface PanelAdmin {
  readonly url: string;
  readonly ca: string;
  readonly adminPassword: string;
  /** The admin's session, for calls that set up or check what the browser shows. */
  readonly admin: PanelBrowser;
}

/**
 * Signs in as the dev admin of the daemon started in `dir` and gives panel
 * user `user` the password `password` (its roles come from the daemon's bindings).
 */
export async function panelAdmin(
  dir: string,
  daemon: DaemonProcess,
  user: string,
  password: string,
): Promise<PanelAdmin> {
  const url = String(daemon.logs.find((l) => l.msg === "serving")?.panelUrl);
  const ca = devCa(dir);
  const adminPassword = readFileSync(join(dir, "panel-admin-password"), "utf8").trim();
  const admin = panelBrowser(url, ca);
  const login = await admin.auth("login", { user: "admin", password: adminPassword });
  if (login.status !== 200) throw new Error(`admin sign-in: ${login.status}`);
  await admin.auth("users", { action: "set-password", user, password });
  return { url, ca, adminPassword, admin };
}

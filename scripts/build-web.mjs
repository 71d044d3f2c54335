// Bundles the web panel (web/) into dist/web with esbuild: one minified
// script, one stylesheet, the page. Nothing is fetched at run time.
import { copyFileSync, mkdirSync, statSync } from "node:fs";
import { build } from "esbuild";

const out = "dist/web";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["web/src/main.ts"],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["chrome120", "firefox120", "safari17"],
  outfile: `${out}/app.js`,
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync("web/index.html", `${out}/index.html`);
copyFileSync("web/app.css", `${out}/app.css`);
const sizes = ["index.html", "app.js", "app.css"].map(
  (f) => `${f} ${statSync(`${out}/${f}`).size} B`,
);
console.log(`web panel: ${sizes.join(", ")}`);

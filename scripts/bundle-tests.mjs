// Bundles the compiled test files (dist/**/*.test.js, as tsc wrote them) with
// esbuild into dist/bundled-tests/, the same paths below it, sharing code
// through chunks (dist/bundled-tests/_chunks/). scripts/run-tests.mjs runs
// these. Node 20 has no compile cache, and every test file is its own
// process: loaded file by file, a test that starts a daemon in its process
// spent about 0.5 s more CPU than bundled (7 December 2026, `node --test` of
// test/access.test.js, 3.75 and 3.96 s against 2.96 and 3.41 s of CPU; see
// the README's figures for the whole suite). A test file runs as tsc wrote it too:
// `node --test dist/test/x.test.js`.
//
// Every module keeps its own import.meta.url (the file tsc wrote), so paths
// found beside a module (../../web/, the package.json, a fixture, a bin) are
// the same bundled or not. Left outside, as in the programs' bundles
// (scripts/bundle-bins.mjs): better-sqlite3 (a native addon), etcd3 (loaded
// on first use), and the browser drivers, which find their own files.
// Bundled CommonJS packages have no __dirname: the two that use it (pino's
// transports, grpc-js's channelz) are not reached by the code. Failures point
// into the bundles; `node --enable-source-maps --test <bundle>` shows the
// TypeScript lines. Each run replaces dist/bundled-tests/ whole, so two test
// runs in one checkout at once get in each other's way.
import { readdirSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { build } from "esbuild";

export const BUNDLED_TESTS_DIR = "dist/bundled-tests";

/** The compiled test files under dist/ (not the bundles). */
export function compiledTestFiles(dir = "dist") {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (path !== BUNDLED_TESTS_DIR) out.push(...compiledTestFiles(path));
    } else if (entry.name.endsWith(".test.js")) out.push(path);
  }
  return out;
}

/** dist/x/y.test.js -> dist/bundled-tests/x/y.test.js */
export const bundledPath = (file) => join(BUNDLED_TESTS_DIR, file.replace(/^dist\//, ""));

// Each compiled module starts with a constant holding its own file's URL, and
// `define` makes every `import.meta.url` in the code (not in strings or
// comments) that constant, which esbuild renames module by module. A bundled
// package using import.meta.url would find no such constant and throw: none
// does today.
const OWN_URL = "__dvImportMetaUrl";
const ownImportMetaUrl = {
  name: "own-import-meta-url",
  setup(b) {
    b.onLoad({ filter: /\/dist\/.*\.js$/ }, async (args) => ({
      contents: `const ${OWN_URL} = ${JSON.stringify(pathToFileURL(args.path).href)};\n${await readFile(args.path, "utf8")}`,
      loader: "js",
      resolveDir: dirname(args.path),
    }));
  },
};

/** Bundles `files` (compiled test files), replacing what an earlier run left. */
export async function bundleTests(files) {
  rmSync(BUNDLED_TESTS_DIR, { recursive: true, force: true });
  await build({
    entryPoints: files,
    outdir: BUNDLED_TESTS_DIR,
    outbase: "dist",
    bundle: true,
    splitting: true,
    chunkNames: "_chunks/[name]-[hash]",
    platform: "node",
    format: "esm",
    target: "node20",
    // Class and function names as written: tests and logs name an error's class.
    keepNames: true,
    external: ["better-sqlite3", "etcd3", "playwright-core", "puppeteer-core"],
    // The CommonJS packages inside an ES module bundle call require() for node's own modules.
    banner: {
      js: 'import { createRequire as __dvCreateRequire } from "node:module";\nconst require = __dvCreateRequire(import.meta.url);',
    },
    sourcemap: "linked",
    legalComments: "none",
    logLevel: "warning",
    define: { "import.meta.url": OWN_URL },
    plugins: [ownImportMetaUrl],
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href)
  await bundleTests(compiledTestFiles());

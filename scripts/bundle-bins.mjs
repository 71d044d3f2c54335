// Bundles each program (dist/src/bin/<name>-main.js, as tsc wrote it) into
// one file, dist/src/bin/<name>.js, the package's bin entry, with esbuild.
// Node 20 has no compile cache: loaded file by file, the daemon's 1,338
// modules cost it 1.5 to 2 s of CPU before it did anything, and hvctl's 343
// cost 0.5 s of every command (7 December 2026; scripts/suite-cpu.mjs
// counted 189 s of the test suite's CPU in 329 runs of hvctl). Bundled,
// `--help` took 0.31 s (hvctl) and 0.51 s (the daemon) of CPU. The bundle
// sits in the same folder as the file it replaces, so the paths the code
// finds beside itself (../../web/, the package.json, ../bin/debvisor-agent.js)
// are the same. Left outside: better-sqlite3 (a native addon) and etcd3
// (loaded on first use, src/store/etcd3-module.ts).
import { build } from "esbuild";

const PROGRAMS = ["debvisor-rpcd", "hvctl", "debvisor-agent"];

for (const name of PROGRAMS)
  await build({
    entryPoints: [`dist/src/bin/${name}-main.js`],
    outfile: `dist/src/bin/${name}.js`,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    // Class and function names as written: logs name an error's class (`RpcError`).
    keepNames: true,
    external: ["better-sqlite3", "etcd3"],
    // The CommonJS packages inside an ES module bundle call require() for node's own modules.
    banner: {
      js: 'import { createRequire as __dvCreateRequire } from "node:module";\nconst require = __dvCreateRequire(import.meta.url);',
    },
    // tsc's source maps carried over, for `node --enable-source-maps` stack traces.
    sourcemap: "linked",
    legalComments: "none",
    logLevel: "warning",
  });

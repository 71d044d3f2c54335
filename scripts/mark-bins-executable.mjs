// tsc writes plain files; the package's bin entries must be executable for
// `npx hvctl` (and npm-installed symlinks) to run them.
import { chmodSync, readFileSync } from "node:fs";

const { bin } = JSON.parse(readFileSync("package.json", "utf8"));
for (const path of Object.values(bin)) chmodSync(path, 0o755);

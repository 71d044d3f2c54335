// Child process for the crash test: writes keys through the SQLite store with
// several concurrent writers and prints each key only after its write was
// acknowledged. The parent kills it with SIGKILL at a random moment.
import { silentLogger } from "../../src/core/index.js";
import { createSqliteStore } from "../../src/store/index.js";

const [path, run] = process.argv.slice(2);
if (path === undefined || run === undefined) throw new Error("usage: store-writer PATH RUN");
const store = createSqliteStore({ path, logger: silentLogger });
const value = new Uint8Array(256).fill(7);
let n = 0;
process.stdout.write("ready\n");
const writer = async () => {
  // Bounded: the parent kills us long before this ends.
  for (let i = 0; i < 1_000_000; i++) {
    const key = `crash/${run}/${n++}`;
    await store.put(key, value);
    process.stdout.write(`${key}\n`);
  }
};
await Promise.all(Array.from({ length: 8 }, writer));

// `npm run chaos -- --seed N --seconds S`: one long chaos run (compiled JS,
// no TypeScript loader); prints the summary, and the history of any
// violation with its seed; exits 1 on a violation.
import { parseArgs } from "node:util";
import { runChaos } from "./chaos-run.js";

const { values } = parseArgs({
  options: {
    seed: { type: "string", default: String(Date.now() % 100_000) },
    seconds: { type: "string", default: "600" },
  },
});
const seed = Number(values.seed);
const seconds = Number(values.seconds);
if (!Number.isInteger(seed) || !Number.isInteger(seconds) || seconds < 1) {
  console.error("usage: npm run chaos -- --seed N --seconds S (whole numbers)");
  process.exit(2);
}
const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
log(`chaos: seed ${seed}, ${seconds} s`);
const [result] = await runChaos({ seeds: [seed], seconds, log });
if (result !== undefined && !result.ok) console.log(result.report);
process.exit(result?.ok ? 0 : 1);

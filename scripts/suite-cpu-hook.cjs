// Preloaded into every node process of a test run by scripts/suite-cpu.mjs
// (NODE_OPTIONS=--require): at exit, appends the process's CPU seconds, its
// wall seconds and what it ran to $DV_SUITE_CPU_LOG. A process killed with
// SIGKILL writes nothing.
const { appendFileSync } = require("node:fs");

const started = Date.now();
process.on("exit", () => {
  const log = process.env.DV_SUITE_CPU_LOG;
  if (log === undefined) return;
  const cpu = process.cpuUsage();
  const script = (process.argv[1] ?? "-").replace(/^.*\/dist\//, "");
  const command = process.argv.slice(2).find((a) => !a.startsWith("-")) ?? "";
  try {
    appendFileSync(
      log,
      `${((cpu.user + cpu.system) / 1e6).toFixed(3)}\t${((Date.now() - started) / 1000).toFixed(1)}\t${script}\t${command.slice(0, 80)}\n`,
    );
  } catch {
    // A full disk or a removed file must not change how the process ends.
  }
});

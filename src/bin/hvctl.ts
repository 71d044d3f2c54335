#!/usr/bin/env node
import { runCli } from "../cli/index.js";
import { hideIpSniWarning } from "../client/index.js";

hideIpSniWarning();

const code = await runCli(process.argv.slice(2), {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
  tty: {
    stdout: process.stdout.isTTY === true,
    stderr: process.stderr.isTTY === true,
    stdin: process.stdin.isTTY === true,
  },
  stdin: process.stdin,
  signals: process,
  columns: process.stderr.columns || 80,
});
process.exitCode = code;

#!/usr/bin/env node
import { runCli } from "../cli/index.js";
import { hideIpSniWarning } from "../client/index.js";

hideIpSniWarning();

// `hvctl node list | head -1`: the reader has gone and wants no more. Stop
// quietly with success, as cat and ls do, rather than a write EPIPE stack trace.
for (const stream of [process.stdout, process.stderr])
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });

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

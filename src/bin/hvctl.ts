#!/usr/bin/env node
import { runCli } from "../cli/index.js";

// grpc-js passes an IP target as TLS SNI, which Node flags (DEP0123) although
// the certificate is still verified against the IP. Hide only that warning.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const code = typeof rest[0] === "object" ? (rest[0] as { code?: string }).code : rest[1];
  if (code === "DEP0123") return;
  (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;

const code = await runCli(process.argv.slice(2), {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
});
process.exitCode = code;

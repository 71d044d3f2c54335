// The cli layer: hvctl, the operator's command line.

export type { ProgramIo } from "./program.js";
export { buildProgram } from "./program.js";
export { runCli } from "./run-cli.js";

// The cli layer: hvctl, the operator's command line.

export { EXIT } from "./cli-errors.js";
export { completionScript } from "./completion-command.js";
export { METHOD_PERMISSIONS } from "./permissions.js";
export type { ProgramIo } from "./program.js";
export { buildProgram, loadNouns } from "./program.js";
export { runCli } from "./run-cli.js";

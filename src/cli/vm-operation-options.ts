/*
 * The flags every hvctl command that starts a VM lifecycle operation shares:
 * --request-id (idempotency) and --no-wait (do not follow it).
 */
import { Option } from "commander";

/** `--no-wait`: print the operation id and return at once; a fresh Option per command. */
export const noWaitOption = () =>
  new Option(
    "--no-wait",
    "print the operation id and return at once (follow it with vm operation)",
  );
/** `--request-id <key>`: the operation's idempotency key; a fresh Option per command. */
export const requestIdOption = () =>
  new Option("--request-id <key>", "idempotency key: retrying with it names the same operation");

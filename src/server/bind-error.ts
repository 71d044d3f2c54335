/**
 * The error of a port the daemon could not bind, naming the flag and the
 * configuration key that set it, so a port conflict says what to change
 * (two dev daemons, or a daemon beside another program, is the usual cause).
 */
export function bindError(
  flag: "--listen" | "--metrics-listen",
  key: "listen" | "metrics.listen",
  address: string,
  err: unknown,
): Error {
  const text = err instanceof Error ? err.message : String(err);
  const inUse =
    (err as NodeJS.ErrnoException | undefined)?.code === "EADDRINUSE" ||
    text.includes("EADDRINUSE");
  const why = inUse
    ? "address already in use (another process, perhaps another debvisor-rpcd, listens there)"
    : text;
  return new Error(
    `cannot listen on ${address} (${flag}, config ${key}): ${why}; choose another address with ${flag} HOST:PORT (port 0 picks a free one)`,
    { cause: err },
  );
}

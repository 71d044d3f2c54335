/**
 * grpc-js passes an IP target as TLS SNI, which Node flags (DEP0123) although
 * the certificate is still verified against the IP. Hides only that warning,
 * for the command-line tools whose users would otherwise see it every time.
 */
export function hideIpSniWarning(): void {
  const emitWarning = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === "object" ? (rest[0] as { code?: string }).code : rest[1];
    if (code === "DEP0123") return;
    (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
}

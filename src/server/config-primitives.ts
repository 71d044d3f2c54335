// The building blocks the configuration sections share: bounded integers, addresses, paths,
// tenant names, token buckets and log levels.
import { z } from "zod";
import { isTenantName } from "../core/index.js";

/** Bytes in a MiB. */
export const MIB = 1024 * 1024;
/** An integer from `min` to `max`. */
export const int = (min: number, max: number) => z.number().int().min(min).max(max);
/** HOST:PORT, an IPv6 address in brackets. */
export const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be HOST:PORT (IPv6 in brackets)");
/** A file path, bounded. */
export const path = z.string().min(1).max(4096);
/** A tenant's name (core isTenantName): 1 to 64 characters, no control or invisible formatting ones. */
export const tenantName = z.string().refine(isTenantName, {
  message:
    "a tenant is 1 to 64 characters, none of them a control or invisible formatting character",
});
/** A token bucket: refill rate and burst. */
export const bucket = z.strictObject({
  ratePerSecond: z.number().positive().max(1_000_000),
  burst: int(1, 10_000_000),
});
/** pino's levels, as `log.level` takes them. */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
/** Level names other loggers use, taken for pino's. */
export const LEVEL_ALIASES: Record<string, string> = { warning: "warn", critical: "fatal" };

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Command } from "commander";
import { type CertificateInfo, EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import { createCsr } from "../pki/index.js";
import type { CliContext } from "./cli-context.js";
import { parseDuration } from "./duration.js";
import { renderTable } from "./output.js";

const when = (t: CertificateInfo["issued"]) =>
  t === undefined ? "-" : new Date(Number(t.seconds) * 1000).toISOString().replace(".000Z", "Z");

/** `hvctl cert ...`: certificates the cluster CA issued. */
export function certCommand(cli: () => CliContext): Command {
  const cert = new Command("cert").description("certificates issued by the cluster CA");
  cert
    .command("list")
    .description("issued certificates and their state")
    .option("--subject <cn>", "only this subject")
    .action(async (opts: { subject?: string }) => {
      const ctx = cli();
      const r = await ctx
        .client(EnrollmentService)
        .listCertificates({ subject: opts.subject ?? "" }, { timeoutMs: ctx.timeoutMs });
      if (ctx.format === "json") {
        ctx.out(
          `${JSON.stringify(
            r.certificates.map((c) => ({
              serial: c.serial,
              subject: c.subject,
              notAfter: when(c.notAfter),
              revoked: when(c.revoked),
              supersededBy: c.supersededBy,
              issuedBy: c.issuedBy,
            })),
            null,
            2,
          )}\n`,
        );
        return;
      }
      ctx.out(
        renderTable(
          ["SERIAL", "SUBJECT", "KIND", "NOT AFTER", "STATE", "ISSUED BY"],
          r.certificates.map((c) => [
            c.serial,
            c.subject,
            c.kind,
            when(c.notAfter),
            c.revoked !== undefined
              ? `revoked (${c.revocationReason || "-"})`
              : c.supersededBy !== ""
                ? `superseded by ${c.supersededBy}`
                : "valid",
            c.issuedBy,
          ]),
        ),
      );
    });
  cert
    .command("revoke")
    .description("revoke a certificate; refused at its next call, its open streams closed")
    .argument("<serial>", "hex serial, as openssl x509 -serial prints it")
    .option("--reason <text>", "why, for the record")
    .action(async (serial: string, opts: { reason?: string }) => {
      const ctx = cli();
      const c = await ctx
        .client(EnrollmentService)
        .revokeCertificate(
          { serial: serial.replace(/^serial=/i, ""), reason: opts.reason ?? "" },
          { timeoutMs: ctx.timeoutMs },
        );
      ctx.out(
        ctx.format === "json"
          ? `${JSON.stringify({ serial: c.serial, revoked: when(c.revoked) })}\n`
          : `revoked ${c.serial}\n`,
      );
    });
  cert
    .command("issue")
    .description(
      "a certificate for a service; the key is made here and written to --out with the certificate and CA",
    )
    .requiredOption("--cn <name>", "common name")
    .option("--usage <usage>", "client or server (--server is the global server-address flag)")
    .option("--client", "short for --usage client")
    .option("--san <names>", "comma-separated DNS names and IP addresses")
    .option("--ttl <duration>", "lifetime, like 90d (default 90d server, 30d client)")
    .requiredOption("--out <dir>", "where to write <cn>.key (0600), <cn>.crt and ca.crt")
    .action(
      async (opts: {
        cn: string;
        usage?: string;
        client?: boolean;
        san?: string;
        ttl?: string;
        out: string;
      }) => {
        const ctx = cli();
        const usage = opts.client ? "client" : opts.usage;
        if (usage !== "client" && usage !== "server")
          throw new Error("--usage: client or server (or --client)");
        const days =
          opts.ttl === undefined ? 0 : Math.ceil(parseDuration("--ttl", opts.ttl) / 86_400_000);
        const { csrPem, keyPem } = await createCsr(opts.cn);
        const r = await ctx.client(EnrollmentService).issueCertificate(
          {
            commonName: opts.cn,
            usage,
            sans: (opts.san ?? "")
              .split(",")
              .map((x) => x.trim())
              .filter((x) => x !== ""),
            ttlDays: days,
            csrPem,
          },
          { timeoutMs: ctx.timeoutMs },
        );
        mkdirSync(opts.out, { recursive: true, mode: 0o700 });
        writeFileSync(join(opts.out, `${opts.cn}.key`), keyPem, { mode: 0o600 });
        writeFileSync(join(opts.out, `${opts.cn}.crt`), r.certificatePem);
        writeFileSync(join(opts.out, "ca.crt"), r.caPem);
        ctx.out(
          ctx.format === "json"
            ? `${JSON.stringify({ serial: r.serial, dir: opts.out })}\n`
            : `issued ${r.serial}: ${join(opts.out, `${opts.cn}.crt`)}\n`,
        );
      },
    );
  return cert;
}

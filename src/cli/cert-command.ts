import { Command } from "commander";
import { type CertificateInfo, EnrollmentService } from "../gen/debvisor/v1/pki_pb.js";
import type { CliContext } from "./cli-context.js";
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
  return cert;
}

import { X509Certificate } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Command, Option } from "commander";
import { contextFilePath, writeFileSet } from "../client/index.js";
import {
  type CertificateInfo,
  CertificateInfoSchema,
  EnrollmentService,
} from "../gen/debvisor/v1/pki_pb.js";
import { addEnrollCommand } from "./cert-enroll.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import { parseDuration, splitList } from "./duration.js";
import { withExamples } from "./help-text.js";
import {
  type Column,
  isoTime,
  messageJson,
  renderColumns,
  type Style,
  tableTime,
} from "./output.js";

function state(c: CertificateInfo, style: Style): string {
  if (c.revoked !== undefined) return style.bad(`revoked (${c.revocationReason || "-"})`);
  if (c.supersededBy !== "") return style.dim(`superseded by ${c.supersededBy}`);
  return style.good("valid");
}

function columns(style: Style): Column<CertificateInfo>[] {
  return [
    { header: "SERIAL", value: (c) => c.serial },
    { header: "SUBJECT", value: (c) => c.subject },
    { header: "KIND", value: (c) => c.kind },
    { header: "NOT AFTER", value: (c) => tableTime(c.notAfter) },
    { header: "STATE", value: (c) => state(c, style) },
    { header: "ISSUED BY", value: (c) => c.issuedBy },
    { header: "ISSUED", wide: true, value: (c) => tableTime(c.issued) },
    { header: "SANS", wide: true, value: (c) => c.sans.join(",") || "-" },
  ];
}

/** `hvctl cert ...`: certificates the cluster CA issued. */
export function certCommand(cli: () => CliContext): Command {
  const cert = new Command("cert").description("certificates issued by the cluster CA");
  withExamples(cert, "hvctl cert list", "hvctl cert revoke 5A:3F:...");
  withExamples(
    cert
      .command("list")
      .description("issued certificates and their state")
      .option("--subject <cn>", "only this subject")
      .action(async (opts: { subject?: string }) => {
        const ctx = cli();
        const r = await ctx
          .client(EnrollmentService)
          .listCertificates({ subject: opts.subject ?? "" });
        ctx.print(
          { certificates: r.certificates.map((c) => messageJson(CertificateInfoSchema, c)) },
          () => renderColumns(columns(ctx.style), r.certificates, ctx.wide),
        );
      }),
    "hvctl cert list",
    "hvctl cert list --subject hv07 -o wide",
  );
  withExamples(
    cert
      .command("revoke")
      .description(
        "revoke a certificate; a client certificate is refused at its next call, its open streams closed",
      )
      .argument("<serial>", "hex serial, as openssl x509 -serial prints it")
      .option("--reason <text>", "why, for the record")
      .action(async (serial: string, opts: { reason?: string }) => {
        const ctx = cli();
        const c = await ctx.client(EnrollmentService).revokeCertificate({
          serial: serial.replace(/^serial=/i, ""),
          reason: opts.reason ?? "",
        });
        if (c.kind === "server") ctx.revokedServer(c.serial);
        ctx.print(messageJson(CertificateInfoSchema, c), () =>
          c.kind === "server"
            ? `revoked ${c.serial}\nnote: a server certificate: agents refuse it from their next connection (a daemon holding the CA renews its own at once); this hvctl refuses it from now on; each other hvctl once it has taken the cluster's list of revoked server certificates again (after a command, when its copy is over 5 minutes old), and until then a copy of this one still passes to that hvctl as the control plane (docs/security.md)\n`
            : `revoked ${c.serial}\n`,
        );
      }),
    'hvctl cert revoke 5A3F0C... --reason "decommissioned"',
  );
  withExamples(
    cert
      .command("issue")
      .description(
        "a certificate for a service or person; the key is made here and written to --out with the certificate and CA",
      )
      .requiredOption("--cn <name>", "common name")
      .addOption(
        new Option(
          "--usage <usage>",
          "client or server (not --server: that is the global server-address flag)",
        ).choices(["client", "server"]),
      )
      .option("--client", "short for --usage client")
      .option("--san <names>", "comma-separated DNS names and IP addresses")
      .option("--ttl <duration>", "lifetime, like 90d (default 90d server, 30d client)")
      .requiredOption("--out <dir>", "where to write <cn>.key (0600), <cn>.crt and ca.crt")
      .action(
        async (opts: {
          cn: string;
          usage?: "client" | "server";
          client?: boolean;
          san?: string;
          ttl?: string;
          out: string;
        }) => {
          const ctx = cli();
          const usage = opts.client ? "client" : opts.usage;
          if (usage === undefined) throw new UsageError("--usage client|server (or --client)");
          const days =
            opts.ttl === undefined ? 0 : Math.ceil(parseDuration("--ttl", opts.ttl) / 86_400_000);
          const { csrPem, keyPem } = await (await import("../pki/index.js")).createCsr(opts.cn);
          const r = await ctx.client(EnrollmentService).issueCertificate({
            commonName: opts.cn,
            usage,
            sans: splitList(opts.san),
            ttlDays: days,
            csrPem,
          });
          mkdirSync(opts.out, { recursive: true, mode: 0o700 });
          const crt = join(opts.out, `${opts.cn}.crt`);
          await writeFileSet([
            { path: join(opts.out, `${opts.cn}.key`), text: keyPem, mode: 0o600 },
            { path: crt, text: r.certificatePem, mode: 0o644 },
            { path: join(opts.out, "ca.crt"), text: r.caPem, mode: 0o644 },
          ]);
          ctx.print(
            { serial: r.serial, notAfter: isoTime(r.notAfter), certificate: crt, dir: opts.out },
            () => `issued ${r.serial}: ${crt}\n`,
          );
        },
      ),
    "hvctl cert issue --cn panel --usage server --san panel.example,10.0.0.5 --out ./panel",
    "hvctl cert issue --cn alice --client --ttl 30d --out ./alice",
  );
  withExamples(
    cert
      .command("renew")
      .description(
        "renew the client certificate of the current context: a new key, the same identity, written over the context's files",
      )
      .action(async () => {
        const ctx = cli();
        const conn = ctx.connection();
        const entry = ctx.contextEntry();
        if (conn.certPem === undefined || !("clientCert" in entry.credential))
          throw new UsageError(
            `context "${conn.name}" does not authenticate with a client certificate; only those are renewed here`,
          );
        const cn = /CN=([^\n,]+)/.exec(new X509Certificate(conn.certPem).subject)?.[1] ?? "";
        const { csrPem, keyPem } = await (await import("../pki/index.js")).createCsr(cn);
        const r = await ctx.client(EnrollmentService).renewCertificate({ csrPem });
        const certPath = contextFilePath(ctx.configPath, entry.credential.clientCert);
        await writeFileSet([
          {
            path: contextFilePath(ctx.configPath, entry.credential.clientKey),
            text: keyPem,
            mode: 0o600,
          },
          { path: certPath, text: r.certificatePem, mode: 0o644 },
        ]);
        ctx.print(
          { serial: r.serial, notAfter: isoTime(r.notAfter), certificate: certPath },
          () => `renewed: ${r.serial}, valid until ${isoTime(r.notAfter)} (${certPath})\n`,
        );
      }),
    "hvctl cert renew",
    "hvctl --context alice cert renew -o json",
  );
  addEnrollCommand(cert, cli);
  return cert;
}

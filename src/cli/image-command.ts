import { Command, Option } from "commander";
import {
  CloneResultSchema,
  SnapshotStatusSchema,
  StorageService,
} from "../gen/debvisor/v1/storage_pb.js";
import type { CliContext } from "./cli-context.js";
import { UsageError } from "./cli-errors.js";
import {
  checkLabel,
  datasetText,
  parseImage,
  parseImageSnapshot,
  snapshotText,
} from "./dataset-args.js";
import { withExamples } from "./help-text.js";
import { messageJson } from "./output.js";

/** `hvctl image ...`: Ceph RBD template snapshots and the clones made from them. */
export function imageCommand(cli: () => CliContext): Command {
  const image = new Command("image").description(
    "Ceph RBD images: protected template snapshots and clones of them",
  );
  withExamples(
    image,
    "hvctl image template rbd/vm-001-disk0 --label golden",
    "hvctl image clone rbd/vm-001-disk0@golden-20261122T140502Z --to rbd/acme-web-02 --tenant acme",
  );

  withExamples(
    image
      .command("template")
      .description("snapshot an image as a template (named LABEL-<UTC time>) and protect it")
      .argument("<image>", "POOL/IMAGE (or rbd:POOL/IMAGE)")
      .option("--label <label>", "the snapshot name's first part (default template)")
      .addOption(new Option("--name <label>", "the same as --label").hideHelp())
      .action(async (text: string, opts: { label?: string; name?: string }) => {
        const ctx = cli();
        if (opts.label !== undefined && opts.name !== undefined)
          throw new UsageError("--label and --name are the same; give one");
        const given = opts.label ?? opts.name;
        const ref = parseImage("IMAGE", text);
        const label = given === undefined ? "" : checkLabel("--label", given);
        const r = await ctx.client(StorageService).createRbdTemplateSnapshot({ image: ref, label });
        ctx.print(messageJson(SnapshotStatusSchema, r), () => {
          const snap = snapshotText(r.snapshot).replace(/^rbd:/, "");
          return `template ${snap} created and protected; clone it with: hvctl image clone ${snap} --to POOL/NEWIMAGE\n`;
        });
      }),
    "hvctl image template rbd/vm-001-disk0 --label golden",
    "hvctl image template rbd/vm-001-disk0 -o json | jq -r .snapshot.snapshotName",
  );

  withExamples(
    image
      .command("clone")
      .description("make a new image from a protected template snapshot")
      .argument("<template>", "POOL/IMAGE@SNAPSHOT (or rbd:POOL/IMAGE@SNAPSHOT)")
      .requiredOption("--to <image>", "the new image, POOL/NEWIMAGE")
      .option(
        "--tenant <tenant>",
        "the tenant that owns the clone (a tenant's own credential always clones into its tenant, to names starting with <tenant>-)",
      )
      .action(async (text: string, opts: { to: string; tenant?: string }) => {
        const ctx = cli();
        const template = parseImageSnapshot("TEMPLATE", text);
        const target = parseImage("--to", opts.to);
        const r = await ctx.client(StorageService).cloneRbdFromTemplate({
          templateSnapshot: template,
          newImage: target,
          tenant: opts.tenant ?? "",
        });
        ctx.print(
          messageJson(CloneResultSchema, r),
          () =>
            `clone ${datasetText(r.clone ?? target)} created from ${snapshotText(template)}${opts.tenant ? ` for tenant ${opts.tenant}` : ""}\n`,
        );
      }),
    "hvctl image clone rbd/vm-001-disk0@golden-20261122T140502Z --to rbd/acme-web-02 --tenant acme",
  );
  return image;
}

import { Command, Option } from "commander";
import {
  CloneResultSchema,
  type ImageInfo,
  ImageInfoSchema,
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
import { type ListFlags, showList, withListFlags } from "./list-flags.js";
import { type Column, formatBytes, messageJson } from "./output.js";

/** `golden-20261122T140502Z (2 clones)`, one per template. */
const templates = (i: ImageInfo) =>
  i.templates
    .map((t) => {
      const n = t.clones.length + t.hiddenClones;
      return `${t.snapshotName} (${n} clone${n === 1 ? "" : "s"})`;
    })
    .join(", ") || "-";

const IMAGE_COLUMNS: Column<ImageInfo>[] = [
  // The name every image and storage command takes back.
  { header: "NAME", value: (i) => datasetText(i.image) },
  { header: "TENANT", value: (i) => i.tenant || "-" },
  { header: "VM", value: (i) => i.vmId || "-" },
  {
    header: "SIZE",
    value: (i) => (i.sizeBytes === 0n ? "-" : formatBytes(i.sizeBytes)),
    sort: (i) => i.sizeBytes,
  },
  { header: "PARENT", value: (i) => (i.parent === undefined ? "-" : snapshotText(i.parent)) },
  { header: "TEMPLATES", value: templates },
  {
    header: "SNAPSHOTS",
    wide: true,
    value: (i) => (i.snapshotCount < 0 ? "?" : String(i.snapshotCount)),
    sort: (i) => i.snapshotCount,
  },
  {
    header: "CLONES",
    wide: true,
    value: (i) =>
      i.templates
        .flatMap((t) => [
          ...t.clones.map(datasetText),
          ...(t.hiddenClones > 0 ? [`${t.hiddenClones} not yours`] : []),
        ])
        .join(", ") || "-",
  },
];

/** `hvctl image ...`: Ceph RBD template snapshots and the clones made from them. */
export function imageCommand(cli: () => CliContext): Command {
  const image = new Command("image").description(
    "Ceph RBD images: protected template snapshots and clones of them",
  );
  withExamples(
    image,
    "hvctl image list",
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
  withExamples(
    withListFlags(
      image
        .command("list")
        .description(
          "list RBD images: tenant, VM, size, the template a clone depends on (PARENT) and each image's templates",
        ),
    ).action(async (opts: ListFlags) => {
      const ctx = cli();
      const client = ctx.client(StorageService);
      await showList(ctx, {
        columns: IMAGE_COLUMNS,
        flags: opts,
        plural: "images",
        name: "image",
        json: (i) => messageJson(ImageInfoSchema, i),
        key: (i) => datasetText(i.image),
        page: (pageToken) =>
          client
            .listImages({ pageSize: 200, pageToken, tenant: opts.tenant ?? "" })
            .then((r) => ({ items: r.images, next: r.nextPageToken })),
      });
    }),
    "hvctl image list",
    "hvctl image list -o wide   # plus snapshot count and the clones' names",
  );

  withExamples(
    image
      .command("delete")
      .description(
        "delete an image with its snapshots (refused while a VM uses it or clones depend on its templates)",
      )
      .argument("<image>", "rbd:POOL/IMAGE (or POOL/IMAGE), as image list prints it")
      .action(async (text: string) => {
        const ctx = cli();
        const ref = parseImage("IMAGE", text);
        const r = await ctx.client(StorageService).deleteImage({ image: ref });
        ctx.print(messageJson(ImageInfoSchema, r), () => `image ${datasetText(ref)} deleted\n`);
      }),
    "hvctl image delete rbd:rbd/acme-web-02",
  );

  withExamples(
    image
      .command("flatten")
      .description(
        "copy a clone's data from its template, so it no longer depends on it (the template may then be deleted)",
      )
      .argument("<image>", "rbd:POOL/IMAGE (or POOL/IMAGE) of a clone")
      .action(async (text: string) => {
        const ctx = cli();
        const ref = parseImage("IMAGE", text);
        const r = await ctx.client(StorageService).flattenImage({ image: ref });
        ctx.print(
          messageJson(ImageInfoSchema, r),
          () => `image ${datasetText(ref)} flattened: it no longer depends on a template\n`,
        );
      }),
    "hvctl image flatten rbd:rbd/acme-web-02",
  );
  return image;
}

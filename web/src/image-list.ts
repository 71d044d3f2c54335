// The storage page's RBD images: each with its templates and their clones,
// and flatten/delete actions (the API's refusal shown in place).

import type { ImageInfo } from "../../src/gen/debvisor/v1/storage_pb.js";
import { api } from "./api.js";
import { bytes, el, mount, table } from "./dom.js";
import type { View } from "./main.js";
import { datasetText, refusal } from "./storage-text.js";

/** Lists the images into `box`; drawn again after an action. */
export async function drawImages(view: View, box: HTMLElement): Promise<void> {
  const act = async (what: "flatten" | "delete", img: ImageInfo) => {
    const name = datasetText(img.image);
    if (what === "delete" && !confirm(`Delete image ${name} with its snapshots?`)) return;
    try {
      await (what === "flatten"
        ? api.storage.flattenImage({ image: img.image })
        : api.storage.deleteImage({ image: img.image }));
      await drawImages(view, box);
      box.prepend(
        el("p", { role: "status" }, `${name}: ${what === "flatten" ? "flattened" : "deleted"}`),
      );
    } catch (err) {
      box.prepend(refusal(err));
    }
  };
  const button = (what: "flatten" | "delete", img: ImageInfo) =>
    el(
      "button",
      {
        type: "button",
        "aria-label": `${what === "flatten" ? "Flatten" : "Delete"} ${datasetText(img.image)}`,
        onclick: () => void act(what, img),
      },
      what === "flatten" ? "Flatten" : "Delete",
    );
  try {
    const r = await api.storage.listImages({ pageSize: 500 }, { signal: view.signal });
    mount(
      box,
      r.images.length === 0
        ? el("p", {}, "No images.")
        : table(
            `${r.images.length} images`,
            ["Image", "Size", "Tenant", "VM", "Clone of", "Templates and their clones", "Actions"],
            r.images.map((i) => {
              const name = datasetText(i.image);
              return [
                name,
                bytes(i.sizeBytes),
                i.tenant,
                i.vmId,
                i.parent === undefined
                  ? ""
                  : `${datasetText(i.parent.dataset)}@${i.parent.snapshotName}`,
                i.templates
                  .map(
                    (t) =>
                      `@${t.snapshotName}: ${[...t.clones.map(datasetText), ...(t.hiddenClones > 0 ? [`${t.hiddenClones} hidden`] : [])].join(", ") || "no clones"}`,
                  )
                  .join("; "),
                el(
                  "span",
                  { class: "actions" },
                  i.parent === undefined ? null : button("flatten", i),
                  i.vmId !== "" ? null : button("delete", i),
                ),
              ];
            }),
            "image-list",
          ),
    );
  } catch (err) {
    mount(box, refusal(err));
  }
}

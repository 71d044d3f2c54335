// Storage: datasets (ZFS and RBD), replication jobs with lag and history
// (replication-jobs.ts), and RBD images with their templates and clones
// (image-list.ts); a dataset's snapshots with prune are dataset-view.ts.
// What the caller may not do shows as the API's refusal, in place.

import { api } from "./api.js";
import { bytes, el, mount, table } from "./dom.js";
import { drawImages } from "./image-list.js";
import type { View } from "./main.js";
import { showReplicationJobs } from "./replication-jobs.js";
import { datasetText, refusal, replState } from "./storage-text.js";

/** Storage: datasets, replication jobs (live, with lag), images with templates and clones. */
export async function storageView(view: View): Promise<void> {
  const datasets = el("div", { "data-testid": "datasets" }, el("p", {}, "Loading…"));
  const jobs = el("div", { "data-testid": "replication" }, el("p", {}, "Loading…"));
  const history = el("div", { "data-testid": "replication-history", "aria-live": "polite" });
  const images = el("div", { "data-testid": "images" }, el("p", {}, "Loading…"));
  mount(
    view.main,
    el("h1", {}, "Storage"),
    el("h2", {}, "Datasets"),
    datasets,
    el("h2", {}, "Replication jobs"),
    jobs,
    history,
    el("h2", {}, "Images, templates and clones"),
    images,
  );
  void drawDatasets(view, datasets);
  void drawImages(view, images);
  showReplicationJobs(view, jobs, history);
}

async function drawDatasets(view: View, box: HTMLElement): Promise<void> {
  try {
    const all = [];
    let pageToken = "";
    for (let page = 0; page < 20; page++) {
      const r = await api.storage.listDatasets(
        { pageSize: 500, pageToken },
        { signal: view.signal },
      );
      all.push(...r.datasets);
      pageToken = r.nextPageToken;
      if (pageToken === "") break;
    }
    mount(
      box,
      all.length === 0
        ? el("p", {}, "No datasets.")
        : table(
            `${all.length} datasets`,
            ["Dataset", "Size", "Node", "Tenant", "VM", "Snapshots", "Replication"],
            all.map((d) => {
              const name = datasetText(d.dataset);
              return [
                el("a", { href: `#/storage/${encodeURIComponent(name)}` }, name),
                d.sizeBytes === 0n ? "?" : bytes(d.sizeBytes),
                d.nodeId?.id ?? "",
                d.tenant,
                d.vmId,
                d.snapshotCount < 0 ? "?" : String(d.snapshotCount),
                d.replications
                  .map((r) => `${r.target?.id ?? "?"}: ${replState(r.state)}`)
                  .join(", "),
              ];
            }),
            "dataset-list",
          ),
    );
  } catch (err) {
    mount(box, refusal(err));
  }
}

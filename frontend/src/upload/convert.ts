// DICOM to NIfTI in the browser: dcm2niix compiled to WebAssembly (@niivue/dcm2niix), run in its
// own web worker, loaded only when a DICOM folder is chosen. The DICOM bytes stay in this page and
// that worker; what comes back is each series' NIfTI and its BIDS sidecar (upload/dicom.ts reads
// them).
import type { PickedFile } from "./transfer";

export interface ConvertedSeries {
  /** The output's base name (series_<number>[suffixes]). */
  name: string;
  nifti: Uint8Array<ArrayBuffer>;
  sidecar: unknown;
}

/**
 * Convert DICOM files; every series found becomes one volume. Input files are renamed by their
 * path (folders joined with "_") so that equal names in two folders do not collide; output names
 * come from the series number only (`-f series_%s`), never from the folder, patient or protocol.
 */
export async function convertDicom(files: readonly PickedFile[]): Promise<ConvertedSeries[]> {
  const { Dcm2niix } = await import("@niivue/dcm2niix");
  const dcm2niix = new Dcm2niix();
  await dcm2niix.init();
  try {
    const input = files.map((f) => new File([f.file], f.path.split("/").join("_")));
    const output = await dcm2niix.input(input).bids("y").bidsAnonymize("y").gzip("n").filenameformat("series_%s").run();
    const byBase = new Map<string, { nifti?: File; json?: File }>();
    for (const file of output) {
      const match = /^(.*)\.(nii|json)$/.exec(file.name);
      if (!match) continue;
      const entry = byBase.get(match[1]) ?? {};
      if (match[2] === "nii") entry.nifti = file;
      else entry.json = file;
      byBase.set(match[1], entry);
    }
    const series: ConvertedSeries[] = [];
    for (const [name, { nifti, json }] of [...byBase].sort(([a], [b]) => a.localeCompare(b))) {
      if (!nifti) continue;
      let sidecar: unknown = null;
      try {
        sidecar = json ? JSON.parse(await json.text()) : null;
      } catch {
        sidecar = null;
      }
      series.push({ name, nifti: new Uint8Array(await nifti.arrayBuffer()), sidecar });
    }
    return series;
  } finally {
    dcm2niix.worker?.terminate();
  }
}

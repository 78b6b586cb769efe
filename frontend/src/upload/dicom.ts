// Pure helpers of the DICOM import: recognising DICOM files, reading what dcm2niix wrote (the
// BIDS sidecar, kept to an allowlist of acquisition fields; the NIfTI header, cleared of its text
// fields), naming the converted images and writing the manifest that sends them. No DOM, no worker:
// see upload/convert.ts for dcm2niix itself. DICOM headers identify the patient, so nothing here
// keeps a DICOM field outside the allowlist, and only the cleared NIfTI leaves the browser.

/** The preamble (128 bytes) and the magic word DICM: what the server refuses too. */
export const DICOM_HEAD_BYTES = 132;

export function isDicomHead(head: Uint8Array): boolean {
  return (
    head.length >= DICOM_HEAD_BYTES && head[128] === 0x44 && head[129] === 0x49 && head[130] === 0x43 && head[131] === 0x4d
  );
}

/** Sidecar fields that describe the acquisition and nothing else; every other field is dropped. */
export const SIDECAR_ALLOWLIST = [
  "Modality",
  "MagneticFieldStrength",
  "MRAcquisitionType",
  "ScanningSequence",
  "SequenceVariant",
  "RepetitionTime",
  "EchoTime",
  "InversionTime",
  "FlipAngle",
  "SliceThickness",
  "SpacingBetweenSlices",
] as const;

export type Acquisition = Partial<Record<(typeof SIDECAR_ALLOWLIST)[number], string | number | string[]>>;

/** The sidecar's allowlisted fields, with plain values only (strings, numbers, lists of strings). */
export function allowedSidecar(sidecar: unknown): Acquisition {
  const out: Acquisition = {};
  if (!sidecar || typeof sidecar !== "object") return out;
  const record = sidecar as Record<string, unknown>;
  for (const key of SIDECAR_ALLOWLIST) {
    const value = record[key];
    if (typeof value === "number" && Number.isFinite(value)) out[key] = value;
    else if (typeof value === "string" && value.length <= 64) out[key] = value;
    else if (Array.isArray(value) && value.every((v) => typeof v === "string" && v.length <= 16)) out[key] = value as string[];
  }
  return out;
}

/** What the user sees of a series, read locally: its description is shown, never sent. */
export interface SeriesLabel {
  description: string;
  modality: string;
}

export function seriesLabel(sidecar: unknown): SeriesLabel {
  const record = sidecar && typeof sidecar === "object" ? (sidecar as Record<string, unknown>) : {};
  const text = (v: unknown) => (typeof v === "string" ? v.slice(0, 80) : "");
  return {
    description: text(record.SeriesDescription) || text(record.ProtocolName),
    modality: text(record.Modality),
  };
}

/** BIDS-like names the user can pick for an image; the guess comes from the series description. */
export const IMAGE_NAMES = ["T1w", "T2w", "FLAIR", "PD", "DWI", "image"] as const;

export function guessImageName(label: SeriesLabel, acquisition: Acquisition = {}): string {
  const d = label.description.toLowerCase();
  if (/flair|dark.?fluid/.test(d)) return "FLAIR";
  if (/dwi|diff|dti|adc/.test(d)) return "DWI";
  if (/t2|tse.*t2/.test(d)) return "T2w";
  if (/\bpd\b|proton/.test(d)) return "PD";
  if (/t1|mprage|mp-rage|spgr|bravo|tfe/.test(d)) return "T1w";
  const ti = typeof acquisition.InversionTime === "number" ? acquisition.InversionTime : null;
  const tr = typeof acquisition.RepetitionTime === "number" ? acquisition.RepetitionTime : null;
  if (ti !== null && tr !== null && ti > 1.5 && tr > 5) return "FLAIR"; // seconds, as in BIDS
  if (ti !== null && ti < 1.5) return "T1w";
  return "image";
}

// --------------------------------------------------------------------------- the NIfTI header

export interface NiftiSummary {
  version: 1 | 2;
  shape: number[];
  spacing: number[];
}

interface Layout {
  version: 1 | 2;
  little: boolean;
  headerSize: number;
}

function layoutOf(bytes: Uint8Array): Layout {
  if (bytes.length < 348) throw new Error("not a NIfTI file: shorter than its header");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const little of [true, false]) {
    const size = view.getInt32(0, little);
    if (size === 348) return { version: 1, little, headerSize: 348 };
    if (size === 540 && bytes.length >= 540) return { version: 2, little, headerSize: 540 };
  }
  throw new Error("not an uncompressed NIfTI-1 or NIfTI-2 file");
}

/** The volume's shape (the dimensions in use) and voxel spacing. */
export function niftiSummary(bytes: Uint8Array): NiftiSummary {
  const { version, little } = layoutOf(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dim = (i: number) => (version === 1 ? view.getInt16(40 + 2 * i, little) : Number(view.getBigInt64(16 + 8 * i, little)));
  const pixdim = (i: number) => (version === 1 ? view.getFloat32(76 + 4 * i, little) : view.getFloat64(104 + 8 * i, little));
  const n = Math.max(1, Math.min(7, dim(0)));
  const shape = Array.from({ length: n }, (_, i) => dim(i + 1));
  const spacing = Array.from({ length: n }, (_, i) => pixdim(i + 1));
  return { version, shape, spacing };
}

// Free-text fields of the header: offset and length, per version.
const TEXT_FIELDS: Record<1 | 2, [string, number, number][]> = {
  1: [
    ["data_type", 4, 10],
    ["db_name", 14, 18],
    ["descrip", 148, 80],
    ["aux_file", 228, 24],
    ["intent_name", 328, 16],
  ],
  2: [
    ["descrip", 240, 80],
    ["aux_file", 320, 24],
    ["intent_name", 508, 16],
  ],
};

/**
 * A copy of an uncompressed NIfTI with every free-text field of its header zeroed and any header
 * extension dropped (dcm2niix writes acquisition times into `descrip`; extensions may hold a whole
 * DICOM header). The voxels are copied unchanged.
 */
export function clearNiftiHeader(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const { version, little, headerSize } = layoutOf(bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const voxOffset = version === 1 ? view.getFloat32(108, little) : Number(view.getBigInt64(168, little));
  const dataStart = Math.max(headerSize + 4, Math.round(voxOffset));
  if (dataStart > bytes.length) throw new Error("the NIfTI header points past the end of the file");
  const out = new Uint8Array(headerSize + 4 + (bytes.length - dataStart));
  out.set(bytes.subarray(0, headerSize), 0);
  out.set(bytes.subarray(dataStart), headerSize + 4); // the 4 extension bytes stay 0: none follows
  const outView = new DataView(out.buffer);
  for (const [, offset, length] of TEXT_FIELDS[version]) out.fill(0, offset, offset + length);
  if (version === 1) outView.setFloat32(108, headerSize + 4, little);
  else outView.setBigInt64(168, BigInt(headerSize + 4), little);
  return out;
}

// --------------------------------------------------------------------------- the upload

/** A subject key the server accepts: letters, digits, "_", ".", "-" (at most 128). */
export function isSubjectKey(key: string): boolean {
  return /^[A-Za-z0-9_.-]{1,128}$/.test(key);
}

export interface ConvertedRow {
  subject: string;
  imageName: string;
  label: string;
  split: string;
}

/** The file name a converted image is sent under: `<subject>_<image name>.nii.gz`. */
export function uploadName(row: ConvertedRow): string {
  const name = row.imageName.replace(/[^A-Za-z0-9_.-]+/g, "") || "image";
  return `${row.subject}_${name}.nii.gz`;
}

/** The manifest of the converted images (subject, image, label, split). */
export function dicomManifest(rows: readonly ConvertedRow[]): string {
  const lines = ["subject,image,label,split", ...rows.map((r) => [r.subject, uploadName(r), r.label, r.split].join(","))];
  return lines.join("\n") + "\n";
}

/** Problems that keep the rows from being sent (empty: ready). */
export function rowProblems(rows: readonly ConvertedRow[]): string[] {
  const problems: string[] = [];
  if (rows.length === 0) problems.push("choose at least one series");
  const seen = new Set<string>();
  for (const r of rows) {
    if (!isSubjectKey(r.subject)) problems.push(`subject ${JSON.stringify(r.subject)}: letters, digits, _ . - only`);
    else if (seen.has(r.subject)) problems.push(`subject ${r.subject}: one image per subject`);
    seen.add(r.subject);
    if (r.label !== "0" && r.label !== "1") problems.push(`subject ${r.subject || "?"}: choose a label`);
  }
  return problems;
}

/** Gzip with the browser's CompressionStream. */
export async function gzipBytes(bytes: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

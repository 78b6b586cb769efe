import { describe, expect, it } from "vitest";
import {
  allowedSidecar,
  clearNiftiHeader,
  dicomManifest,
  guessImageName,
  gzipBytes,
  isDicomHead,
  niftiSummary,
  rowProblems,
  seriesLabel,
  uploadName,
} from "./dicom";

/** A NIfTI-1 file: 348-byte header, 4 extension bytes (+ an extension), int16 voxels. */
function nifti1(shape: [number, number, number], extension?: Uint8Array): Uint8Array {
  const ext = extension ?? new Uint8Array(0);
  const voxels = shape[0] * shape[1] * shape[2];
  const offset = 352 + ext.length;
  const bytes = new Uint8Array(offset + voxels * 2);
  const view = new DataView(bytes.buffer);
  view.setInt32(0, 348, true);
  new TextEncoder().encodeInto("Doe^Jane", bytes.subarray(14, 32)); // db_name
  view.setInt16(40, 3, true);
  shape.forEach((d, i) => view.setInt16(42 + 2 * i, d, true));
  view.setInt16(70, 4, true); // datatype int16
  view.setInt16(72, 16, true);
  [1, 0.5, 0.5, 2].forEach((v, i) => view.setFloat32(76 + 4 * i, v, true));
  view.setFloat32(108, offset, true);
  new TextEncoder().encodeInto("TE=3;Time=101010.000;Doe^Jane", bytes.subarray(148, 228));
  new TextEncoder().encodeInto("SECRET123", bytes.subarray(228, 252));
  bytes.set([0x6e, 0x2b, 0x31, 0x00], 344); // magic "n+1"
  if (ext.length) bytes[348] = 1;
  bytes.set(ext, 352);
  for (let i = 0; i < voxels; i++) view.setInt16(offset + 2 * i, i % 300, true);
  return bytes;
}

const contains = (bytes: Uint8Array, word: string) => new TextDecoder("latin1").decode(bytes).includes(word);

describe("DICOM files", () => {
  it("are recognised by DICM at byte 128, as the server does", () => {
    const head = new Uint8Array(132);
    head.set([0x44, 0x49, 0x43, 0x4d], 128);
    expect(isDicomHead(head)).toBe(true);
    expect(isDicomHead(head.subarray(0, 131))).toBe(false);
    expect(isDicomHead(nifti1([2, 2, 2]).subarray(0, 132))).toBe(false);
  });
});

describe("the sidecar", () => {
  const sidecar = {
    Modality: "MR",
    MagneticFieldStrength: 3,
    RepetitionTime: 2.3,
    EchoTime: 0.00298,
    ScanningSequence: ["GR", "IR"],
    SeriesDescription: "T1 MPRAGE Doe",
    ProtocolName: "T1 MPRAGE",
    PatientName: "Doe^Jane",
    PatientID: "SECRET123",
    AcquisitionDateTime: "2024-01-02T10:10:10",
    InstitutionName: "Jane Doe Memorial",
    Manufacturer: { nested: "Doe" },
  };

  it("keeps only the allowlisted acquisition fields", () => {
    const kept = allowedSidecar(sidecar);
    expect(kept).toEqual({
      Modality: "MR",
      MagneticFieldStrength: 3,
      RepetitionTime: 2.3,
      EchoTime: 0.00298,
      ScanningSequence: ["GR", "IR"],
    });
    expect(JSON.stringify(kept)).not.toMatch(/Doe|Jane|SECRET/);
    expect(allowedSidecar(null)).toEqual({});
    expect(allowedSidecar({ RepetitionTime: "x".repeat(100), EchoTime: Number.NaN })).toEqual({});
  });

  it("names the image from the series description, else from the timings", () => {
    expect(seriesLabel(sidecar)).toEqual({ description: "T1 MPRAGE Doe", modality: "MR" });
    expect(guessImageName(seriesLabel(sidecar))).toBe("T1w");
    expect(guessImageName({ description: "t2_tirm_tra_dark-fluid", modality: "MR" })).toBe("FLAIR");
    expect(guessImageName({ description: "AX FLAIR", modality: "MR" })).toBe("FLAIR");
    expect(guessImageName({ description: "ep2d_diff", modality: "MR" })).toBe("DWI");
    expect(guessImageName({ description: "T2 TSE", modality: "MR" })).toBe("T2w");
    expect(guessImageName({ description: "", modality: "MR" }, { InversionTime: 2.5, RepetitionTime: 9 })).toBe("FLAIR");
    expect(guessImageName({ description: "", modality: "MR" }, { InversionTime: 0.9, RepetitionTime: 2.3 })).toBe("T1w");
    expect(guessImageName({ description: "", modality: "CT" })).toBe("image");
  });
});

describe("the NIfTI header", () => {
  it("gives the shape and spacing", () => {
    expect(niftiSummary(nifti1([16, 16, 8]))).toEqual({ version: 1, shape: [16, 16, 8], spacing: [0.5, 0.5, 2] });
    expect(() => niftiSummary(new Uint8Array(100))).toThrow(/not a NIfTI/);
  });

  it("loses its text fields and extensions, keeps its voxels", () => {
    const extension = new Uint8Array(32);
    new DataView(extension.buffer).setInt32(0, 32, true);
    new TextEncoder().encodeInto("DICOM Doe^Jane SECRET123", extension.subarray(8));
    const original = nifti1([4, 3, 2], extension);
    expect(contains(original, "Doe^Jane")).toBe(true);
    const cleared = clearNiftiHeader(original);
    for (const word of ["Doe", "Jane", "SECRET123", "Time="]) expect(contains(cleared, word)).toBe(false);
    const view = new DataView(cleared.buffer);
    expect(view.getFloat32(108, true)).toBe(352);
    expect(cleared[348]).toBe(0);
    expect(cleared.length).toBe(352 + 4 * 3 * 2 * 2);
    expect(cleared.subarray(352)).toEqual(original.subarray(352 + 32));
    expect(niftiSummary(cleared).shape).toEqual([4, 3, 2]);
  });

  it("is gzipped for the upload", async () => {
    const bytes = clearNiftiHeader(nifti1([8, 8, 8]));
    const gz = await gzipBytes(bytes);
    expect([gz[0], gz[1]]).toEqual([0x1f, 0x8b]);
    const back = new Uint8Array(await new Response(new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer());
    expect(back).toEqual(bytes);
  });
});

describe("the manifest", () => {
  const rows = [
    { subject: "dcm-01", imageName: "T1w", label: "1", split: "val" },
    { subject: "dcm-02", imageName: "FLAIR", label: "0", split: "train" },
  ];

  it("names each image after its subject and the image name", () => {
    expect(uploadName(rows[0])).toBe("dcm-01_T1w.nii.gz");
    expect(dicomManifest(rows)).toBe(
      "subject,image,label,split\ndcm-01,dcm-01_T1w.nii.gz,1,val\ndcm-02,dcm-02_FLAIR.nii.gz,0,train\n",
    );
  });

  it("needs a key, a label and one image per subject", () => {
    expect(rowProblems(rows)).toEqual([]);
    expect(rowProblems([])).toEqual(["choose at least one series"]);
    expect(rowProblems([{ ...rows[0], label: "" }])).toEqual(["subject dcm-01: choose a label"]);
    expect(rowProblems([rows[0], { ...rows[1], subject: "dcm-01" }])).toEqual(["subject dcm-01: one image per subject"]);
    expect(rowProblems([{ ...rows[0], subject: "a b" }])).toEqual(['subject "a b": letters, digits, _ . - only']);
  });
});

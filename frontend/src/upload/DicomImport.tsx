// The DICOM import of the dataset page: a DICOM folder (chosen here, or dropped on the bulk upload)
// is converted to NIfTI in this browser (upload/convert.ts), each series is shown with what its
// sidecar says, and the series the user keeps are handed to the bulk upload as NIfTI files and a
// manifest. No DICOM byte and no DICOM header field is sent.
import { useEffect, useRef, useState } from "react";
import { errorMessage } from "../api/http";
import { type ConvertedSeries, convertDicom } from "./convert";
import {
  type Acquisition,
  type ConvertedRow,
  IMAGE_NAMES,
  type SeriesLabel,
  allowedSidecar,
  clearNiftiHeader,
  dicomManifest,
  guessImageName,
  gzipBytes,
  niftiSummary,
  rowProblems,
  seriesLabel,
  uploadName,
} from "./dicom";
import { type PickedFile, fromFile } from "./transfer";

interface Series extends ConvertedRow {
  key: string;
  include: boolean;
  info: SeriesLabel;
  acquisition: Acquisition;
  shape: number[];
  spacing: number[];
  nifti: Uint8Array<ArrayBuffer>;
}

const SPLITS = ["train", "val", "test"] as const;

function toSeries(converted: ConvertedSeries[], stamp: number): Series[] {
  return converted.map((c, i) => {
    const label = seriesLabel(c.sidecar);
    const acquisition = allowedSidecar(c.sidecar);
    const nifti = clearNiftiHeader(c.nifti);
    const { shape, spacing } = niftiSummary(nifti);
    return {
      key: `${stamp}-${c.name}`,
      include: shape.length >= 3 && shape.slice(0, 3).every((d) => d > 1),
      info: label,
      acquisition,
      shape,
      spacing,
      nifti,
      subject: `dicom-${String(i + 1).padStart(2, "0")}`,
      imageName: guessImageName(label, acquisition),
      label: "",
      split: "train",
    };
  });
}

function describe(a: Acquisition): string {
  const parts: string[] = [];
  if (a.MagneticFieldStrength !== undefined) parts.push(`${a.MagneticFieldStrength} T`);
  if (a.MRAcquisitionType !== undefined) parts.push(String(a.MRAcquisitionType));
  if (typeof a.RepetitionTime === "number") parts.push(`TR ${Math.round(a.RepetitionTime * 1000)} ms`);
  if (typeof a.EchoTime === "number") parts.push(`TE ${(a.EchoTime * 1000).toFixed(1)} ms`);
  if (typeof a.InversionTime === "number") parts.push(`TI ${Math.round(a.InversionTime * 1000)} ms`);
  return parts.join(", ");
}

export function DicomImport({
  disabled,
  dropped,
  onReady,
}: {
  disabled: boolean;
  /** DICOM files dropped on the bulk upload, to convert here. */
  dropped: { files: PickedFile[]; stamp: number } | null;
  /** The NIfTI files and manifest to upload. */
  onReady: (files: PickedFile[]) => void;
}) {
  const [state, setState] = useState<"idle" | "converting" | "converted" | "failed">("idle");
  const [message, setMessage] = useState<string | null>(null);
  const [series, setSeries] = useState<Series[]>([]);
  const input = useRef<HTMLInputElement>(null);

  const convert = async (files: PickedFile[]) => {
    if (files.length === 0) return;
    setState("converting");
    setSeries([]);
    setMessage(`Converting ${files.length} DICOM file${files.length === 1 ? "" : "s"} in this browser…`);
    try {
      const converted = toSeries(await convertDicom(files), Date.now());
      setSeries(converted);
      setState(converted.length ? "converted" : "failed");
      setMessage(converted.length ? null : "dcm2niix found no image series in these files.");
    } catch (reason) {
      setState("failed");
      setMessage(`The conversion failed: ${errorMessage(reason)}`);
    }
  };

  useEffect(() => {
    if (dropped) void convert(dropped.files);
  }, [dropped]);

  const patch = (key: string, change: Partial<Series>) =>
    setSeries((all) => all.map((s) => (s.key === key ? { ...s, ...change } : s)));
  const chosen = series.filter((s) => s.include);
  const problems = rowProblems(chosen);

  const send = async () => {
    const files: PickedFile[] = [];
    for (const s of chosen) {
      const bytes = await gzipBytes(s.nifti);
      files.push(fromFile(new File([bytes], uploadName(s), { type: "application/gzip" })));
    }
    const manifest = new File([dicomManifest(chosen)], "manifest.csv", { type: "text/csv" });
    files.unshift(fromFile(manifest));
    setSeries([]);
    setState("idle");
    onReady(files);
  };

  return (
    <section className="dicom-import" aria-label="DICOM import" data-dicom-state={state}>
      <h3>DICOM import</h3>
      <p className="muted small">
        A DICOM folder is converted to NIfTI here, in your browser (dcm2niix in WebAssembly). Only the NIfTI image
        goes to the server, with its header&apos;s text cleared: no DICOM file and no DICOM header (patient name, ID,
        dates, institution) leaves this computer.
      </p>
      <div className="form-row">
        <button type="button" disabled={disabled || state === "converting"} onClick={() => input.current?.click()}>
          Convert a DICOM folder…
        </button>
      </div>
      <input
        ref={input}
        type="file"
        name="dicom_folder"
        multiple
        hidden
        {...{ webkitdirectory: "", directory: "" }}
        onChange={(e) => {
          const picked = Array.from(e.target.files ?? []).map(fromFile);
          e.target.value = "";
          void convert(picked);
        }}
      />
      {message ? <p className={`small ${state === "failed" ? "error" : "muted"} dicom-message`}>{message}</p> : null}
      {series.length > 0 ? (
        <>
          <table className="dicom-series">
            <thead>
              <tr>
                <th>Send</th>
                <th>Series (read here, not sent)</th>
                <th>Volume</th>
                <th>Image</th>
                <th>Subject</th>
                <th>Label</th>
                <th>Split</th>
              </tr>
            </thead>
            <tbody>
              {series.map((s) => (
                <tr key={s.key} data-series={s.key} data-modality={s.info.modality} data-image-name={s.imageName}>
                  <td>
                    <input
                      type="checkbox"
                      checked={s.include}
                      aria-label={`Send series ${s.info.description || s.key}`}
                      onChange={(e) => patch(s.key, { include: e.target.checked })}
                    />
                  </td>
                  <td>
                    <div className="series-description">{s.info.description || "(no description)"}</div>
                    <div className="muted small series-acquisition">
                      {[s.info.modality, describe(s.acquisition)].filter(Boolean).join(" · ")}
                    </div>
                  </td>
                  <td className="small series-shape">
                    {s.shape.join(" × ")} voxels, {s.spacing.slice(0, 3).map((v) => v.toFixed(2)).join(" × ")} mm
                  </td>
                  <td>
                    <select
                      aria-label="Image name"
                      value={s.imageName}
                      onChange={(e) => patch(s.key, { imageName: e.target.value })}
                    >
                      {IMAGE_NAMES.map((n) => (
                        <option key={n} value={n}>
                          {n}
                        </option>
                      ))}
                    </select>
                  </td>
                  <td>
                    <input
                      aria-label="Subject key"
                      value={s.subject}
                      size={12}
                      onChange={(e) => patch(s.key, { subject: e.target.value.trim() })}
                    />
                  </td>
                  <td>
                    <select aria-label="Label" value={s.label} onChange={(e) => patch(s.key, { label: e.target.value })}>
                      <option value="">choose…</option>
                      <option value="0">healthy (0)</option>
                      <option value="1">pathological (1)</option>
                    </select>
                  </td>
                  <td>
                    <select aria-label="Split" value={s.split} onChange={(e) => patch(s.key, { split: e.target.value })}>
                      {SPLITS.map((n) => (
                        <option key={n} value={n}>
                          {n}
                        </option>
                      ))}
                    </select>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {problems.length ? <p className="muted small dicom-problems">{problems.join("; ")}</p> : null}
          <button type="button" disabled={disabled || problems.length > 0} onClick={() => void send()}>
            Upload {chosen.length} converted image{chosen.length === 1 ? "" : "s"}
          </button>
        </>
      ) : null}
    </section>
  );
}

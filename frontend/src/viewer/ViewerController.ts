// Owns one Niivue instance outside React: creates its canvas, loads the MR volume, the signed
// relevance overlay and the lesion outline, applies display settings, and releases the WebGL
// context on dispose. React reads it through subscribe/getSnapshot (useSyncExternalStore).
import { Niivue, SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
import type { MapStats } from "../api/types";
import {
  DEFAULT_OVERLAY_OPACITY,
  agreementVolumeOptions,
  LESION_VALUE,
  type RelevanceThresholds,
  type SignWindow,
  baseVolumeOptions,
  clampWindow,
  defaultThresholds,
  lesionVolumeOptions,
  peaksFromStats,
  relevanceColormaps,
  relevanceVolumeOptions,
  stepWindow,
  toCalibration,
  withHiddenSigns,
} from "./overlay";
import { type ColourScaleId, allColormaps, storeColourScale, storedColourScale } from "./colourScales";
import table from "./viewerColours.json";
import { type KeyLike, THRESHOLD_STEP_FRACTION, type ViewMode, type ViewerAction, shortcutFor } from "./shortcuts";
import { formatLocation } from "./location";
import {
  type Dims3,
  type Voxel,
  argMax,
  cropToBox,
  indexToVoxel,
  largestRegionCentre,
  nonZeroBox,
  outerRing,
} from "./volumeMath";

/** What the controller needs from a loaded NiiVue volume (NVImage). */
export interface VolumeLike {
  opacity: number;
  colormap?: string;
  colormapNegative?: string;
  cal_min?: number;
  cal_max?: number;
  cal_minNeg: number;
  cal_maxNeg: number;
  dimsRAS?: number[];
  /** Index of the volume that scales this one's colours (NiiVue's modulation), or null. */
  modulationImage?: number | null;
  /** 0: the modulation scales the colour; otherwise it replaces the alpha (not used here). */
  modulateAlpha?: number;
  hdr: {
    dims: number[];
    /** Voxel to mm, rows of four; NiiVue's calculateRAS() derives its placement from it. */
    affine?: number[][];
    datatypeCode?: number;
    numBitsPerVoxel?: number;
    scl_slope?: number;
    scl_inter?: number;
  } | null;
  /** Voxels in file order; the lesion outline replaces it before upload. */
  img?: ArrayLike<number> & { set(values: ArrayLike<number>): void };
  img2RAS(): ArrayLike<number>;
  /** Recomputes the volume's placement (RAS matrices, corners) from hdr.dims and hdr.affine. */
  calculateRAS?(): void;
  /** The smallest and largest value (scaled by scl_slope/scl_inter), set by NiiVue on load. */
  global_min?: number;
  global_max?: number;
}

/** The part of Niivue's API the controller uses; the real class satisfies it. */
export interface NiivueLike {
  volumes: VolumeLike[];
  scene: { crosshairPos: ArrayLike<number> };
  /** Niivue's options; the controller sets whether the multiplanar layout adds a 3D tile. */
  opts?: { multiplanarShowRender?: SHOW_RENDER };
  gl: WebGL2RenderingContext;
  onLocationChange: (location: unknown) => void;
  attachToCanvas(canvas: HTMLCanvasElement): Promise<unknown>;
  /** Registers a colormap by name (NiiVue keeps one table for all instances). */
  addColormap?(key: string, cmap: { R: number[]; G: number[]; B: number[]; A: number[]; I: number[] }): void;
  loadVolumes(list: object[]): Promise<unknown>;
  setSliceType(sliceType: SLICE_TYPE): unknown;
  updateGLVolume(): void;
  /**
   * Composites one layer into NiiVue's overlay texture over the layers below it (NiiVue's
   * refreshLayers, which updateGLVolume calls for every layer in turn).
   */
  refreshLayers?(volume: VolumeLike, layer: number): void;
  /** Sets a layer's texture filter; NiiVue calls it for layer 0 (the MR) and 1 (all overlays). */
  updateInterpolation?(layer: number, isForceLinear?: boolean): void;
  /** Creates an RGBA8 3D texture on a texture unit (NiiVue's layer compositing uses it). */
  rgbaTex?(texture: WebGLTexture | null, unit: number, dims: number[], isInit?: boolean): WebGLTexture | null;
  vox2frac(voxel: Voxel): ArrayLike<number>;
  createOnLocationChange(): void;
  drawScene(): unknown;
  cleanup(): void;
  /** Sends this instance's crosshair and 2D pan/zoom to the others after each of its draws. */
  // Typed `never[]` so that the real signature (Niivue | Niivue[]) satisfies it: the instances
  // passed are always the Niivue objects of other controllers.
  broadcastTo?(others: never[], syncOpts: { "2d": boolean; "3d": boolean }): void;
  // Drawing (review corrections); optional so that viewers without drawing need not fake them.
  drawBitmap?: Uint8Array | null;
  setDrawingEnabled?(enabled: boolean): void;
  setPenValue?(value: number, isFilledPen?: boolean): void;
  setDrawOpacity?(opacity: number): void;
  setDrawColormap?(name: string): void;
  createEmptyDrawing?(): void;
  loadDrawingFromUrl?(url: string, isBinarize?: boolean): Promise<boolean>;
  drawUndo?(): void;
  saveImage?(options: { filename: string; isSaveDrawing: boolean; volumeByIndex: number }): Promise<boolean | Uint8Array>;
}

export type NiivueFactory = () => NiivueLike;

/** The viewer's defaults: dark clinical background, neutral crosshair, no in-canvas colorbar. */
export const NIIVUE_OPTIONS = {
  backColor: table.backColor,
  // Not red, green or blue, so it is never mistaken for relevance or the lesion outline.
  crosshairColor: table.crosshairColor,
  // One voxel of a coarse grid would hide the anatomy under the crosshair.
  crosshairWidth: 1,
  crosshairWidthUnit: "mm" as const,
  show3Dcrosshair: false,
  // The colorbar is drawn in HTML beside the canvas with the thresholds as labels.
  isColorbar: false,
  // The plain multiplanar view shows three slices; "Multiplanar + 3D" turns the render tile on.
  multiplanarShowRender: SHOW_RENDER.NEVER,
  // The viewer's own shortcuts (shortcuts.ts) replace NiiVue's canvas hot keys (v, c, p).
  viewModeHotKey: "",
  clipPlaneHotKey: "",
  cycleClipPlaneHotKey: "",
  isResizeCanvas: true,
  dragAndDropEnabled: false,
  logLevel: "error" as const,
  loadingText: "Loading...", // NiiVue's font has no ellipsis glyph
};

const defaultFactory: NiivueFactory = () => new Niivue(NIIVUE_OPTIONS);

export type ViewerPhase = "idle" | "loading" | "ready" | "error";

/** The settings configure() applies together; absent ones stay as they are. */
export interface DisplaySettings {
  showRelevance?: boolean;
  showPositive?: boolean;
  showNegative?: boolean;
  showLesion?: boolean;
  opacity?: number;
  colourScale?: ColourScaleId;
  view?: ViewMode;
  thresholds?: { positive?: SignWindow | null; negative?: SignWindow | null };
}

export interface ViewerSource {
  imageUrl: string;
  /**
   * The signed attribution map on the image grid, with its stats for default thresholds; stats
   * null: the map's own range, read from the loaded volume (a channel's map of a multi-modal subject).
   */
  relevance?: { url: string; stats: Pick<MapStats, "min" | "max"> | null } | null;
  /** Lesion mask (non-zero = lesion); drawn as a green outline on top of the relevance. */
  lesionUrl?: string | null;
  /** Sign agreement of a stochastic map's samples ([0, 1], the map's grid): "Dim uncertain voxels". */
  agreementUrl?: string | null;
}

export interface ViewerSnapshot {
  phase: ViewerPhase;
  /**
   * The relevance overlay has been drawn. With a lesion outline, the outline follows in a
   * second step; phase turns "ready" when every layer is drawn.
   */
  relevanceDrawn: boolean;
  error: string | null;
  /** Problems that leave the viewer usable (e.g. an empty mask). */
  warnings: string[];
  hasRelevance: boolean;
  hasLesion: boolean;
  showRelevance: boolean;
  /** Each sign on its own (keys p and h); both also need showRelevance. */
  showPositive: boolean;
  showNegative: boolean;
  showLesion: boolean;
  /** Whether a sign-agreement volume was loaded with the map. */
  hasUncertainty: boolean;
  /** Relevance colours scaled by the sign agreement: voxels whose samples disagree fade. */
  dimUncertain: boolean;
  view: ViewMode;
  /** The keyboard help overlay ("?"). */
  helpOpen: boolean;
  opacity: number;
  /** The relevance colour scale (colourScales.ts). */
  colourScale: ColourScaleId;
  thresholds: RelevanceThresholds;
  peaks: { positive: number; negative: number };
  /** The crosshair position (mm) and the values under it. */
  location: string;
  /** The crosshair position in mm (scanner space), or null before the first location event. */
  crosshairMM: [number, number, number] | null;
}

export const INITIAL_SNAPSHOT: ViewerSnapshot = {
  phase: "idle",
  relevanceDrawn: false,
  error: null,
  warnings: [],
  hasRelevance: false,
  hasLesion: false,
  showRelevance: true,
  showPositive: true,
  showNegative: true,
  showLesion: true,
  hasUncertainty: false,
  dimUncertain: false,
  view: "multiplanar",
  helpOpen: false,
  opacity: DEFAULT_OVERLAY_OPACITY,
  colourScale: "statmap",
  thresholds: { positive: null, negative: null },
  peaks: { positive: 0, negative: 0 },
  location: "",
  crosshairMM: null,
};

const BASE_INDEX = 0;
/** NIfTI's datatype code of unsigned 8-bit voxels (the cropped lesion outline). */
const DT_UINT8 = 2;

/** NiiVue's slice type of each view; "multiplanar3d" is multiplanar with the render tile on. */
export const SLICE_TYPES: Record<ViewMode, SLICE_TYPE> = {
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  multiplanar: SLICE_TYPE.MULTIPLANAR,
  multiplanar3d: SLICE_TYPE.MULTIPLANAR,
  render: SLICE_TYPE.RENDER,
};

export class ViewerController {
  private readonly createNiivue: NiivueFactory;
  private nv: NiivueLike | null = null;
  private canvas: HTMLCanvasElement | null = null;
  private snapshot: ViewerSnapshot = INITIAL_SNAPSHOT;
  private readonly listeners = new Set<() => void>();
  private loadToken = 0;
  /** The NiiVue load in progress (never rejects): NiiVue cannot run two at once on one canvas. */
  private niivueLoad: Promise<void> = Promise.resolve();
  private disposed = false;
  private relevanceIndex = -1;
  private lesionIndex = -1;
  private agreementIndex = -1;
  /** The lesion mask in RAS voxel order, kept for "go to lesion". */
  private lesionRAS: ArrayLike<number> | null = null;

  constructor(createNiivue: NiivueFactory = defaultFactory, colourScale: ColourScaleId = storedColourScale()) {
    this.createNiivue = createNiivue;
    this.snapshot = { ...INITIAL_SNAPSHOT, colourScale };
  }

  // --- store interface for useSyncExternalStore -------------------------------------------

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): ViewerSnapshot => this.snapshot;

  private update(patch: Partial<ViewerSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const listener of this.listeners) listener();
  }

  // --- lifecycle --------------------------------------------------------------------------

  /** Creates the canvas inside `host`. A fresh canvas each time: a lost context cannot return. */
  mount(host: HTMLElement): void {
    if (this.disposed) throw new Error("ViewerController was disposed");
    if (this.canvas) return;
    const canvas = host.ownerDocument.createElement("canvas");
    canvas.className = "viewer-canvas";
    host.appendChild(canvas);
    this.canvas = canvas;
  }

  /** Loads the MR volume, then the relevance overlay and lesion outline when given. */
  async load(source: ViewerSource): Promise<void> {
    if (!this.canvas) throw new Error("mount() the controller before load()");
    const token = ++this.loadToken;
    const stale = () => this.disposed || token !== this.loadToken;
    const stats = source.relevance?.stats ?? null;
    const thresholds = stats ? defaultThresholds(stats) : INITIAL_SNAPSHOT.thresholds;
    this.update({
      phase: "loading",
      relevanceDrawn: false,
      error: null,
      warnings: [],
      hasRelevance: Boolean(source.relevance),
      hasLesion: false,
      hasUncertainty: false,
      thresholds,
      peaks: stats ? peaksFromStats(stats) : INITIAL_SNAPSHOT.peaks,
    });
    try {
      const nv = await this.niivue();
      if (stale()) return;
      // A second loadVolumes while one runs (the epoch slider moved quickly, a new map chosen)
      // mixes their volume lists inside NiiVue ("Cannot read properties of undefined"): wait
      // for the load in progress, then load only if this source is still the latest.
      await this.niivueLoad;
      if (stale()) return;
      const volumes: object[] = [baseVolumeOptions(source.imageUrl)];
      this.relevanceIndex = -1;
      this.lesionIndex = -1;
      this.agreementIndex = -1;
      this.lesionRAS = null;
      if (source.relevance) {
        this.relevanceIndex = volumes.length;
        volumes.push(
          relevanceVolumeOptions(source.relevance.url, thresholds, this.snapshot.opacity, this.snapshot.colourScale),
        );
      }
      if (source.lesionUrl) {
        this.lesionIndex = volumes.length;
        volumes.push(lesionVolumeOptions(source.lesionUrl));
      }
      if (source.relevance && source.agreementUrl) {
        this.agreementIndex = volumes.length;
        volumes.push(agreementVolumeOptions(source.agreementUrl));
      }
      const loading = loadWithoutUploads(nv, volumes);
      let loaded!: () => void;
      // Includes drawing the outline, so that the next load waits for it too.
      this.niivueLoad = new Promise((resolve) => (loaded = resolve));
      try {
        await loading;
        if (stale()) return;
        await this.drawLayers(nv, stats, stale);
      } finally {
        loaded();
      }
    } catch (error) {
      if (stale()) return;
      this.update({ phase: "error", error: describeLoadError(error) });
    }
  }

  /**
   * Draws the loaded volumes: the MR and the relevance overlay first, then the lesion outline.
   * Each overlay is a pass over the MR's whole grid; the outline's pass (NiiVue's refreshLayers
   * for its layer alone) comes after the relevance is on screen.
   */
  private async drawLayers(
    nv: NiivueLike,
    stats: Pick<MapStats, "min" | "max"> | null,
    stale: () => boolean,
  ): Promise<void> {
    const overlay = this.volume(this.relevanceIndex);
    if (overlay && !stats) {
      // The same rules as for stored stats, from the volume's own range.
      const own = { min: Math.min(overlay.global_min ?? 0, 0), max: Math.max(overlay.global_max ?? 0, 0) };
      this.update({ thresholds: defaultThresholds(own), peaks: peaksFromStats(own) });
    }
    this.applyView();
    const warnings: string[] = [];
    const lesionFound = this.lesionIndex >= 0 && this.prepareLesionOutline();
    if (this.lesionIndex >= 0 && !lesionFound) warnings.push("The lesion mask is empty.");
    // The outline is drawn in a second step only after a relevance overlay, as layer 2 or
    // above: NiiVue skips such a layer while it is transparent (layer 1 is always drawn).
    const outlineLater = lesionFound && overlay !== undefined && this.snapshot.showLesion && this.lesionIndex > 1;
    this.update({ hasLesion: lesionFound && !outlineLater, warnings, hasUncertainty: this.agreementIndex >= 0 });
    this.applyRelevanceDisplay();
    this.applyLesionDisplay();
    this.refresh();
    this.focusInitial();
    nv.drawScene();
    if (!outlineLater) {
      this.update({ phase: "ready", relevanceDrawn: overlay !== undefined });
      return;
    }
    this.update({ relevanceDrawn: true });
    // Two frames: the relevance is presented before the outline's pass holds the page.
    await nextFrame();
    await nextFrame();
    if (stale()) return;
    this.update({ hasLesion: true });
    this.applyLesionDisplay();
    const lesion = this.volume(this.lesionIndex);
    if (lesion && lesion.opacity > 0) {
      if (nv.refreshLayers) {
        nv.refreshLayers(lesion, this.lesionIndex);
        nv.drawScene();
      } else {
        this.refresh();
      }
    }
    this.update({ phase: "ready" });
  }

  /** Releases the WebGL context and removes the canvas; the controller cannot be reused. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const nv = this.nv;
    this.nv = null;
    if (nv) {
      nv.cleanup();
      try {
        nv.gl.getExtension("WEBGL_lose_context")?.loseContext();
      } catch {
        // The context was never created or is already gone.
      }
    }
    this.canvas?.remove();
    this.canvas = null;
    this.listeners.clear();
  }

  // --- display settings -------------------------------------------------------------------

  setRelevanceVisible(visible: boolean): void {
    this.update({ showRelevance: visible });
    this.applyRelevanceDisplay();
    this.refresh();
  }

  /** Fades relevance where the samples of a stochastic map disagree on its sign. */
  setDimUncertain(dim: boolean): void {
    this.update({ dimUncertain: dim });
    this.applyRelevanceDisplay();
    this.refresh();
  }

  setLesionVisible(visible: boolean): void {
    this.update({ showLesion: visible });
    this.applyLesionDisplay();
    this.refresh();
  }

  setOpacity(opacity: number): void {
    this.update({ opacity: Math.min(Math.max(opacity, 0), 1) });
    this.applyRelevanceDisplay();
    this.refresh();
  }

  /** Switches the relevance colour scale (remembered in this browser). */
  setColourScale(scale: ColourScaleId): void {
    if (scale === this.snapshot.colourScale) return;
    this.update({ colourScale: scale });
    storeColourScale(scale);
    this.applyRelevanceDisplay();
    this.refresh();
  }

  /** Shows one sign of the relevance or hides it (the other sign stays as it is). */
  setSignVisible(sign: "positive" | "negative", visible: boolean): void {
    this.update(sign === "positive" ? { showPositive: visible } : { showNegative: visible });
    this.applyRelevanceDisplay();
    this.refresh();
  }

  /** Axial, coronal, sagittal, multiplanar (with or without a 3D tile) or the 3D render alone. */
  setView(view: ViewMode): void {
    this.update({ view });
    this.applyView();
    this.nv?.drawScene();
  }

  /** Moves a sign's threshold up (1) or down (-1) by a twentieth of its peak. */
  stepThreshold(sign: "positive" | "negative", direction: 1 | -1): void {
    const window = this.snapshot.thresholds[sign];
    if (!window) return;
    this.setWindow(sign, stepWindow(window, this.snapshot.peaks[sign], direction, THRESHOLD_STEP_FRACTION));
  }

  setHelpOpen(open: boolean): void {
    if (open !== this.snapshot.helpOpen) this.update({ helpOpen: open });
  }

  /**
   * Applies the keyboard shortcut of a key press (shortcuts.ts); true when the key was one.
   * Layer and threshold keys do nothing before the volumes are loaded, help works always.
   */
  handleKey(event: KeyLike): boolean {
    const action = shortcutFor(event);
    if (!action) return false;
    if (action.kind === "help") {
      if (action.open === false && !this.snapshot.helpOpen) return false; // Escape, nothing open
      this.setHelpOpen(action.open === "toggle" ? !this.snapshot.helpOpen : action.open);
      return true;
    }
    if (this.snapshot.phase !== "ready") return false;
    this.apply(action);
    return true;
  }

  /** Performs one shortcut action. */
  apply(action: ViewerAction): void {
    const s = this.snapshot;
    switch (action.kind) {
      case "view":
        this.setView(action.view);
        break;
      case "toggle":
        if (action.layer === "lesion") this.setLesionVisible(!s.showLesion);
        else if (action.layer === "relevance") this.setRelevanceVisible(!s.showRelevance);
        else if (action.layer === "positive") this.setSignVisible("positive", !s.showPositive);
        else this.setSignVisible("negative", !s.showNegative);
        break;
      case "threshold":
        if (action.sign !== "negative") this.stepThreshold("positive", action.direction);
        if (action.sign !== "positive") this.stepThreshold("negative", action.direction);
        break;
      case "focus":
        if (action.target === "lesion") this.focusLesion();
        else this.focusPeak();
        break;
      case "help":
        this.setHelpOpen(action.open === "toggle" ? !s.helpOpen : action.open);
        break;
    }
  }

  /**
   * Several display settings at once, with one upload to the GPU (the compare page drives all
   * its panels from one set of controls). A window is set only for a sign the map has.
   */
  configure(settings: DisplaySettings): void {
    const { thresholds: windows, ...flags } = settings;
    const current = this.snapshot.thresholds;
    const thresholds: RelevanceThresholds = {
      positive: current.positive && windows?.positive ? clampWindow(windows.positive) : current.positive,
      negative: current.negative && windows?.negative ? clampWindow(windows.negative) : current.negative,
    };
    const opacity = flags.opacity === undefined ? this.snapshot.opacity : Math.min(Math.max(flags.opacity, 0), 1);
    const view = flags.view ?? this.snapshot.view;
    const viewChanged = view !== this.snapshot.view;
    this.update({ ...flags, opacity, thresholds });
    this.applyRelevanceDisplay();
    this.applyLesionDisplay();
    if (viewChanged) this.applyView();
    this.refresh();
  }

  /** Sets the display window of one sign (magnitudes; the negative side is mirrored). */
  setWindow(sign: "positive" | "negative", window: SignWindow): void {
    if (!this.snapshot.thresholds[sign]) return;
    this.update({ thresholds: { ...this.snapshot.thresholds, [sign]: clampWindow(window) } });
    this.applyRelevanceDisplay();
    this.refresh();
  }

  /** Moves the crosshair into the largest lesion; false without a lesion. */
  focusLesion(): boolean {
    const dims = this.rasDims();
    if (!this.lesionRAS || !dims) return false;
    const centre = largestRegionCentre(this.lesionRAS, dims);
    return centre ? this.moveCrosshair(centre) : false;
  }

  /** Moves the crosshair to the strongest positive (pathological) relevance. */
  focusPeak(): boolean {
    const overlay = this.volume(this.relevanceIndex);
    const dims = this.rasDims();
    if (!overlay || !dims) return false;
    const index = argMax(overlay.img2RAS());
    return index >= 0 ? this.moveCrosshair(indexToVoxel(index, dims)) : false;
  }

  /**
   * Links this view to others: its crosshair and 2D pan/zoom follow to them whenever it is
   * drawn with focus (NiiVue's broadcastTo). Call it on every view of a group, after loading.
   */
  broadcastTo(others: readonly ViewerController[]): void {
    const targets = others
      .filter((o) => o !== this)
      .map((o) => o.nv)
      .filter((nv): nv is NiivueLike => nv !== null);
    this.nv?.broadcastTo?.(targets as never[], { "2d": true, "3d": true });
  }

  // --- drawing (review corrections) -------------------------------------------------------

  /**
   * Drawing on the background's grid: `penValue` null turns drawing off (navigation), 0 erases,
   * other values paint that label. `colormap` is a NiiVue label colormap for the drawing layer.
   */
  setDrawing(penValue: number | null, colormap?: object): void {
    const nv = this.nv;
    if (!nv?.setDrawingEnabled) return;
    if (penValue === null) {
      nv.setDrawingEnabled(false);
      return;
    }
    const fresh = !nv.drawBitmap;
    nv.setDrawingEnabled(true);
    if (fresh && colormap) {
      try {
        nv.setDrawColormap?.(colormap as unknown as string); // NiiVue accepts a ColorMap object
      } catch {
        // keep NiiVue's default drawing colours
      }
    }
    nv.setDrawOpacity?.(0.8);
    nv.setPenValue?.(penValue, false);
  }

  /**
   * Loads a stored drawing (a review's correction) into the drawing layer, in `colormap`;
   * false when it could not be read.
   */
  async loadDrawing(url: string, colormap?: object): Promise<boolean> {
    const nv = this.nv;
    if (!nv?.loadDrawingFromUrl) return false;
    const ok = await nv.loadDrawingFromUrl(url);
    if (ok && colormap) {
      try {
        nv.setDrawColormap?.(colormap as unknown as string);
      } catch {
        // keep NiiVue's default drawing colours
      }
    }
    nv.setDrawingEnabled?.(false);
    nv.drawScene();
    return ok;
  }

  undoDrawing(): void {
    this.nv?.drawUndo?.();
  }

  clearDrawing(): void {
    this.nv?.createEmptyDrawing?.();
    this.nv?.drawScene();
  }

  /** The drawing bitmap (RAS order) or null before anything was drawn. */
  drawingBitmap(): Uint8Array | null {
    return this.nv?.drawBitmap ?? null;
  }

  /** The drawing as an uncompressed NIfTI on the background's grid and affine (native order). */
  async exportDrawing(): Promise<Uint8Array | null> {
    const nv = this.nv;
    if (!nv?.saveImage || !nv.drawBitmap) return null;
    const out = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
    return out instanceof Uint8Array ? out : null;
  }

  // --- internals --------------------------------------------------------------------------

  private async niivue(): Promise<NiivueLike> {
    if (this.nv) return this.nv;
    const nv = this.createNiivue();
    for (const [name, cmap] of allColormaps()) nv.addColormap?.(name, cmap);
    nearestOverlays(nv);
    nearestBlendTexture(nv);
    nv.onLocationChange = (location) =>
      this.update({ location: formatLocation(location), crosshairMM: locationMM(location) });
    this.nv = nv;
    await nv.attachToCanvas(this.canvas as HTMLCanvasElement);
    return nv;
  }

  private volume(index: number): VolumeLike | undefined {
    return index >= 0 ? this.nv?.volumes[index] : undefined;
  }

  private applyRelevanceDisplay(): void {
    const overlay = this.volume(this.relevanceIndex);
    if (!overlay) return;
    // loadVolumes() ignores cal_minNeg/cal_maxNeg: set all four on the volume, then upload.
    const { thresholds, showPositive, showNegative, peaks } = this.snapshot;
    Object.assign(
      overlay,
      withHiddenSigns(toCalibration(thresholds), { positive: showPositive, negative: showNegative }, peaks),
    );
    overlay.opacity = this.snapshot.showRelevance ? this.snapshot.opacity : 0;
    // NiiVue's modulation (setModulationImage without its immediate upload): the colour of each
    // voxel is multiplied by the agreement volume's calibrated value; refresh() uploads it.
    const dim = this.snapshot.dimUncertain && this.agreementIndex >= 0;
    overlay.modulationImage = dim ? this.agreementIndex : null;
    overlay.modulateAlpha = 0;
    const { colormap, colormapNegative } = relevanceColormaps(this.snapshot.colourScale);
    if (overlay.colormap !== colormap) overlay.colormap = colormap;
    if (overlay.colormapNegative !== colormapNegative) overlay.colormapNegative = colormapNegative;
  }

  private applyLesionDisplay(): void {
    const lesion = this.volume(this.lesionIndex);
    if (!lesion) return;
    lesion.opacity = this.snapshot.hasLesion && this.snapshot.showLesion ? 1 : 0;
  }

  private applyView(): void {
    const nv = this.nv;
    if (!nv) return;
    if (nv.opts) {
      nv.opts.multiplanarShowRender = this.snapshot.view === "multiplanar3d" ? SHOW_RENDER.ALWAYS : SHOW_RENDER.NEVER;
    }
    nv.setSliceType(SLICE_TYPES[this.snapshot.view]);
  }

  /** Uploads changed volume settings to the GPU and redraws. */
  private refresh(): void {
    this.nv?.updateGLVolume();
  }

  /**
   * Replaces the loaded mask by its outer ring, cropped to the ring's bounding box; false when
   * the mask is empty. NiiVue composites every overlay voxel by voxel of the MR's grid, but
   * skips the overlay's texture and colour lookups where the overlay's own grid does not reach,
   * and uploads only the box (the lesion copy of docs/benchmarks.md, "viewer", measures it).
   */
  private prepareLesionOutline(): boolean {
    const lesion = this.volume(this.lesionIndex);
    const hdr = lesion?.hdr;
    if (!lesion?.img || !hdr || hdr.dims.length < 4) return false;
    const dims: Dims3 = [hdr.dims[1], hdr.dims[2], hdr.dims[3]];
    // A copy: img2RAS() may hand back `img` itself, which the ring replaces below.
    const ras = lesion.img2RAS();
    const lesionRAS = new Uint8Array(ras.length);
    for (let i = 0; i < ras.length; i++) lesionRAS[i] = ras[i] !== 0 ? 1 : 0;
    this.lesionRAS = lesionRAS;
    const ring = outerRing(lesion.img, dims, LESION_VALUE);
    const box = nonZeroBox(ring, dims);
    if (!box) return false;
    const { cal_min, cal_max } = lesionVolumeOptions("");
    Object.assign(lesion, { cal_min, cal_max });
    const affine = hdr.affine;
    if (!affine || affine.length < 3 || !lesion.calculateRAS) {
      lesion.img.set(ring); // a volume without an affine to move keeps its whole grid
      return true;
    }
    // The box's first voxel becomes voxel (0, 0, 0): move the affine's origin there.
    for (let row = 0; row < 3; row++) {
      affine[row][3] += box.start.reduce((mm, voxel, axis) => mm + affine[row][axis] * voxel, 0);
    }
    for (let axis = 0; axis < 3; axis++) hdr.dims[axis + 1] = box.end[axis] - box.start[axis];
    Object.assign(hdr, { datatypeCode: DT_UINT8, numBitsPerVoxel: 8, scl_slope: 1, scl_inter: 0 });
    lesion.img = cropToBox(ring, dims, box);
    lesion.calculateRAS();
    return true;
  }

  private focusInitial(): void {
    if (this.focusLesion()) return;
    if (this.snapshot.peaks.positive > 0) this.focusPeak();
  }

  private rasDims(): Dims3 | null {
    const dims = this.nv?.volumes[BASE_INDEX]?.dimsRAS;
    return dims && dims.length >= 4 ? [dims[1], dims[2], dims[3]] : null;
  }

  private moveCrosshair(voxel: Voxel): boolean {
    const nv = this.nv;
    if (!nv) return false;
    nv.scene.crosshairPos = nv.vox2frac(voxel);
    nv.createOnLocationChange();
    nv.drawScene();
    return true;
  }
}

/**
 * Loads the volumes with NiiVue's GPU upload held back. NiiVue 0.69 re-uploads every layer
 * each time it adds a volume (updateGLVolume in setVolume): three volumes cost six layer
 * uploads, then the display settings a seventh to ninth. Held back, the controller sets the
 * calibration and the lesion outline first and uploads all layers once (refresh()); after a
 * relevance overlay, the outline's layer follows on its own (drawLayers). On a 1 mm
 * MNI-sized volume in software WebGL each layer upload takes seconds (docs/benchmarks.md).
 */
export async function loadWithoutUploads(nv: NiivueLike, volumes: object[]): Promise<void> {
  const own = Object.prototype.hasOwnProperty.call(nv, "updateGLVolume");
  const update = nv.updateGLVolume;
  nv.updateGLVolume = () => undefined;
  try {
    await nv.loadVolumes(volumes);
  } finally {
    if (own) nv.updateGLVolume = update;
    else delete (nv as { updateGLVolume?: unknown }).updateGLVolume;
  }
}

/**
 * Draws the overlays (relevance, lesion outline) voxel by voxel in the 2D slices while the MR
 * stays smoothly interpolated, as FSLeyes and nilearn's plot_stat_map show a stat map. NiiVue
 * interpolates its composited overlay texture without premultiplied alpha, so where a red voxel
 * meets a blue one or a transparent one it invents purple or dark rims that are in no map.
 * The 3D render asks for linear filtering explicitly (isForceLinear) and keeps it.
 */
export function nearestOverlays(nv: NiivueLike): void {
  const original = nv.updateInterpolation?.bind(nv);
  if (!original) return;
  nv.updateInterpolation = (layer: number, isForceLinear = false) => {
    original(layer, isForceLinear);
    const gl = nv.gl;
    if (layer === 0 || isForceLinear || !gl) return;
    gl.activeTexture(gl.TEXTURE2); // NiiVue's overlay unit (TEXTURE2_OVERLAY_VOL)
    gl.texParameteri(gl.TEXTURE_3D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_3D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
  };
}

/** NiiVue's texture unit of the copy of the overlays composited so far (TEXTURE10_BLEND). */
const BLEND_TEXTURE_UNIT_OFFSET = 10;

/**
 * Reads NiiVue's blend texture texel by texel instead of interpolating it. NiiVue composites
 * each overlay after the first over a copy of the ones before (the blend texture), read at
 * texel centres only, where linear and nearest filtering give the same colour; a linear 3D
 * fetch reads eight texels where nearest reads one, on every voxel of the MR's grid.
 */
export function nearestBlendTexture(nv: NiivueLike): void {
  const original = nv.rgbaTex?.bind(nv);
  if (!original) return;
  nv.rgbaTex = (texture, unit, dims, isInit = false) => {
    const created = original(texture, unit, dims, isInit);
    const gl = nv.gl;
    if (gl && unit === gl.TEXTURE0 + BLEND_TEXTURE_UNIT_OFFSET) {
      // rgbaTex leaves the new texture bound on `unit`.
      gl.texParameteri(gl.TEXTURE_3D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_3D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    }
    return created;
  };
}

/** The mm triple of a NiiVue location event, or null. */
export function locationMM(location: unknown): [number, number, number] | null {
  const mm = (location as { mm?: ArrayLike<number> } | null)?.mm;
  if (!mm || mm.length < 3) return null;
  const triple: [number, number, number] = [Number(mm[0]), Number(mm[1]), Number(mm[2])];
  return triple.every(Number.isFinite) ? triple : null;
}

/** Resolves after the next animation frame (a macrotask where there are no frames). */
function nextFrame(): Promise<void> {
  return new Promise((resolve) => {
    if (typeof requestAnimationFrame === "function") requestAnimationFrame(() => setTimeout(resolve, 0));
    else setTimeout(resolve, 0);
  });
}

function describeLoadError(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text ? `Could not load the volumes: ${text}` : "Could not load the volumes.";
}

// @vitest-environment jsdom
import { SHOW_RENDER, SLICE_TYPE } from "@niivue/niivue";
import { describe, expect, it, vi } from "vitest";
import { type NiivueLike, type VolumeLike, ViewerController, loadWithoutUploads } from "./ViewerController";

// 4×4×4 volumes whose file order is already RAS, as NiiVue reports for an identity affine.
const DIMS = [3, 4, 4, 4];
const at = (x: number, y: number, z: number) => x + 4 * y + 16 * z;

function fakeVolume(data: Float32Array | Uint8Array): VolumeLike {
  return {
    opacity: 1,
    cal_min: 0,
    cal_max: 0,
    cal_minNeg: Number.NaN,
    cal_maxNeg: Number.NaN,
    dimsRAS: DIMS,
    hdr: { dims: DIMS },
    img: data,
    img2RAS: () => data.slice(),
  };
}

function volumeFor(url: string, emptyMask: boolean): VolumeLike {
  if (url.includes("mask")) {
    const mask = new Uint8Array(64);
    if (!emptyMask) mask[at(2, 1, 1)] = 2;
    return fakeVolume(mask);
  }
  const data = new Float32Array(64);
  if (url.includes("map")) {
    data[at(1, 2, 3)] = 4; // the positive peak
    data[at(0, 0, 0)] = -2;
  }
  return fakeVolume(data);
}

/** Records what the controller asks of NiiVue; loadVolumes ignores cal_minNeg like 0.69 does. */
function fakeNiivue(options: { emptyMask?: boolean; failLoad?: boolean } = {}) {
  const loseContext = vi.fn();
  const nv = {
    volumes: [] as VolumeLike[],
    scene: { crosshairPos: [0.5, 0.5, 0.5] as ArrayLike<number> },
    opts: { multiplanarShowRender: SHOW_RENDER.NEVER as SHOW_RENDER },
    gl: { getExtension: vi.fn(() => ({ loseContext })) } as unknown as WebGL2RenderingContext,
    onLocationChange: (() => undefined) as (location: unknown) => void,
    attachToCanvas: vi.fn(async () => undefined),
    loadVolumes: vi.fn(async (list: object[]) => {
      if (options.failLoad) throw new Error("Not Found");
      nv.volumes = list.map((item) => {
        const { url, cal_min, cal_max, opacity } = item as {
          url: string;
          cal_min?: number;
          cal_max?: number;
          opacity: number;
        };
        return { ...volumeFor(url, options.emptyMask ?? false), opacity, cal_min, cal_max };
      });
    }),
    setSliceType: vi.fn(),
    updateGLVolume: vi.fn(),
    refreshLayers: vi.fn(),
    vox2frac: vi.fn((v: number[]) => v.map((c, i) => (c + 0.5) / DIMS[i + 1])),
    createOnLocationChange: vi.fn(),
    drawScene: vi.fn(),
    cleanup: vi.fn(),
  };
  return { nv, loseContext };
}

function mounted(nv: NiivueLike) {
  const host = document.createElement("div");
  document.body.appendChild(host);
  const controller = new ViewerController(() => nv);
  controller.mount(host);
  return { controller, host };
}

const SOURCE = {
  imageUrl: "/api/v1/subjects/1/image.nii.gz",
  relevance: { url: "/api/v1/attributions/7/map.nii.gz", stats: { min: -2, max: 4 } },
  lesionUrl: "/api/v1/subjects/1/mask.nii.gz?drawing=true",
};

describe("ViewerController", () => {
  it("never runs two NiiVue loads at once: a new load waits for the one in progress", async () => {
    const { nv } = fakeNiivue();
    let running = 0;
    let overlapped = false;
    const plain = nv.loadVolumes.getMockImplementation()!;
    nv.loadVolumes.mockImplementation(async (list: object[]) => {
      running += 1;
      overlapped ||= running > 1;
      await new Promise((resolve) => setTimeout(resolve, 5));
      await plain(list);
      running -= 1;
    });
    const { controller } = mounted(nv);
    const first = controller.load(SOURCE);
    await new Promise((resolve) => setTimeout(resolve, 1)); // the first load is inside NiiVue
    const second = controller.load({ ...SOURCE, lesionUrl: undefined });
    await Promise.all([first, second]);
    expect(overlapped).toBe(false);
    expect(controller.getSnapshot().phase).toBe("ready");
    expect(nv.volumes).toHaveLength(2); // the second (latest) source is what is shown
  });

  it("thresholds a map without stats (a channel's map) by its own range, with the same rules", async () => {
    const { nv } = fakeNiivue();
    const plain = nv.loadVolumes.getMockImplementation()!;
    nv.loadVolumes.mockImplementation(async (list: object[]) => {
      await plain(list);
      Object.assign(nv.volumes[1], { global_min: -1, global_max: 8 });
    });
    const { controller } = mounted(nv);
    await controller.load({ imageUrl: SOURCE.imageUrl, relevance: { url: "/api/v1/attributions/7/channels/1.nii.gz", stats: null } });
    const snap = controller.getSnapshot();
    expect(snap.phase).toBe("ready");
    expect(snap.peaks).toEqual({ positive: 8, negative: 1 });
    expect(snap.thresholds.positive?.max).toBe(8);
    expect(snap.thresholds.negative?.max).toBe(1);
    const overlay = nv.volumes[1];
    expect(overlay.cal_max).toBe(8);
    expect(overlay.cal_maxNeg).toBe(-1);
    expect(overlay.cal_min).toBeCloseTo(8 * 0.15);
  });

  it("loads base, one signed overlay and the lesion on top, then sets the negative window", async () => {
    const { nv } = fakeNiivue();
    const { controller, host } = mounted(nv);
    const seen: string[] = [];
    const lesionOpacityAt = { upload: -1, outline: -1 };
    nv.updateGLVolume.mockImplementation(() => (lesionOpacityAt.upload = nv.volumes[2].opacity));
    nv.refreshLayers.mockImplementation(() => (lesionOpacityAt.outline = nv.volumes[2].opacity));
    let relevanceFirst = false;
    controller.subscribe(() => {
      const snap = controller.getSnapshot();
      seen.push(snap.phase);
      if (snap.relevanceDrawn && snap.phase === "loading") relevanceFirst = lesionOpacityAt.outline === -1;
    });
    await controller.load(SOURCE);
    // The relevance was reported drawn before the outline's pass.
    expect(relevanceFirst).toBe(true);
    expect(controller.getSnapshot().relevanceDrawn).toBe(true);

    expect(host.querySelector("canvas")).not.toBeNull();
    expect(nv.attachToCanvas).toHaveBeenCalledWith(host.querySelector("canvas"));
    const [list] = nv.loadVolumes.mock.calls[0] as unknown as [Record<string, unknown>[]];
    expect(list).toHaveLength(3);
    expect(list[0]).toMatchObject({ url: SOURCE.imageUrl, colormap: "gray" });
    expect(list[1]).toMatchObject({ url: SOURCE.relevance.url, colormap: "attrivue_red_yellow", colormapNegative: "attrivue_blue_lightblue" });
    expect(list[2]).toMatchObject({ url: SOURCE.lesionUrl, colormap: "attrivue_lesion_green", name: "lesion.nii.gz" });
    expect(nv.setSliceType).toHaveBeenCalledWith(SLICE_TYPE.MULTIPLANAR);

    const overlay = nv.volumes[1];
    expect(overlay.cal_min).toBeCloseTo(0.6);
    expect(overlay.cal_max).toBe(4);
    expect(overlay.cal_minNeg).toBeCloseTo(-0.3);
    expect(overlay.cal_maxNeg).toBe(-2);
    expect(overlay.opacity).toBeGreaterThan(0);
    // One upload of all layers, after the calibration and the outline were set; the outline
    // was transparent then (NiiVue skips its pass) and drawn on its own afterwards.
    expect(nv.updateGLVolume).toHaveBeenCalledTimes(1);
    expect(nv.refreshLayers).toHaveBeenCalledTimes(1);
    expect(nv.refreshLayers).toHaveBeenCalledWith(nv.volumes[2], 2);
    expect(lesionOpacityAt.upload).toBe(0);
    expect(lesionOpacityAt.outline).toBe(1);
    expect(nv.updateGLVolume.mock.invocationCallOrder[0]).toBeLessThan(nv.refreshLayers.mock.invocationCallOrder[0]);

    // The lesion volume now holds the ring around the lesion voxel, in full green.
    const lesion = nv.volumes[2];
    expect(lesion.img?.[at(2, 1, 1)]).toBe(0);
    expect(lesion.img?.[at(1, 1, 1)]).toBe(2);
    expect(lesion.img?.[at(3, 1, 1)]).toBe(2);
    expect(lesion).toMatchObject({ cal_min: 1, cal_max: 2, opacity: 1 });

    const snapshot = controller.getSnapshot();
    expect(snapshot.phase).toBe("ready");
    expect(snapshot.hasRelevance && snapshot.hasLesion).toBe(true);
    expect(seen[0]).toBe("loading");
    expect(seen.at(-1)).toBe("ready");
    // The crosshair starts on the lesion.
    expect(nv.vox2frac).toHaveBeenLastCalledWith([2, 1, 1]);
  });

  it("crops the lesion outline to its box and moves the affine's origin to the box", async () => {
    const { nv } = fakeNiivue();
    const calculateRAS = vi.fn();
    const load = nv.loadVolumes.getMockImplementation()!;
    nv.loadVolumes.mockImplementation(async (list: object[]) => {
      await load(list);
      const lesion = nv.volumes[2];
      // 2 mm voxels, origin at (-10, -20, -30) mm.
      lesion.hdr = { dims: [...DIMS], affine: [[2, 0, 0, -10], [0, 2, 0, -20], [0, 0, 2, -30], [0, 0, 0, 1]] };
      lesion.calculateRAS = calculateRAS;
    });
    const { controller } = mounted(nv);
    await controller.load(SOURCE);

    const lesion = nv.volumes[2];
    // The ring around voxel (2, 1, 1) spans x 1..3, y 0..2, z 0..2.
    expect(lesion.hdr?.dims.slice(1, 4)).toEqual([3, 3, 3]);
    expect(lesion.hdr?.affine?.map((row) => row[3])).toEqual([-8, -20, -30, 1]);
    expect(calculateRAS).toHaveBeenCalledTimes(1);
    const local = (x: number, y: number, z: number) => x - 1 + 3 * (y + 3 * z);
    expect(lesion.img).toHaveLength(27);
    expect(lesion.img?.[local(2, 1, 1)]).toBe(0); // the lesion voxel itself
    for (const [x, y, z] of [[1, 1, 1], [3, 1, 1], [2, 0, 1], [2, 2, 1], [2, 1, 0], [2, 1, 2]]) {
      expect(lesion.img?.[local(x, y, z)]).toBe(2);
    }
    expect(Array.from(lesion.img ?? []).filter((v) => v !== 0)).toHaveLength(6);
    expect(lesion.hdr).toMatchObject({ datatypeCode: 2, scl_slope: 1, scl_inter: 0 });
    // "Go to lesion" still works on the whole grid.
    expect(nv.vox2frac).toHaveBeenLastCalledWith([2, 1, 1]);
    expect(controller.getSnapshot().hasLesion).toBe(true);
  });

  it("loads a sign-agreement volume invisibly and modulates the overlay with it on demand", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load({ ...SOURCE, agreementUrl: "/api/v1/attributions/7/agreement.nii.gz" });
    const [list] = nv.loadVolumes.mock.calls[0] as unknown as [Record<string, unknown>[]];
    expect(list).toHaveLength(4);
    expect(list[3]).toMatchObject({ name: "agreement.nii.gz", opacity: 0, cal_min: 0.5, cal_max: 1 });
    expect(controller.getSnapshot()).toMatchObject({ hasUncertainty: true, dimUncertain: false });
    const overlay = nv.volumes[1];
    expect(overlay.modulationImage).toBeNull();

    const uploads = nv.updateGLVolume.mock.calls.length;
    controller.setDimUncertain(true);
    expect(overlay.modulationImage).toBe(3);
    expect(overlay.modulateAlpha).toBe(0); // the colour is scaled, the thresholds' alpha kept
    expect(nv.updateGLVolume.mock.calls.length).toBe(uploads + 1);
    controller.setDimUncertain(false);
    expect(overlay.modulationImage).toBeNull();

    // A map without the volume: nothing to dim, whatever is asked.
    await controller.load(SOURCE);
    expect(controller.getSnapshot().hasUncertainty).toBe(false);
    controller.setDimUncertain(true);
    expect(nv.volumes[1].modulationImage).toBeNull();
  });

  it("toggles layers, opacity and per-sign thresholds", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    const [, overlay, lesion] = nv.volumes;

    controller.setRelevanceVisible(false);
    expect(overlay.opacity).toBe(0);
    controller.setOpacity(0.5);
    expect(overlay.opacity).toBe(0);
    controller.setRelevanceVisible(true);
    expect(overlay.opacity).toBe(0.5);

    controller.setLesionVisible(false);
    expect(lesion.opacity).toBe(0);
    controller.setLesionVisible(true);
    expect(lesion.opacity).toBe(1);

    controller.setWindow("negative", { min: 1, max: 2 });
    expect(overlay.cal_minNeg).toBe(-1);
    expect(overlay.cal_maxNeg).toBe(-2);
    expect(overlay.cal_min).toBeCloseTo(0.6); // the positive side is untouched
    controller.setWindow("positive", { min: 2, max: 4 });
    expect(overlay.cal_min).toBe(2);
    expect(controller.getSnapshot().thresholds.positive).toEqual({ min: 2, max: 4 });

    expect(controller.focusPeak()).toBe(true);
    expect(nv.vox2frac).toHaveBeenLastCalledWith([1, 2, 3]);
    expect(controller.focusLesion()).toBe(true);
    expect(nv.vox2frac).toHaveBeenLastCalledWith([2, 1, 1]);
  });

  it("shows only the MR volume without an attribution or mask", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load({ imageUrl: SOURCE.imageUrl });
    expect((nv.loadVolumes.mock.calls[0] as unknown as [object[]])[0]).toHaveLength(1);
    expect(controller.getSnapshot()).toMatchObject({ phase: "ready", hasRelevance: false, hasLesion: false });
    expect(controller.focusLesion()).toBe(false);
    expect(controller.focusPeak()).toBe(false);
  });

  it("stays usable with a warning when the mask is empty", async () => {
    const { nv } = fakeNiivue({ emptyMask: true });
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    expect(controller.getSnapshot()).toMatchObject({ phase: "ready", hasLesion: false });
    expect(controller.getSnapshot().warnings).toEqual(["The lesion mask is empty."]);
    expect(nv.volumes[2].opacity).toBe(0);
  });

  it("reports a failed load as an error", async () => {
    const { nv } = fakeNiivue({ failLoad: true });
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    expect(controller.getSnapshot().phase).toBe("error");
    expect(controller.getSnapshot().error).toContain("Not Found");
  });

  it("releases the WebGL context and removes its canvas on dispose", async () => {
    const { nv, loseContext } = fakeNiivue();
    const { controller, host } = mounted(nv);
    await controller.load(SOURCE);
    controller.dispose();
    expect(nv.cleanup).toHaveBeenCalledTimes(1);
    expect(loseContext).toHaveBeenCalledTimes(1);
    expect(host.querySelector("canvas")).toBeNull();
    controller.dispose(); // idempotent
    expect(nv.cleanup).toHaveBeenCalledTimes(1);
    expect(() => controller.mount(host)).toThrow();
  });

  it("ignores a load that finishes after dispose", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    const pending = controller.load(SOURCE);
    controller.dispose();
    await pending;
    expect(nv.loadVolumes).not.toHaveBeenCalled();
    expect(controller.getSnapshot().phase).toBe("loading");
  });
});

describe("loadWithoutUploads", () => {
  it("holds back NiiVue's per-volume uploads during loading and restores the method", async () => {
    class Fake {
      uploads = 0;
      updateGLVolume() {
        this.uploads += 1;
      }
      async loadVolumes(list: object[]) {
        list.forEach(() => this.updateGLVolume()); // NiiVue uploads once per added volume
      }
    }
    const nv = new Fake();
    await loadWithoutUploads(nv as unknown as NiivueLike, [{}, {}, {}]);
    expect(nv.uploads).toBe(0);
    expect(Object.prototype.hasOwnProperty.call(nv, "updateGLVolume")).toBe(false);
    nv.updateGLVolume();
    expect(nv.uploads).toBe(1);

    const failing = new Fake();
    failing.loadVolumes = async () => {
      throw new Error("Not Found");
    };
    await expect(loadWithoutUploads(failing as unknown as NiivueLike, [{}])).rejects.toThrow("Not Found");
    failing.updateGLVolume();
    expect(failing.uploads).toBe(1);
  });
});

describe("linked views", () => {
  it("broadcasts to the other controllers' Niivue instances and reports the crosshair in mm", async () => {
    const first = fakeNiivue().nv;
    const second = fakeNiivue().nv;
    const broadcast = vi.fn();
    const a = mounted({ ...first, broadcastTo: broadcast } as NiivueLike).controller;
    const b = mounted(second).controller;
    await a.load(SOURCE);
    await b.load(SOURCE);
    a.broadcastTo([a, b]);
    expect(broadcast).toHaveBeenCalledTimes(1);
    const [targets, opts] = broadcast.mock.calls[0] as [unknown[], object];
    expect(targets).toEqual([second]);
    expect(opts).toEqual({ "2d": true, "3d": true });

    second.onLocationChange({ mm: [1, -2.5, 3], values: [] });
    expect(b.getSnapshot().crosshairMM).toEqual([1, -2.5, 3]);
    second.onLocationChange({ values: [] });
    expect(b.getSnapshot().crosshairMM).toBeNull();
  });
});

describe("keyboard shortcuts", () => {
  const key = (k: string, extra: object = {}) => ({ key: k, ...extra });

  it("switch the view: slices, multiplanar with and without the 3D tile, and the render", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    expect(controller.getSnapshot().view).toBe("multiplanar");

    expect(controller.handleKey(key("1"))).toBe(true);
    expect(nv.setSliceType).toHaveBeenLastCalledWith(SLICE_TYPE.AXIAL);
    controller.handleKey(key("c"));
    expect(nv.setSliceType).toHaveBeenLastCalledWith(SLICE_TYPE.CORONAL);
    controller.handleKey(key("S")); // caps lock or shift: same letter
    expect(nv.setSliceType).toHaveBeenLastCalledWith(SLICE_TYPE.SAGITTAL);
    controller.handleKey(key("6"));
    expect(nv.setSliceType).toHaveBeenLastCalledWith(SLICE_TYPE.RENDER);
    expect(controller.getSnapshot().view).toBe("render");

    controller.handleKey(key("5"));
    expect(nv.setSliceType).toHaveBeenLastCalledWith(SLICE_TYPE.MULTIPLANAR);
    expect(nv.opts.multiplanarShowRender).toBe(SHOW_RENDER.ALWAYS);
    controller.handleKey(key("m"));
    expect(nv.opts.multiplanarShowRender).toBe(SHOW_RENDER.NEVER);
    expect(controller.getSnapshot().view).toBe("multiplanar");
    expect(nv.drawScene).toHaveBeenCalled();
  });

  it("toggle the pathological and healthy signs, all relevance and the lesion", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    const [, overlay, lesion] = nv.volumes;

    controller.handleKey(key("p")); // red off: its threshold moves past twice the peak (4)
    expect(controller.getSnapshot().showPositive).toBe(false);
    expect(overlay.cal_min).toBeGreaterThanOrEqual(8);
    expect(overlay.cal_minNeg).toBeCloseTo(-0.3); // blue untouched
    controller.handleKey(key("h")); // blue off too
    expect(overlay.cal_minNeg).toBeLessThanOrEqual(-4);
    controller.handleKey(key("p")); // red back at its own window
    expect(overlay.cal_min).toBeCloseTo(0.6);
    expect(overlay.cal_max).toBe(4);
    controller.handleKey(key("h"));
    expect(overlay.cal_minNeg).toBeCloseTo(-0.3);
    expect(controller.getSnapshot()).toMatchObject({ showPositive: true, showNegative: true });

    controller.handleKey(key("o"));
    expect(overlay.opacity).toBe(0);
    controller.handleKey(key("o"));
    expect(overlay.opacity).toBeGreaterThan(0);
    controller.handleKey(key("l"));
    expect(lesion.opacity).toBe(0);
    controller.handleKey(key("l"));
    expect(lesion.opacity).toBe(1);
  });

  it("raise and lower each threshold by a twentieth of its peak, never past the saturation", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    const overlay = nv.volumes[1];
    // Peaks: +4 and -2; defaults 0.6 and 0.3 (15 %).
    controller.handleKey(key("]"));
    expect(overlay.cal_min).toBeCloseTo(0.8);
    expect(overlay.cal_minNeg).toBeCloseTo(-0.3);
    controller.handleKey(key("}"));
    expect(overlay.cal_minNeg).toBeCloseTo(-0.4);
    controller.handleKey(key("-")); // both down
    expect(overlay.cal_min).toBeCloseTo(0.6);
    expect(overlay.cal_minNeg).toBeCloseTo(-0.3);
    controller.handleKey(key("["));
    controller.handleKey(key("{"));
    expect(controller.getSnapshot().thresholds.positive?.min).toBeCloseTo(0.4);
    expect(controller.getSnapshot().thresholds.negative?.min).toBeCloseTo(0.2);
    for (let i = 0; i < 40; i++) controller.handleKey(key("+"));
    const { positive, negative } = controller.getSnapshot().thresholds;
    expect(positive?.min).toBeLessThan(4);
    expect(positive?.max).toBe(4);
    expect(negative?.min).toBeLessThan(2);
    for (let i = 0; i < 40; i++) controller.handleKey(key("["));
    expect(controller.getSnapshot().thresholds.positive?.min).toBe(0);
  });

  it("open and close the help with ? and Escape, even before loading", () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    expect(controller.handleKey(key("Escape"))).toBe(false); // nothing to close: not ours
    expect(controller.handleKey(key("?"))).toBe(true);
    expect(controller.getSnapshot().helpOpen).toBe(true);
    expect(controller.handleKey(key("Escape"))).toBe(true);
    expect(controller.getSnapshot().helpOpen).toBe(false);
    controller.handleKey(key("?"));
    controller.handleKey(key("?"));
    expect(controller.getSnapshot().helpOpen).toBe(false);
    // Layer keys wait for the volumes.
    expect(controller.handleKey(key("p"))).toBe(false);
    expect(controller.getSnapshot().showPositive).toBe(true);
  });

  it("leave typing, modifier chords and other keys alone", async () => {
    const { nv } = fakeNiivue();
    const { controller } = mounted(nv);
    await controller.load(SOURCE);
    const field = document.createElement("input");
    expect(controller.handleKey(key("p", { target: field }))).toBe(false);
    expect(controller.handleKey(key("p", { target: document.createElement("textarea") }))).toBe(false);
    expect(controller.handleKey(key("1", { target: document.createElement("select") }))).toBe(false);
    expect(controller.handleKey(key("c", { ctrlKey: true }))).toBe(false);
    expect(controller.handleKey(key("r", { metaKey: true }))).toBe(false);
    expect(controller.handleKey(key("z"))).toBe(false);
    expect(controller.handleKey(key("ArrowLeft"))).toBe(false);
    expect(controller.getSnapshot()).toMatchObject({ showPositive: true, view: "multiplanar" });
    // A checkbox takes no text: after clicking a layer toggle the keys still work.
    const box = document.createElement("input");
    box.type = "checkbox";
    expect(controller.handleKey(key("p", { target: box }))).toBe(true);
    expect(controller.getSnapshot().showPositive).toBe(false);
  });
});

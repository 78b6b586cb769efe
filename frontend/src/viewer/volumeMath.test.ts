import { describe, expect, it } from "vitest";
import { argMax, cropToBox, indexToVoxel, largestRegionCentre, nonZeroBox, outerRing } from "./volumeMath";

describe("indexToVoxel", () => {
  it("uses x-fastest order", () => {
    expect(indexToVoxel(0, [4, 3, 2])).toEqual([0, 0, 0]);
    expect(indexToVoxel(1, [4, 3, 2])).toEqual([1, 0, 0]);
    expect(indexToVoxel(4, [4, 3, 2])).toEqual([0, 1, 0]);
    expect(indexToVoxel(4 * 3 + 5, [4, 3, 2])).toEqual([1, 1, 1]);
  });
});

describe("outerRing", () => {
  it("marks the face neighbours just outside the mask, not the mask itself", () => {
    const dims = [5, 5, 5] as const;
    const mask = new Uint8Array(125);
    mask[2 + 5 * 2 + 25 * 2] = 2; // one voxel in the middle
    const ring = outerRing(mask, dims, 2);
    const set = [...ring.keys()].filter((i) => ring[i] !== 0).map((i) => indexToVoxel(i, dims));
    expect(set).toHaveLength(6);
    expect(set).toContainEqual([1, 2, 2]);
    expect(set).toContainEqual([2, 2, 3]);
    expect(ring[2 + 5 * 2 + 25 * 2]).toBe(0);
    expect(new Set(ring)).toEqual(new Set([0, 2]));
  });

  it("stays inside the volume at its edges", () => {
    const mask = new Uint8Array(8).fill(0);
    mask[0] = 1;
    const ring = outerRing(mask, [2, 2, 2]);
    expect(Array.from(ring)).toEqual([0, 1, 1, 0, 1, 0, 0, 0]);
  });

  it("is empty for an empty mask", () => {
    expect(outerRing(new Uint8Array(27), [3, 3, 3]).includes(1)).toBe(false);
  });
});

describe("nonZeroBox and cropToBox", () => {
  it("find the box of the non-zero voxels and copy it out in the same order", () => {
    const dims = [5, 4, 3] as const;
    const data = new Uint8Array(60);
    data[1 + 5 * 2 + 20 * 0] = 7; // (1, 2, 0)
    data[3 + 5 * 1 + 20 * 2] = 9; // (3, 1, 2)
    const box = nonZeroBox(data, dims);
    expect(box).toEqual({ start: [1, 1, 0], end: [4, 3, 3] });
    const crop = cropToBox(data, dims, box!);
    expect(crop).toHaveLength(3 * 2 * 3);
    // Box-local voxel (x, y, z) is at x + 3 * (y + 2 * z).
    expect(crop[0 + 3 * (1 + 2 * 0)]).toBe(7);
    expect(crop[2 + 3 * (0 + 2 * 2)]).toBe(9);
    expect(crop.filter((v) => v !== 0)).toHaveLength(2);
  });

  it("is null for an all-zero volume and one voxel wide for a single voxel", () => {
    expect(nonZeroBox(new Uint8Array(27), [3, 3, 3])).toBeNull();
    const one = new Uint8Array(27);
    one[26] = 1;
    expect(nonZeroBox(one, [3, 3, 3])).toEqual({ start: [2, 2, 2], end: [3, 3, 3] });
  });
});

describe("largestRegionCentre", () => {
  it("picks the biggest connected region, not the centre of all lesions", () => {
    const dims = [10, 3, 3] as const;
    const data = new Uint8Array(90);
    data[0 + 10 * 1 + 30 * 1] = 2; // a single-voxel lesion at x = 0
    for (const x of [6, 7, 8]) data[x + 10 * 1 + 30 * 1] = 2; // a bigger one at x = 6..8
    expect(largestRegionCentre(data, dims)).toEqual([7, 1, 1]);
  });

  it("lands on the region even when its centre of mass is outside it", () => {
    // An L shape: the mean (0.6, 0.6) is not a lesion voxel.
    const dims = [3, 3, 1] as const;
    const data = new Uint8Array(9);
    for (const [x, y] of [[0, 0], [1, 0], [2, 0], [0, 1], [0, 2]]) data[x + 3 * y] = 1;
    const centre = largestRegionCentre(data, dims);
    expect(centre).not.toBeNull();
    const [x, y] = centre as number[];
    expect(data[x + 3 * y]).toBe(1);
  });

  it("returns null when nothing is set", () => {
    expect(largestRegionCentre(new Uint8Array(8), [2, 2, 2])).toBeNull();
  });
});

describe("argMax", () => {
  it("returns the first index of the largest value", () => {
    expect(argMax([0, 3, -1, 3])).toBe(1);
    expect(argMax(new Float32Array([-5, -2, -9]))).toBe(1);
    expect(argMax([])).toBe(-1);
  });
});

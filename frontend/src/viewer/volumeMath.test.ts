import { describe, expect, it } from "vitest";
import { argMax, indexToVoxel, largestRegionCentre, outerRing } from "./volumeMath";

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

// Small voxel computations used to place the crosshair; pure so they can be tested.

export type Dims3 = readonly [number, number, number];
export type Voxel = [number, number, number];

/** Column-major (x fastest) linear index to voxel coordinates, as NIfTI stores them. */
export function indexToVoxel(index: number, dims: Dims3): Voxel {
  const [nx, ny] = dims;
  return [index % nx, Math.floor(index / nx) % ny, Math.floor(index / (nx * ny))];
}

/** Index of the largest value (first one on ties); -1 for empty or all-NaN data. */
export function argMax(data: ArrayLike<number>): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let index = 0; index < data.length; index++) {
    const value = data[index];
    if (value > bestValue) {
      bestValue = value;
      best = index;
    }
  }
  return best;
}

/**
 * The voxels just outside a mask: zero voxels with a non-zero face neighbour, set to `value`.
 * Drawn on top of the relevance, this outlines a lesion without covering its inside. One pass
 * that reads every voxel once and looks at neighbours only around the (few) mask voxels.
 */
export function outerRing(mask: ArrayLike<number>, dims: Dims3, value = 1): Uint8Array {
  const [nx, ny, nz] = dims;
  const sliceSize = nx * ny;
  const ring = new Uint8Array(sliceSize * nz);
  const mark = (index: number) => {
    if (mask[index] === 0) ring[index] = value;
  };
  let index = 0;
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      for (let x = 0; x < nx; x++, index++) {
        if (mask[index] === 0) continue;
        if (x > 0) mark(index - 1);
        if (x < nx - 1) mark(index + 1);
        if (y > 0) mark(index - nx);
        if (y < ny - 1) mark(index + nx);
        if (z > 0) mark(index - sliceSize);
        if (z < nz - 1) mark(index + sliceSize);
      }
    }
  }
  return ring;
}

/** The smallest box holding every non-zero voxel: first and one-past-last voxel per axis. */
export interface Box {
  start: Voxel;
  end: Voxel;
}

/** The bounding box of the non-zero voxels (x-fastest order); null when all are zero. */
export function nonZeroBox(data: ArrayLike<number>, dims: Dims3): Box | null {
  const [nx, ny, nz] = dims;
  const start: Voxel = [nx, ny, nz];
  const end: Voxel = [0, 0, 0];
  let index = 0;
  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      for (let x = 0; x < nx; x++, index++) {
        if (data[index] === 0) continue;
        if (x < start[0]) start[0] = x;
        if (x >= end[0]) end[0] = x + 1;
        if (y < start[1]) start[1] = y;
        if (y >= end[1]) end[1] = y + 1;
        if (z < start[2]) start[2] = z;
        if (z >= end[2]) end[2] = z + 1;
      }
    }
  }
  return end[0] > 0 ? { start, end } : null;
}

/** The voxels of `data` (x-fastest, `dims`) inside `box`, in the same order. */
export function cropToBox(data: ArrayLike<number>, dims: Dims3, box: Box): Uint8Array {
  const [nx, ny] = dims;
  const [wx, wy, wz] = [0, 1, 2].map((axis) => box.end[axis] - box.start[axis]);
  const out = new Uint8Array(wx * wy * wz);
  let o = 0;
  for (let z = box.start[2]; z < box.end[2]; z++) {
    for (let y = box.start[1]; y < box.end[1]; y++) {
      const row = box.start[0] + nx * (y + ny * z);
      for (let x = 0; x < wx; x++) out[o++] = data[row + x];
    }
  }
  return out;
}

/**
 * A voxel at the centre of the largest face-connected non-zero region: its centre of mass,
 * moved to the region's nearest voxel (so it lies on the lesion even for a curved one).
 * Null when all voxels are zero.
 */
export function largestRegionCentre(data: ArrayLike<number>, dims: Dims3): Voxel | null {
  const [nx, ny, nz] = dims;
  const total = nx * ny * nz;
  const seen = new Uint8Array(total);
  const queue = new Int32Array(total);
  let best: number[] = [];
  for (let start = 0; start < total; start++) {
    if (seen[start] || data[start] === 0) continue;
    let head = 0;
    let tail = 0;
    queue[tail++] = start;
    seen[start] = 1;
    while (head < tail) {
      const index = queue[head++];
      const x = index % nx;
      const y = Math.floor(index / nx) % ny;
      const z = Math.floor(index / (nx * ny));
      const neighbours = [
        x > 0 ? index - 1 : -1,
        x < nx - 1 ? index + 1 : -1,
        y > 0 ? index - nx : -1,
        y < ny - 1 ? index + nx : -1,
        z > 0 ? index - nx * ny : -1,
        z < nz - 1 ? index + nx * ny : -1,
      ];
      for (const n of neighbours) {
        if (n < 0 || seen[n] || data[n] === 0) continue;
        seen[n] = 1;
        queue[tail++] = n;
      }
    }
    if (tail > best.length) best = Array.from(queue.subarray(0, tail));
  }
  if (best.length === 0) return null;
  const voxels = best.map((index) => indexToVoxel(index, dims));
  const mean = [0, 1, 2].map((axis) => voxels.reduce((sum, v) => sum + v[axis], 0) / voxels.length);
  let nearest = voxels[0];
  let nearestD2 = Infinity;
  for (const v of voxels) {
    const d2 = (v[0] - mean[0]) ** 2 + (v[1] - mean[1]) ** 2 + (v[2] - mean[2]) ** 2;
    if (d2 < nearestD2) {
      nearestD2 = d2;
      nearest = v;
    }
  }
  return nearest;
}

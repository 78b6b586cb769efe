"""Subjects' brain masks: stored at import as ``brain.nii.gz`` beside ``image.nii.gz``.

A subject's brain mask is the user's own when one came with the import (a manifest's
``brain_mask`` column, the upload's ``brain_mask`` field, a BIDS ``*desc-brain*_mask``), and
otherwise one computed from the image (``attrivue_core.brainmask.compute_brain_mask``: smoothed,
thresholded between the background and Otsu's level, largest component, holes filled). Either
way it is uint8 0/1 on the image's grid, written with the image's (de-identified) header.

Subjects imported before brain masks existed get theirs lazily: ``ensure_brain_mask`` computes
and stores it the first time the route, the map statistics or a training run asks for it.

numpy, scipy, scikit-image, nibabel and isal (gzip) only: the backend never imports torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip
from sqlalchemy.orm import Session

from attrivue_core.brainmask import compute_brain_mask
from attrivue_core.io import open_decompressed
from backend.models import Subject
from backend.storage import Storage

__all__ = [
    "BRAIN_FILE",
    "COMPUTED",
    "GIVEN",
    "MASK_GRID_VOXELS",
    "BlockMeans",
    "coarsening",
    "ensure_brain_mask",
    "write_computed_brain_mask",
]

BRAIN_FILE = "brain.nii.gz"
GIVEN = "given"
COMPUTED = "computed"
# A computed mask's grid holds at most this many voxels (about 161^3): larger images are
# averaged over blocks first, so that the mask's working arrays stay within tens of MiB.
MASK_GRID_VOXELS = 2**22
_SLAB_VOXELS = 2**20  # voxels summed at a time (8 MiB of float64: one copy block)
_READ_BYTES = 8 * 1024**2


def write_computed_brain_mask(
    image_path: Path, dest: Path, *, means: BlockMeans | None = None
) -> None:
    """Compute the brain mask of the NIfTI image at ``image_path`` and write it to ``dest``.

    The mask keeps the image's header (grid, affine, qform and sform codes) with the data
    type set to uint8 and no scaling, so it lies on the image's grid exactly. The file is
    written under a temporary name and renamed into place.

    The image is never held whole: its voxels go through ``BlockMeans`` (an image of at most
    ``MASK_GRID_VOXELS`` voxels keeps its grid; a larger one is averaged over f x f x f
    blocks), the mask is computed on that grid (voxel sizes f times larger) and written back
    onto the image's grid block by block (nearest neighbour). The mask's smoothing (2 mm)
    blurs finer detail anyway; a coarser grid moves its edge by less than one block.

    Args:
        image_path: A stored (3D) subject image.
        dest: Where the mask goes (``.nii.gz``).
        means: The image's voxels, already fed while they were being stored (the import
            reads them once); without it, the stored image is read here.
    """
    img = nib.load(image_path)
    assert isinstance(img, nib.Nifti1Image)  # stored images are NIfTI-1 (or its subclass)
    if means is None:
        means = BlockMeans(img)
        proxy: Any = img.dataobj
        with open_decompressed(image_path) as stream:
            stream.seek(int(proxy.offset))
            for piece in iter(lambda: stream.read(_READ_BYTES), b""):
                means.feed(piece)
    nx, ny, nz = means.shape
    factor = means.factor
    spacing = [float(z) for z in img.header.get_zooms()[:3]]
    spacing = [(z if z > 0 else 1.0) * factor for z in spacing]
    mask = compute_brain_mask(means.means(), spacing)
    header = img.header.copy()
    header.set_data_shape((nx, ny, nz))
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    try:
        with igzip.open(part, "wb", compresslevel=1) as out:
            header.write_to(out)
            out.write(bytes(int(header["vox_offset"]) - out.tell()))
            for k in range(mask.shape[2]):
                plane = mask[:, :, k].repeat(factor, 0)[:nx].repeat(factor, 1)[:, :ny]
                # The transpose's C order is the plane's Fortran order: x varies fastest.
                block = plane.T.astype(np.uint8).tobytes()
                out.write(block * min(factor, nz - k * factor))
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def coarsening(shape: tuple[int, int, int], limit: int = 0) -> int:
    """The smallest integer factor f whose f x f x f blocks tile ``shape`` with at most
    ``limit`` (default ``MASK_GRID_VOXELS``) blocks: 1 for an image small enough as it is."""
    limit = limit or MASK_GRID_VOXELS
    factor = 1
    while math.prod(-(-n // factor) for n in shape) > limit:
        factor += 1
    return factor


class BlockMeans:
    """An image's values (scaling applied) averaged over the blocks of
    ``factor`` voxels a side (``coarsening``; partial blocks at the far edges are averaged
    over the voxels they hold), fed the raw voxel block in order, in pieces of any size.

    At most a slab of whole slices (``_SLAB_VOXELS``) is decoded at a time, so the memory is
    the coarse grid plus a few MiB whatever the image's size.
    """

    def __init__(self, img: nib.Nifti1Image) -> None:
        nx, ny, nz = (int(n) for n in img.shape[:3])
        self.shape = (nx, ny, nz)
        self.factor = f = coarsening(self.shape)
        self.dtype = img.header.get_data_dtype()
        proxy: Any = img.dataobj
        self.slope, self.inter = float(proxy.slope), float(proxy.inter)
        self._slice_bytes = nx * ny * self.dtype.itemsize
        self._depth = f * max(1, _SLAB_VOXELS // (nx * ny * f))
        self._sums = np.zeros((-(-nx // f), -(-ny // f), -(-nz // f)), dtype=np.float64)
        self._pending = bytearray()
        self._z = 0  # slices added so far

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        slab_bytes = self._depth * self._slice_bytes
        while view:
            if self._z + self._depth > self.shape[2]:  # what is left is less than a slab
                self._pending += view
                return
            take = min(len(view), slab_bytes - len(self._pending))
            if not self._pending and take == slab_bytes:
                self._add(view[:take])  # a whole slab in the piece: no copy
            else:
                self._pending += view[:take]
                if len(self._pending) == slab_bytes:
                    self._add(self._pending)
                    self._pending = bytearray()
            view = view[take:]

    def means(self) -> np.ndarray:
        """The block means (float32), once; OSError if the fed bytes were not the whole voxel
        block (bytes past it, such as a gzip's padding, are ignored)."""
        missing = (self.shape[2] - self._z) * self._slice_bytes
        if len(self._pending) < missing:
            raise OSError("the voxel data ended early")
        if missing:
            self._add(memoryview(self._pending)[:missing])
        self._pending = bytearray()
        counts = [np.diff(np.append(np.arange(0, n, self.factor), n)) for n in self.shape]
        means, self._sums = self._sums, np.zeros((0, 0, 0))  # once: divided in place
        means /= counts[0][:, None, None] * counts[1][None, :, None] * counts[2]
        if self.slope != 1.0 or self.inter != 0.0:  # linear: the mean of the scaled values
            means *= self.slope
            means += self.inter
        return means.astype(np.float32)

    def _add(self, raw: bytes | bytearray | memoryview) -> None:
        nx, ny, _ = self.shape
        f = self.factor
        depth = len(raw) // self._slice_bytes
        slab = np.frombuffer(raw, dtype=self.dtype).reshape((nx, ny, depth), order="F")
        if nx % f == 0 and ny % f == 0 and depth % f == 0:
            # In Fortran order, axes (f, n/f) split an index i into (i % f, i // f); summing
            # the slowest axis first keeps every pass contiguous.
            blocks = slab.reshape((f, nx // f, f, ny // f, f, depth // f), order="F")
            reduced = blocks.sum(axis=4, dtype=np.float64).sum(axis=2).sum(axis=0)
        else:
            reduced = np.add.reduceat(slab, np.arange(0, nx, f), axis=0, dtype=np.float64)
            reduced = np.add.reduceat(reduced, np.arange(0, ny, f), axis=1)
            reduced = np.add.reduceat(reduced, np.arange(0, depth, f), axis=2)
        del slab
        k = self._z // f
        self._sums[:, :, k : k + reduced.shape[2]] = reduced
        self._z += depth


def ensure_brain_mask(session: Session, storage: Storage, subject: Subject) -> Path:
    """The subject's stored brain mask, computed and stored now if it has none yet.

    A subject imported before brain masks existed (or whose file went missing) gets a computed
    one; ``subject.brain_path`` and ``brain_source`` are set in the session (the caller
    commits).

    Returns:
        The absolute path of the brain mask.
    """
    if subject.brain_path:
        path = storage.absolute(subject.brain_path)
        if path.is_file():
            return path
    dest = storage.subject_dir(subject.dataset_id, subject.id) / BRAIN_FILE
    write_computed_brain_mask(storage.absolute(subject.image_path), dest)
    subject.brain_path = storage.relative(dest)
    subject.brain_source = COMPUTED
    session.flush()
    return dest

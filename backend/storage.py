"""Where files live under the data directory; writes are atomic (temp name, then rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attrivue_core.imported import IMPORTED_DIR
from backend.core.config import Settings, get_settings, private_dir

__all__ = ["Storage", "get_storage"]


class Storage:
    """Paths of datasets, subjects, runs and maps, relative to one data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def tmp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def subject_dir(self, dataset_id: int, subject_id: int) -> Path:
        return self.root / "datasets" / str(dataset_id) / "subjects" / str(subject_id)

    def run_dir(self, run_id: int) -> Path:
        return self.root / "runs" / str(run_id)

    def checkpoint_dir(self, run_id: int) -> Path:
        return self.run_dir(run_id) / "checkpoints"

    def model_import_dir(self, job_id: int) -> Path:
        """Where an imported model waits for its check (job ``job_id``)."""
        return self.root / "imports" / "models" / str(job_id)

    def imported_model_dir(self, run_id: int) -> Path:
        """An imported run's model and its record (``attrivue_core.imported``)."""
        return self.checkpoint_dir(run_id) / IMPORTED_DIR

    def map_path(self, run_id: int, attribution_id: int) -> Path:
        return self.run_dir(run_id) / "maps" / f"{attribution_id}.nii.gz"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def absolute(self, stored: str) -> Path:
        path = (self.root / stored).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"stored path escapes the data directory: {stored!r}")
        return path

    @contextmanager
    def temp_file(self, suffix: str = "") -> Iterator[Path]:
        """A temporary file in the data directory, removed unless it was moved away."""
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.tmp_dir())
        os.close(fd)
        path = Path(name)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    @staticmethod
    def move_into_place(src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.move(src, tmp)
        os.replace(tmp, dest)

    @staticmethod
    def remove_tree(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


def get_storage(settings: Settings | None = None) -> Storage:
    """The storage of the configured data directory, created owner-only if it is new."""
    return Storage(private_dir((settings or get_settings()).data_dir))

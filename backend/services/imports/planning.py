"""Import planning: the table (a manifest or a BIDS participants.tsv) read and turned into the
subjects to store, each with its files' names in the file set, every problem named with its
file and row."""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import Dataset, Subject
from backend.services.imports.archive import FileSet
from backend.services.imports.common import (
    MAX_TABLE_BYTES,
    ImportFailed,
    Problem,
    Problems,
    clean_name,
    kind_of,
    too_large,
)

__all__ = [
    "LABELS",
    "MANIFEST_COLUMNS",
    "MODALITY_NAME",
    "SPLITS",
    "Fields",
    "Planned",
    "Table",
    "check_plan",
    "find_table",
    "manifest_modalities",
    "plan_bids",
    "plan_manifest",
    "read_table",
]

LABELS = {"0": 0, "1": 1, "healthy": 0, "control": 0, "pathological": 1, "patient": 1}
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("subject", "image", "mask", "brain_mask", "label", "target", "split", "site")
_FILE_ROLES = ("image", "mask", "brain_mask")
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_BIDS_IMAGES = ("T1w", "FLAIR")
# A modality's name: a manifest column ``image_<name>``, or a BIDS suffix (T1w, FLAIR).
MODALITY_NAME = re.compile(r"^[A-Za-z0-9]{1,32}$")
_IMAGE_COLUMN = re.compile(r"^image_([a-z0-9]{1,32})$")


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (line number, values by lower-case column)


def read_table(files: FileSet, name: str) -> Table:
    path = files.path(name)
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise too_large(f"tables are limited to {MAX_TABLE_BYTES} bytes", name)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFailed([Problem("the table is not UTF-8 text", name)]) from None
    first = text.split("\n", 1)[0]
    if name.lower().endswith(".tsv") or ("\t" in first and "," not in first):
        delimiter = "\t"
    else:
        delimiter = ","
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = next(reader, [])
        columns = [c.strip().lower() for c in header]
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            row = {c: (values[i].strip() if i < len(values) else "") for i, c in enumerate(columns)}
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise ImportFailed([Problem(f"unreadable table: {exc}", name)]) from None
    if not columns:
        raise ImportFailed([Problem("the table is empty", name)])
    return Table(name, columns, rows)


def find_table(files: FileSet) -> str:
    """The manifest or participants.tsv nearest the top (a manifest wins at equal depth)."""
    candidates = [
        n
        for n in files.names
        if PurePosixPath(n).name.lower() in ("manifest.csv", "manifest.tsv", "participants.tsv")
    ]
    if not candidates:
        raise ImportFailed(
            [
                Problem(
                    "no manifest: send a manifest (CSV or TSV), a zip holding manifest.csv, or a "
                    "BIDS folder with participants.tsv"
                )
            ]
        )

    def rank(n: str) -> tuple[int, int]:
        return n.count("/"), 0 if PurePosixPath(n).name.lower().startswith("manifest") else 1

    candidates.sort(key=rank)
    if len(candidates) > 1 and rank(candidates[0]) == rank(candidates[1]):
        shown = ", ".join(candidates[:2])
        raise ImportFailed([Problem(f"two tables at the same level ({shown}); keep one")])
    return candidates[0]


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Fields:
    label: int
    split: str
    site: str
    target: float | None


@dataclass(frozen=True)
class Planned:
    """One subject as a table row describes it, with its files' names in the file set."""

    row: int
    key: str
    fields: Fields
    image: str
    mask: str | None
    brain: str | None = None
    # Channels 1.. of a multi-modal subject: (modality name, file name), in channel order.
    channels: tuple[tuple[str, str], ...] = ()

    def files(self) -> list[str]:
        """The names of the subject's files in the file set."""
        extra = [name for _, name in self.channels]
        return [n for n in (self.image, self.mask, self.brain, *extra) if n]


def manifest_modalities(columns: list[str]) -> list[tuple[str, str]]:
    """The image columns of a manifest as (modality name, column), in channel order: ``image``
    first when present, then every ``image_<name>`` column from left to right (without
    ``image``, the leftmost ``image_<name>`` is channel 0). One column: a single image."""
    named = [(m.group(1), c) for c in columns if (m := _IMAGE_COLUMN.match(c))]
    return ([("image", "image")] if "image" in columns else []) + named


def _value(row: dict[str, str], column: str) -> str:
    value = row.get(column, "")
    return "" if value.lower() == "n/a" else value


def _parse_fields(row: dict[str, str], key: str, label_column: str) -> Fields:
    """The checked subject fields of a row; ValueError with a message for the first bad one."""
    if not _KEY.match(key):
        raise ValueError(f"subject {key!r}: use 1-128 letters, digits, '_', '.' or '-'")
    label_text = _value(row, label_column).lower()
    if label_text not in LABELS:
        raise ValueError(
            f"label {_value(row, label_column)!r}: expected 0, 1, healthy, control, "
            "pathological or patient"
        )
    split = _value(row, "split").lower() or "train"
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: expected train, val or test")
    site = _value(row, "site")
    if len(site) > 64:
        raise ValueError("site: at most 64 characters")
    target_text = _value(row, "target")
    target = None
    if target_text:
        try:
            target = float(target_text)
        except ValueError:
            raise ValueError(f"target {target_text!r}: not a number") from None
        if not math.isfinite(target):
            raise ValueError(f"target {target_text!r}: not a finite number")
    return Fields(LABELS[label_text], split, site, target)


def _resolve(files: FileSet, root: str, value: str) -> str:
    """The file a table cell names: its path from the table's folder, else a unique suffix."""
    wanted = clean_name(value)
    exact = f"{root}/{wanted}" if root else wanted
    if exact in files.names:
        return exact
    matches = [n for n in files.names if n == wanted or n.endswith("/" + wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"several uploaded files match ({', '.join(matches[:3])}); give the path")
    raise ValueError("no uploaded file has this name")


def plan_manifest(table: Table, files: FileSet, problems: Problems) -> list[Planned]:
    root = str(PurePosixPath(table.name).parent).strip(".")
    modalities = manifest_modalities(table.columns)
    image_columns = {c for _, c in modalities}
    unknown = [c for c in table.columns if c not in MANIFEST_COLUMNS and c not in image_columns]
    missing = [c for c in ("subject", "label") if c not in table.columns]
    missing += [] if modalities else ["image"]
    if unknown or missing:
        if unknown:
            problems.add(f"unknown column(s) {', '.join(unknown)}", table.name, 1)
        if missing:
            problems.add(f"missing column(s) {', '.join(missing)}", table.name, 1)
        problems.add(
            f"the columns are: {', '.join(MANIFEST_COLUMNS)}, and image_<name> for each further "
            "modality (e.g. image_flair)",
            table.name,
            1,
        )
        return []
    roles = [c for _, c in modalities] + [r for r in _FILE_ROLES if r != "image"]
    planned = []
    for line, row in table.rows:
        try:
            fields = _parse_fields(row, row["subject"], "label")
        except ValueError as exc:
            problems.add(str(exc), table.name, line)
            continue
        names: dict[str, str | None] = dict.fromkeys(roles)
        for role in roles:
            value = row.get(role, "")
            if not value:
                if role in image_columns:
                    which = "" if len(modalities) == 1 else f" in column {role}"
                    problems.add(f"no image given{which}", table.name, line)
                continue
            try:
                names[role] = _resolve(files, root, value)
            except ValueError as exc:
                problems.add(f"{role}: {exc}", value, line)
        if any(names[c] is None for c in image_columns) or any(
            row.get(role) and names[role] is None for role in roles
        ):
            continue
        image = names[modalities[0][1]]
        assert image is not None
        channels = tuple((m, str(names[c])) for m, c in modalities[1:])
        planned.append(
            Planned(
                line, row["subject"], fields, image, names["mask"], names["brain_mask"], channels
            )
        )
    return planned


@dataclass
class _BidsFiles:
    images: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    masks: list[str] = field(default_factory=list)
    brains: list[str] = field(default_factory=list)


def _bids_role(filename: str) -> str | None:
    """'brain', 'mask', an image suffix (T1w, FLAIR) or None, from a BIDS file name's
    entities (a brain mask: ``desc-brain`` or ``label-brain`` with the suffix ``mask``)."""
    stem = filename.split(".", 1)[0]
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    suffix = parts[-1]
    described = (entities.get("desc"), entities.get("label"))
    if suffix.lower() == "mask" and "brain" in described:
        return "brain"
    if suffix.lower() == "mask" or "lesion" in described:
        return "mask"
    for name in _BIDS_IMAGES:
        if suffix.lower() == name.lower():
            return name
    return None


def _index_bids(files: FileSet, root: str) -> dict[str, _BidsFiles]:
    """Images and lesion masks per subject: sub-*/[ses-*/]anat/, masks also in derivatives/."""
    subjects: dict[str, _BidsFiles] = defaultdict(_BidsFiles)
    prefix = f"{root}/" if root else ""
    for name in files.names:
        if not name.startswith(prefix) or kind_of(name) != "nifti":
            continue
        parts = name[len(prefix) :].split("/")
        derived = parts[0] == "derivatives"
        subject_at = next((i for i, p in enumerate(parts[:-1]) if p.startswith("sub-")), None)
        if subject_at is None or (subject_at != 0 and not derived) or parts[-2] != "anat":
            continue
        if len(parts) - subject_at not in (3, 4):  # sub/anat/f or sub/ses/anat/f
            continue
        role = _bids_role(parts[-1])
        entry = subjects[parts[subject_at]]
        if role == "mask":
            entry.masks.append(name)
        elif role == "brain":
            entry.brains.append(name)
        elif role is not None and not derived:
            entry.images[role].append(name)
    return subjects


def plan_bids(
    table: Table,
    files: FileSet,
    modality: str | None,
    problems: Problems,
    modalities: list[str] | None = None,
) -> list[Planned]:
    """The subjects of a BIDS folder. ``modalities`` (e.g. ``["T1w", "FLAIR"]``): every
    subject must have one image of each, stacked as channels in that order."""
    root = str(PurePosixPath(table.name).parent).strip(".")
    label_column = "label" if "label" in table.columns else "group"
    missing = [c for c in ("participant_id", label_column) if c not in table.columns]
    if missing:
        problems.add(
            f"missing column(s) {', '.join(missing)} (participant_id, label or group)",
            table.name,
            1,
        )
        return []
    found = _index_bids(files, root)
    planned, listed = [], set()
    for line, row in table.rows:
        key = row["participant_id"]
        key = key if key.startswith("sub-") else f"sub-{key}"
        listed.add(key)
        try:
            fields = _parse_fields(row, key, label_column)
        except ValueError as exc:
            problems.add(str(exc), table.name, line)
            continue
        entry = found.get(key, _BidsFiles())
        where = f"{root}/{key}/anat" if root else f"{key}/anat"
        if modalities:
            stacked = [entry.images.get(m, []) for m in modalities]
            absent = [m for m, names in zip(modalities, stacked, strict=True) if not names]
            several = [m for m, names in zip(modalities, stacked, strict=True) if len(names) > 1]
            if absent or several:
                for m in absent:
                    problems.add(f"no {m} image found for {key}", where, line)
                for m in several:
                    problems.add(f"several {m} images for {key}; keep one", where, line)
                continue
        kinds = [modality] if modality else list(_BIDS_IMAGES)
        kinds = modalities[:1] if modalities else kinds
        images = [n for k in kinds for n in entry.images.get(k, [])]
        if not images:
            wanted = modality or "T1w or FLAIR"
            problems.add(f"no {wanted} image found for {key}", where, line)
            continue
        if len(images) > 1:
            problems.add(
                f"several images ({', '.join(images)}): keep one, or choose the modality "
                "(T1w or FLAIR)",
                where,
                line,
            )
            continue
        if len(entry.masks) > 1:
            problems.add(f"several lesion masks ({', '.join(entry.masks)}); keep one", where, line)
            continue
        if len(entry.brains) > 1:
            problems.add(f"several brain masks ({', '.join(entry.brains)}); keep one", where, line)
            continue
        mask = entry.masks[0] if entry.masks else None
        brain = entry.brains[0] if entry.brains else None
        channels = tuple((m, entry.images[m][0]) for m in (modalities[1:] if modalities else []))
        planned.append(Planned(line, key, fields, images[0], mask, brain, channels))
    for key, entry in sorted(found.items()):
        if key not in listed and entry.images:
            first = next(iter(entry.images.values()))[0]
            problems.add(f"{key} has images but no row in participants.tsv", first)
    return planned


def check_plan(
    session: Session, dataset: Dataset, planned: list[Planned], table: str, problems: Problems
) -> None:
    """No subject twice (in the table or already in the dataset), no file used twice."""
    first_row: dict[str, int] = {}
    for p in planned:
        if p.key in first_row:
            problems.add(f"subject {p.key!r} also on row {first_row[p.key]}", table, p.row)
        first_row.setdefault(p.key, p.row)
    uses = Counter(n for p in planned for n in p.files())
    for name, count in uses.items():
        if count > 1:
            problems.add(f"the file is named by {count} rows or roles", name)
    existing = set(
        session.scalars(
            select(Subject.subject_key).where(
                Subject.dataset_id == dataset.id, Subject.subject_key.in_(list(first_row))
            )
        )
    )
    for p in planned:
        if p.key in existing:
            problems.append(
                Problem(
                    f"subject {p.key!r} already exists in dataset {dataset.id}",
                    table,
                    p.row,
                    kind="conflict",
                )
            )

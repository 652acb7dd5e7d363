"""Which DICOM instances are chest radiographs to read: the node and DICOMweb pull mode skip
the rest (a lateral view, a CT, a report already in the study) with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class ReadFilter:
    """Header values an instance must have to be read (compared upper-case; an empty tuple
    accepts anything)."""

    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = ("CHEST",)
    views: tuple[str, ...] = ("PA", "AP")

    def reason_to_skip(self, ds: Dataset) -> str | None:
        for keyword, allowed in (("Modality", self.modalities), ("BodyPartExamined", self.body_parts),
                                 ("ViewPosition", self.views)):
            value = str(ds.get(keyword, "") or "").strip().upper()
            if allowed and value not in allowed:
                return f"{keyword} {value or '(none)'} is not one of {', '.join(allowed)}"
        return None

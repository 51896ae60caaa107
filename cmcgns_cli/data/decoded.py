"""What a decoder returns and what it raises, shared by ``imageio`` and ``dicomio``.

Both decoders build a :class:`Decoded` and raise :class:`ImageError`; keeping the two
types here lets ``imageio`` (every format) call ``dicomio`` (DICOM) without ``dicomio``
importing ``imageio`` back. ``imageio`` re-exports both names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ImageError(Exception):
    """An input that cannot become an image; ``reason`` is a short fixed string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Decoded:
    image: np.ndarray  # uint8 (h, w): the original, or a reduced decode of it
    orig_h: int
    orig_w: int
    reduced: int = 1  # 1, 2, 4 or 8
    view: str = ""  # DICOM ViewPosition when present
    orientation: int = 1  # EXIF Orientation applied (1 = none)
    fallbacks: list[str] = field(default_factory=list)  # DICOM defaults assumed
    # DICOM header values where present: modality, body_part, patient_id, study_uid
    tags: dict[str, str] = field(default_factory=dict)

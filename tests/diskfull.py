"""A file on a disk that fills: what the OS does to a write past the space left."""

from __future__ import annotations

import errno
import io


class FullFile(io.FileIO):
    """A file on a disk that fills after ``room`` bytes: the write that would pass it fails
    with ENOSPC, as the OS fails it, and ``disk["free"]`` drops to ``left``."""

    def __init__(self, path, room: int, disk: dict[str, int], left: int) -> None:
        super().__init__(path, "wb")
        self.room, self.disk, self.left = room, disk, left

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            self.disk["free"] = self.left
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)

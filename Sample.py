"""Value types for one audio signal of a data set: a file on disk, or an explicit silence.

A track of a separation data set is a mixture and its named sources, each one of these.
They only describe audio; reading it is `Datasets.audio`'s job (`Datasets.audio.info(path)`
makes the Sample of a file from its header).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One audio file with the metadata needed to plan reading it."""

    path: str
    sample_rate: int
    channels: int
    duration: float  # seconds

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.sample_rate))

    @property
    def is_silent(self) -> bool:
        return False


@dataclass(frozen=True)
class SilentSample:
    """A source known to be silent for the whole track, e.g. the voice of an instrumental
    MedleyDB song. Readers produce zeros for it; it is never used as a "real" example of a
    source (an all-zero excerpt would teach a critic that silence is a voice)."""

    duration: float  # seconds
    sample_rate: int
    channels: int = 1

    @property
    def path(self) -> None:
        return None

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.sample_rate))

    @property
    def is_silent(self) -> bool:
        return True

"""Recorded speech as a spoken source: benchmark audio that ships with the data is used instead of synthesis.

:class:`RecordedSpeech` implements :class:`~nemo_salad.evaluation.spoken.SpokenSource` over a mapping
``spoken text -> recording`` (an audio file path or the encoded bytes of a file, e.g. the ``audio`` column of a
Hugging Face dataset read with ``Audio(decode=False)``). A text with a recording becomes a cut of that recording,
resampled to 16 kHz, with the text as its supervision and ``custom["audio_source"] == "recorded"``; texts
without one go to the ``fallback`` source (e.g. :class:`~nemo_salad.evaluation.spoken.SynthesizedSpeech`), so
one source serves recorded and synthesized benchmarks in the same run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.cut import Cut

from nemo_salad.evaluation.spoken import SpokenSource

__all__ = ["RECORDED", "RecordedSpeech", "recorded_cut"]

log = logging.getLogger(__name__)

#: ``cut.custom["audio_source"]`` of a cut made from a recording
RECORDED = "recorded"
SAMPLE_RATE = 16000

Audio = str | Path | bytes
#: a recording, or a zero-argument function that returns one when the audio is first needed (lazy datasets)
AudioRef = Audio | Callable[[], Audio]


def recorded_cut(text: str, audio: Audio, sampling_rate: int = SAMPLE_RATE) -> Cut:
    """A cut of one recording with ``text`` as its supervision, resampled to ``sampling_rate``.

    Args:
        text (str): the transcript (the spoken text of the benchmark).
        audio (str | Path | bytes): an audio file, or the encoded bytes of one (wav, flac, ...).
        sampling_rate (int): rate of the returned cut. Default: 16000.

    Returns:
        Cut: id ``rec-<hash of text>``, ``custom["audio_source"] == "recorded"``.

    Raises:
        FileNotFoundError: if ``audio`` is a path that does not exist.
        ValueError: if the audio cannot be decoded (naming the text and the file).

    >>> import io, numpy as np, soundfile as sf
    >>> buf = io.BytesIO(); sf.write(buf, np.zeros(8000), 8000, format="WAV")
    >>> cut = recorded_cut("Hi there.", buf.getvalue())
    >>> cut.sampling_rate, cut.duration, cut.supervisions[0].text, cut.custom["audio_source"]
    (16000, 1.0, 'Hi there.', 'recorded')
    """
    cid = "rec-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]
    where = f"{len(audio)} bytes" if isinstance(audio, bytes) else str(audio)
    try:
        if isinstance(audio, bytes):
            rec = Recording.from_bytes(audio, recording_id=cid)
        else:
            if not Path(audio).is_file():
                raise FileNotFoundError(f"recording {audio} of the spoken text {text[:60]!r} does not exist")
            rec = Recording.from_file(audio, recording_id=cid)
    except FileNotFoundError:
        raise
    except Exception as e:  # soundfile / audioread raise several types for undecodable audio
        raise ValueError(f"cannot read the recording ({where}) of the spoken text {text[:60]!r}: "
                         f"{type(e).__name__}: {e}; expected a wav/flac/mp3 file") from e
    if rec.sampling_rate != sampling_rate:
        rec = rec.resample(sampling_rate)
    return MonoCut(cid, 0.0, rec.duration, 0, recording=rec, custom={"audio_source": RECORDED},
                   supervisions=[SupervisionSegment(cid, cid, 0.0, rec.duration, text=text)])


class RecordedSpeech:
    """Cuts of recorded audio for the texts that have a recording; the others from ``fallback`` (or absent).

    Args:
        recordings (Mapping[str, AudioRef]): spoken text (exactly as in the items) -> audio file or bytes, or a
            zero-argument function returning one (read only when the text is voiced).
        fallback (SpokenSource | None): voices the texts without a recording. Default: None (they are absent,
            and the harness counts their items as ``no_speech``).
        sampling_rate (int): rate of the cuts. Default: 16000.

    Raises:
        FileNotFoundError: if a recording path does not exist (checked here, before any scoring).

    >>> import io, numpy as np, soundfile as sf
    >>> buf = io.BytesIO(); sf.write(buf, np.zeros(1600), 16000, format="WAV")
    >>> source = RecordedSpeech({"Which gas?": buf.getvalue()})
    >>> sorted(source.cuts_for("demo", ["Which gas?", "Not recorded."]))
    ['Which gas?']
    """

    def __init__(self, recordings: Mapping[str, AudioRef], fallback: SpokenSource | None = None,
                 sampling_rate: int = SAMPLE_RATE) -> None:
        for text, audio in recordings.items():
            if isinstance(audio, str | Path) and not Path(audio).is_file():
                raise FileNotFoundError(f"recording {audio} of the spoken text {text[:60]!r} does not exist")
        self.recordings, self.fallback, self.sampling_rate = dict(recordings), fallback, sampling_rate

    def __contains__(self, text: object) -> bool:
        return text in self.recordings

    def __len__(self) -> int:
        return len(self.recordings)

    def cuts_for(self, key: str, texts: Sequence[str]) -> dict[str, Cut]:
        out = {}
        for t in dict.fromkeys(texts):
            if t in self.recordings:
                audio = self.recordings[t]
                out[t] = recorded_cut(t, audio() if callable(audio) else audio, self.sampling_rate)
        rest = [t for t in dict.fromkeys(texts) if t not in self.recordings]
        if rest and self.fallback is not None:
            out.update(self.fallback.cuts_for(key, rest))
        elif rest:
            log.debug("%s: %d texts have no recording and no fallback source", key, len(rest))
        return out

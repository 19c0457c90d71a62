"""Fast, robotic, offline TTS through the ``espeak-ng`` command-line program (GPL-3.0, from apt: not a Python
dependency of nemo_salad; the backend is usable only where the binary is installed).

    apt-get install -y espeak-ng
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

import numpy as np

__all__ = ["EspeakBackend"]


class EspeakBackend:
    """espeak-ng formant synthesis, one process per text (~8 ms per sentence; RTF ~0.008 measured in assets.md).

    Args:
        voice (str): espeak-ng voice, e.g. ``"en-us"``, ``"en-gb"``, ``"en-us+f2"``. Default: "en-us".
        speed (int): words per minute. Default: 160.
        pitch (int | None): 0-99. Default: espeak-ng's.
        binary (str): program name or path. Default: "espeak-ng".
        timeout (float): seconds allowed per text. Default: 60.

    Raises:
        FileNotFoundError: if the program is not found, with the install command.

    >>> EspeakBackend().synthesize(["Hello there."])[0].dtype  # doctest: +SKIP
    dtype('float32')
    """

    name = "espeak"

    def __init__(self, voice: str = "en-us", speed: int = 160, pitch: int | None = None, binary: str = "espeak-ng",
                 timeout: float = 60.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"espeak-ng program {binary!r} not found on PATH; install it with "
                                    "'apt-get install -y espeak-ng' or use the piper backend")
        self.binary = path
        self.voice, self.speed, self.pitch, self.timeout = voice, int(speed), pitch, float(timeout)
        self.sample_rate = 22050  # espeak-ng's fixed output rate; checked against every WAV header below

    def _command(self, voice: str, wav_path: str) -> list[str]:
        cmd = [self.binary, "-v", voice, "-s", str(self.speed), "-w", wav_path, "--stdin"]
        if self.pitch is not None:
            cmd += ["-p", str(self.pitch)]
        return cmd

    def synthesize(self, texts: Sequence[str], voice: str | None = None) -> list[np.ndarray]:
        """Waveforms ``(T_i,)`` float32 at 22.05 kHz. Text goes through stdin (never a shell or an argument)."""
        import soundfile

        out = []
        with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
            wav_path = os.path.join(tmp, "out.wav")
            for text in texts:
                out.append(self._one(text, voice or self.voice, wav_path, soundfile))
        return out

    def _one(self, text: str, voice: str, wav_path: str, soundfile) -> np.ndarray:
        proc = subprocess.run(self._command(voice, wav_path), input=text.encode("utf-8"), capture_output=True,
                              timeout=self.timeout, check=False)
        if proc.returncode != 0 or not os.path.isfile(wav_path):
            raise RuntimeError(f"{self.binary} failed (exit {proc.returncode}) for {text[:60]!r}: "
                               f"{proc.stderr.decode('utf-8', 'replace').strip()[:300]}")
        try:
            wave, rate = soundfile.read(wav_path, dtype="float32", always_2d=False)
        finally:
            os.remove(wav_path)
        if rate != self.sample_rate:
            raise RuntimeError(f"{self.binary} produced {rate} Hz audio, expected {self.sample_rate} Hz")
        return np.asarray(wave, dtype=np.float32).reshape(-1)

    def provenance(self) -> dict[str, str]:
        pitch = "" if self.pitch is None else f" -p {self.pitch}"
        return {"backend": self.name, "voice": self.voice, "checkpoint": f"{self.binary} -s {self.speed}{pitch}"}

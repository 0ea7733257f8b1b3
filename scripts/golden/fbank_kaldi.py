#!/usr/bin/python3
"""Golden fixture for loom's Kaldi-compatible filterbank (data/fbank.h): torchaudio.compliance.kaldi.fbank
(Debian's python3-torchaudio) on clips of different lengths and content, written to
tests/fixtures/fbank_kaldi.safetensors (safetensors written by hand in fixture_io.py).

Clips (mono float32 in [-1, 1]): tones (one at 440 Hz, a chord), white noise, a rising chirp,
speech (espeak-ng, when it is installed: "seven boats sailed at dawn"), digital silence, a clip of
exactly one window (400 samples) and one a sample short of a second frame, a mix of speech and noise.
Most use AST/AudioMAE's call: 16 kHz, 25 ms / 10 ms, hanning, 128 mel bins, htk_compat, no dither,
no energy (htk_compat only moves the energy, which is off). Two use other options (8 kHz povey 23 bins;
hamming 64 bins with low/high cut-offs and no pre-emphasis) so the options are tested too.

Keys per clip NAME: "wave/NAME" (f32 [n]), "fbank32/NAME" (f32 [frames, bins], torchaudio on the f32
waveform, its usual use), "fbank64/NAME" (torchaudio on the same waveform as f64, stored as f32: the
reference without float32 FFT error). The clip's options are in the metadata as JSON.
Run: /usr/bin/python3 scripts/golden/fbank_kaldi.py  (from the repository root)
"""
import json
import math
import os
import shutil
import subprocess
import tempfile
import wave

import torch
import torchaudio.compliance.kaldi as kaldi

from fixture_io import fixture_path, write_safetensors

AST = dict(sample_frequency=16000.0, frame_length=25.0, frame_shift=10.0, num_mel_bins=128, window_type="hanning",
           htk_compat=True, use_energy=False, dither=0.0, low_freq=20.0, high_freq=0.0,
           preemphasis_coefficient=0.97, remove_dc_offset=True)


def speech(text, rate, voice="en", speed=150):
    """espeak-ng's speech resampled to `rate` by simple linear interpolation (any content will do)."""
    if not shutil.which("espeak-ng"):
        return None
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text], check=True)
        with wave.open(path) as w:
            sr, n = w.getframerate(), w.getnframes()
            x = torch.frombuffer(bytearray(w.readframes(n)), dtype=torch.int16).double() / 32768.0
    t = torch.arange(int(len(x) * rate / sr), dtype=torch.float64) * (sr / rate)
    i = t.floor().long().clamp(max=len(x) - 2)
    f = t - i
    return ((1 - f) * x[i] + f * x[i + 1]).float()


def main():
    g = torch.Generator().manual_seed(7)
    sr = 16000
    t = lambda n: torch.arange(n, dtype=torch.float64) / sr
    clips = {}
    clips["tone440"] = (0.5 * torch.sin(2 * math.pi * 440 * t(8000))).float(), AST
    clips["chord"] = (0.2 * (torch.sin(2 * math.pi * 262 * t(12345)) + torch.sin(2 * math.pi * 330 * t(12345)) +
                             torch.sin(2 * math.pi * 3920 * t(12345)))).float(), AST
    clips["noise"] = (0.3 * torch.randn(8000, generator=g)).clamp(-1, 1).float(), AST
    n = 9600
    phase = 2 * math.pi * (100 * t(n) + 0.5 * (7000 - 100) / (n / sr) * t(n) ** 2)
    clips["chirp"] = (0.4 * torch.sin(phase)).float(), AST
    s = speech("seven boats sailed at dawn", sr)
    if s is not None:
        clips["speech"] = s, AST
        noisy = s[:12000] + 0.05 * torch.randn(len(s[:12000]), generator=g)
        clips["speech_noise"] = noisy.clamp(-1, 1).float(), AST
    clips["silence"] = torch.zeros(4800), AST
    clips["one_window"] = (0.1 * torch.randn(400, generator=g)).float(), AST
    clips["almost_two"] = (0.1 * torch.randn(559, generator=g)).float(), AST
    kaldi_8k = dict(AST, sample_frequency=8000.0, num_mel_bins=23, window_type="povey")
    clips["povey_8k"] = (0.3 * torch.sin(2 * math.pi * 1000 * torch.arange(6000, dtype=torch.float64) / 8000) +
                         0.05 * torch.randn(6000, generator=g, dtype=torch.float64)).float(), kaldi_8k
    hamming = dict(AST, num_mel_bins=64, window_type="hamming", low_freq=50.0, high_freq=-400.0,
                   preemphasis_coefficient=0.0)
    clips["hamming_64"] = (0.25 * torch.randn(7000, generator=g)).clamp(-1, 1).float(), hamming

    tensors, options = {}, {}
    for name, (x, opts) in clips.items():
        tensors["wave/" + name] = x
        tensors["fbank32/" + name] = kaldi.fbank(x.unsqueeze(0), **opts)
        tensors["fbank64/" + name] = kaldi.fbank(x.double().unsqueeze(0), **opts).float()
        options[name] = opts
    path = fixture_path("fbank_kaldi.safetensors")
    write_safetensors(path, tensors, {"options": json.dumps(options, sort_keys=True),
                                      "generator": "scripts/golden/fbank_kaldi.py"})
    print(path, {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("fbank32/")})


if __name__ == "__main__":
    main()

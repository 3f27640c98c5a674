import logging

import numpy as np
import pytest
import soundfile as sf

from reasoning.audio import SAMPLE_RATE, load_audio
from reasoning.tasks.collate import AudioCache, cut_clip
from reasoning.errors import AudioError


def tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
def test_any_rate_is_resampled_to_16k_keeping_pitch(tmp_path, sr):
    path = tmp_path / f"{sr}.wav"
    sf.write(path, tone(440, 1.0, sr), sr)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - SAMPLE_RATE) <= 1
    assert abs(peak_frequency(x, SAMPLE_RATE) - 440) < 3


def test_stereo_is_averaged_to_mono(tmp_path):
    left, right = tone(300, 0.5, 16000), np.zeros(8000, np.float32)
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 16000)
    np.testing.assert_allclose(load_audio(tmp_path / "st.wav"), left / 2, atol=1e-4)


def test_segment_by_start_and_end(tmp_path):
    x = np.linspace(-1, 1, 32000, dtype=np.float32)
    sf.write(tmp_path / "x.wav", x, 16000, subtype="FLOAT")
    seg = load_audio(tmp_path / "x.wav", start=0.5, end=1.0)
    np.testing.assert_allclose(seg, x[8000:16000])


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_a_file_that_is_not_audio(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 10)
    with pytest.raises(AudioError, match=r"notes\.wav"):
        load_audio(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(200, 1.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:30])  # the header alone, cut short
    with pytest.raises(AudioError, match=r"cut\.wav"):
        load_audio(path)


def test_empty_clip_is_an_error_and_silence_is_not(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: the clip has no samples"):
        load_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    assert not load_audio(tmp_path / "silent.wav").any()


def test_clip_longer_than_max_seconds_is_cut_with_a_warning(tmp_path, caplog):
    sf.write(tmp_path / "long.wav", tone(200, 3.0, 16000), 16000)
    row = {"audio": str(tmp_path / "long.wav")}
    assert len(cut_clip(AudioCache()(row), None, row["audio"])) == 3 * SAMPLE_RATE  # null: whole
    with caplog.at_level(logging.WARNING):
        x = cut_clip(AudioCache()(row), 2.0, row["audio"])
    assert len(x) == 2 * SAMPLE_RATE
    assert "long.wav" in caplog.text and "longer than" in caplog.text

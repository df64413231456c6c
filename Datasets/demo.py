"""A deterministic built-in demo data set: synthetic songs of a singing voice over a band.

Nothing is downloaded: every song is synthesised with numpy from a generator seeded with
(seed, collection, song number), so the same settings give byte-identical files on every run.

What a song holds (stems as in DSD100):
- vocals: a band-limited glottal pulse train on a melody in a singing range (f0 150-700 Hz),
  with glides between notes, delayed 5-6 Hz vibrato and slow pitch drift; vowel formants that
  change per syllable; 3-6 syllables a second grouped into phrases with pauses; consonant,
  aspiration and breath noise. Some songs have long vocal pauses.
- other: chords of 3-4 notes in the singer's register with stable pitch and a brighter
  timbre (pairs of slightly detuned oscillators spread in stereo), held or struck in rhythm;
- bass: plucked low notes on the chord roots;
- drums: kick (falling sine sweep), snare (noise burst and tone), hi-hat (high noise).
Voice and chords share the key, the register and the 200-2000 Hz band, so a fixed frequency
filter separates them poorly; pitch contour, vibrato, formants and rhythm tell them apart.
Loudness and the voice-to-accompaniment ratio vary per song.

Layout under the root folder (24-bit WAV files, whose sums are exact: a mixture equals the sum
of its stems as read back):
- paired/: the DSD100 layout (Mixtures/ and Sources/, Dev/ and Test/), described by
  DemoPaired.xml with Training and Test splits;
- extra/<song>/{mix,instrumental,voice,bass,drums,other}.wav: a CCMixter-like layout without
  splits, with the band's stems as well (so that `four_stems` runs on it), described by
  DemoExtra.xml; the last extra songs are instrumentals whose voice is silent;
- demo_manifest.json: settings and format version, written last, so a root holding a manifest
  with the requested settings is complete and is reused as it is.

    python -m Datasets.demo ROOT [--seed N] [--duration SECONDS] [--training-tracks N] ...
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage
from scipy import signal as scipy_signal

from Datasets import audio
from Datasets.atomic import atomic_open
from Datasets.descriptors import (DescriptorError, Database, Instrument, Track, parse_descriptor, scan_folder,
                                  write_descriptor)

FORMAT_VERSION = 3  # bump whenever the synthesis or the layout changes, so cached sets regenerate
MANIFEST_NAME = "demo_manifest.json"
PAIRED_DESCRIPTOR = "DemoPaired.xml"
EXTRA_DESCRIPTOR = "DemoExtra.xml"
PAIRED_FOLDER = "paired"
EXTRA_FOLDER = "extra"

# Generator streams: a paired song and an extra song with the same number must differ.
_PAIRED_STREAM, _EXTRA_STREAM = 0, 1
_LONG_PAUSE_EVERY = 3  # every third song sings in short phrases with long rests

_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])
# Scale degrees of the chord roots of a 4-bar loop.
_PROGRESSIONS = ((0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 3), (1, 4, 0, 5), (0, 5, 3, 4), (0, 2, 3, 4))
# F1-F3 (Hz) of a, e, i, o, u for a low voice; higher voices scale them up.
_VOWEL_FORMANTS = np.array([[730, 1090, 2440], [530, 1840, 2480], [300, 2200, 2950],
                            [570, 840, 2410], [330, 900, 2300]], dtype=float)
_VOWEL_WEIGHTS = np.array([0.3, 0.25, 0.1, 0.2, 0.15])  # open vowels dominate in singing
_FOURTH_FORMANT = 3500.0
_FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 160.0, 250.0])
_SINGER_RANGES = ((50, 67), (60, 77))  # MIDI: about 147-392 Hz and 262-698 Hz
_PCM_24_STEPS = 2 ** 23


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the generated files; recorded in the manifest."""

    seed: int = 0
    training_tracks: int = 8
    test_tracks: int = 6
    extra_tracks: int = 12
    instrumental_extra_tracks: int = 1  # the last ones of the extra tracks have a silent voice
    duration: float = 20.0  # seconds per track
    sample_rate: int = 16000
    channels: int = 2

    def validate(self) -> None:
        if min(self.training_tracks, self.test_tracks, self.extra_tracks, self.instrumental_extra_tracks) < 0:
            raise ValueError("Track counts must not be negative.")
        if self.training_tracks + self.test_tracks == 0:
            raise ValueError("The demo set needs at least one paired track.")
        if self.duration < 1.0:
            raise ValueError("Demo tracks must last at least 1 s.")
        if self.sample_rate < 8000:
            raise ValueError("The demo sample rate must be at least 8000 Hz.")
        if self.channels not in (1, 2):
            raise ValueError("Demo tracks are mono or stereo.")


# ----------------------------------------------------------------------------------------------
# Signal building blocks


def _ramp(values: np.ndarray, seconds: float) -> np.ndarray:
    """0 below 0, rising linearly to 1 over `seconds`: the edges of envelopes."""
    return np.clip(values / seconds, 0.0, 1.0)


def _bump(values: np.ndarray) -> np.ndarray:
    """A raised-cosine window over [0, 1], zero outside."""
    inside = (values >= 0) & (values <= 1)
    return np.where(inside, 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(values, 0, 1)), 0.0)


def _midi_to_hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _highest_partial(sample_rate: int) -> float:
    """Partials stay below this, leaving room for the fading top partial below Nyquist."""
    return min(7000.0, sample_rate / 2 - 1000.0)


def _harmonic_pulses(f0: np.ndarray, sample_rate: int, highest_frequency: float) -> np.ndarray:
    """Unit-RMS sum of equal cosine harmonics of a time-varying f0 up to `highest_frequency`.

    The closed form (Dirichlet kernel) costs a few sines per sample whatever the harmonic count;
    the partial just above the limit is weighted by how far f0 is below the next harmonic count,
    so harmonics fade in and out smoothly instead of clicking as the pitch moves.
    """
    cycles = np.cumsum(f0) / sample_rate
    # float32 trigonometry is several times faster and its error stays near -90 dB.
    phase = (2 * np.pi * (cycles - np.floor(cycles))).astype(np.float32)
    harmonics = np.maximum(highest_frequency / f0, 1.0).astype(np.float32)
    count = np.floor(harmonics)
    fraction = harmonics - count
    half_sine = np.sin(phase / 2)
    at_pulse = np.abs(half_sine) < 1e-6
    dirichlet = np.where(at_pulse, count,
                         np.sin((count + 0.5) * phase) / (2 * np.where(at_pulse, 1.0, half_sine)) - 0.5)
    pulses = dirichlet + fraction * np.cos((count + 1) * phase)
    return pulses / np.sqrt((count + fraction ** 2) / 2)


def _spectrum(signal: np.ndarray) -> np.ndarray:
    # Single precision halves the cost; its error (about -120 dB) stays below the 24-bit files'.
    return scipy_fft.rfft(signal.astype(np.float32))


def _filtered(signal: np.ndarray, sample_rate: int, highpass: float = 0.0, lowpass: float = np.inf,
              order: int = 2) -> np.ndarray:
    """Zero-phase band-pass with Butterworth magnitude slopes (6 dB per octave and order) at
    `highpass` and `lowpass` Hz, applied through one FFT."""
    frequencies = np.maximum(scipy_fft.rfftfreq(len(signal), 1 / sample_rate), 1e-3)
    gain = 1.0 / np.sqrt((1.0 + (highpass / frequencies) ** (2 * order))
                         * (1.0 + (frequencies / lowpass) ** (2 * order)))
    return scipy_fft.irfft(_spectrum(signal) * gain.astype(np.float32), n=len(signal))


def _smoothed(values: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """One-pole lowpass starting at the first value: exponential glides between steps."""
    coefficient = 1.0 - np.exp(-1.0 / (seconds * sample_rate))
    numerator, denominator = [coefficient], [1.0, coefficient - 1.0]
    initial = scipy_signal.lfilter_zi(numerator, denominator) * values[0]
    return scipy_signal.lfilter(numerator, denominator, values, zi=initial)[0]


def _event_index(event_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per time, the index of the latest event at or before it (-1 before the first)."""
    return np.searchsorted(event_times, times, side="right") - 1


def _panned(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power panning, pan in [-1 (left), 1 (right)]: (frames, 2)."""
    angle = (pan + 1) * np.pi / 4
    return np.stack([np.cos(angle) * mono, np.sin(angle) * mono], axis=1)


def _active_rms(signal: np.ndarray, sample_rate: int) -> float:
    """RMS over the 50 ms blocks within 40 dB of the loudest, so pauses do not count."""
    block = int(0.05 * sample_rate)
    usable = len(signal) // block * block
    blocks = signal[:usable].reshape(-1, block, *signal.shape[1:])
    powers = np.mean(blocks ** 2, axis=tuple(range(1, blocks.ndim)))
    active = powers[powers > powers.max() * 1e-4]
    return float(np.sqrt(active.mean())) if active.size else 0.0


# ----------------------------------------------------------------------------------------------
# Musical plan shared by all sources of a song


@dataclass(frozen=True)
class _Song:
    beat: float  # seconds
    tonic: int  # MIDI
    mode: np.ndarray  # semitones of the scale degrees
    progression: tuple[int, ...]  # chord root degree per bar, looped
    chord_floor: int  # MIDI; chords are voiced in the octave above
    chord_size: int

    @property
    def bar(self) -> float:
        return 4 * self.beat

    def midi(self, degrees: np.ndarray) -> np.ndarray:
        degrees = np.asarray(degrees)
        return self.tonic + 12 * (degrees // 7) + self.mode[degrees % 7]

    def chord_roots(self, bars: np.ndarray) -> np.ndarray:
        return np.asarray(self.progression)[bars % len(self.progression)]


def _plan_song(rng: np.random.Generator) -> _Song:
    return _Song(beat=60.0 / rng.uniform(88, 132), tonic=int(rng.integers(55, 67)),
                 mode=_MAJOR if rng.random() < 0.6 else _MINOR,
                 progression=_PROGRESSIONS[rng.integers(len(_PROGRESSIONS))],
                 chord_floor=int(rng.integers(53, 59)), chord_size=int(rng.integers(3, 5)))


@dataclass(frozen=True)
class _Syllables:
    onset: np.ndarray  # seconds
    length: np.ndarray  # seconds, up to the release
    midi: np.ndarray
    vowel: np.ndarray  # rows of _VOWEL_FORMANTS
    consonant: np.ndarray  # seconds of noise before the vowel, 0 for none
    loudness: np.ndarray
    phrase_onsets: np.ndarray  # seconds; a breath precedes each


def _melody_notes(rng: np.random.Generator, song: _Song, singer_range: tuple[int, int], count: int) -> np.ndarray:
    """A random walk over the scale notes in the singer's range: mostly steps, some leaps."""
    degrees = np.arange(-21, 36)
    notes = song.midi(degrees)
    notes = notes[(notes >= singer_range[0]) & (notes <= singer_range[1])]
    steps = rng.choice([-4, -2, -1, -1, 0, 0, 1, 1, 2, 4], size=count)
    position = len(notes) // 2 + np.cumsum(steps)
    # Fold the walk back into the range (a triangle wave over the note indices).
    period = 2 * (len(notes) - 1)
    folded = position % period
    folded = np.where(folded > len(notes) - 1, period - folded, folded)
    return notes[folded]


def _plan_syllables(rng: np.random.Generator, song: _Song, duration: float, long_pauses: bool,
                    singer_range: tuple[int, int]) -> _Syllables:
    """Phrases of 1-2 bars of syllables on a sixteenth grid, ending on a held note."""
    sixteenth = song.beat / 4
    onsets, lengths, phrase_onsets = [], [], []
    position = min(rng.integers(2, 7) * song.beat, duration / 4)  # an instrumental intro
    while position < duration:
        phrase_onsets.append(position)
        phrase_end = position + rng.integers(1, 3) * song.bar
        while position < phrase_end:
            slot = rng.choice([1, 2, 2, 2, 3, 4]) * sixteenth
            onsets.append(position)
            lengths.append(slot * rng.uniform(0.75, 0.95))
            position += slot
        lengths[-1] += rng.integers(2, 7) * sixteenth  # the phrase's last note is held
        rest_bars = rng.uniform(2.0, 4.0) if long_pauses else rng.choice([0.5, 0.75, 1.0])
        position = lengths[-1] + onsets[-1] + rest_bars * song.bar
        position = np.ceil(position / sixteenth) * sixteenth
    count = len(onsets)
    # Singers are not quantised: onsets wander by about 10 ms.
    onset = np.asarray(onsets) + np.abs(rng.normal(0.0, 0.01, count))
    has_consonant = rng.random(count) < 0.4
    return _Syllables(onset=onset, length=np.asarray(lengths),
                      midi=_melody_notes(rng, song, singer_range, count).astype(float),
                      vowel=rng.choice(len(_VOWEL_FORMANTS), size=count, p=_VOWEL_WEIGHTS),
                      consonant=np.where(has_consonant, rng.uniform(0.03, 0.07, count), 0.0),
                      loudness=rng.uniform(0.6, 1.0, count), phrase_onsets=np.asarray(phrase_onsets))


# ----------------------------------------------------------------------------------------------
# Voice


def _vowel_gain(frequencies: np.ndarray, formants: np.ndarray) -> np.ndarray:
    """Magnitude response of one vowel: a cascade of resonators (as in formant synthesisers,
    which gives the formants their natural relative levels) times the glottal roll-off and lip
    radiation."""
    resonances = [formant ** 2 / np.sqrt((formant ** 2 - frequencies ** 2) ** 2 + (bandwidth * frequencies) ** 2)
                  for formant, bandwidth in zip(formants, _FORMANT_BANDWIDTHS)]
    relative = frequencies / 200.0
    return relative / (1 + relative ** 2) * np.prod(resonances, axis=0)


def _vowel_filter(source: np.ndarray, syllables: _Syllables, syllable: np.ndarray, formant_scale: float,
                  sample_rate: int) -> np.ndarray:
    """Shapes the glottal source with each syllable's vowel.

    The source goes through every vowel's fixed filter and the outputs are crossfaded over
    about 30 ms at syllable changes, a time-varying filter without frame artefacts.
    """
    spectrum = _spectrum(source)
    frequencies = scipy_fft.rfftfreq(len(source), 1 / sample_rate)
    # The responses are smooth at a few Hz, so they are evaluated on a coarse grid (it is faster).
    grid = np.linspace(0, sample_rate / 2, 4097)
    vowel = syllables.vowel[syllable]
    shaped = np.zeros(len(source))
    for index, formants in enumerate(_VOWEL_FORMANTS):
        weight = ndimage.uniform_filter1d((vowel == index).astype(float), int(0.03 * sample_rate))
        if weight.any():
            gain = _vowel_gain(grid, np.append(formants, _FOURTH_FORMANT) * formant_scale)
            gain = np.interp(frequencies, grid, gain).astype(np.float32)
            shaped += weight * scipy_fft.irfft(spectrum * gain, n=len(source))
    return shaped


def _sung_pitch(rng: np.random.Generator, syllables: _Syllables, times: np.ndarray, syllable: np.ndarray,
                sample_rate: int) -> np.ndarray:
    """MIDI pitch per sample: notes joined by glides, vibrato growing within each note, drift."""
    glide = _smoothed(syllables.midi[syllable], sample_rate, rng.uniform(0.02, 0.04))
    since_onset = times - syllables.onset[syllable]
    depth = rng.uniform(0.35, 0.6)  # semitones, about 2-3.5 % of f0
    vibrato = depth * np.sin(2 * np.pi * rng.uniform(5.0, 6.0) * times + rng.uniform(0, 2 * np.pi))
    vibrato *= _ramp(since_onset - 0.15, 0.25)
    drift = _smoothed(rng.standard_normal(len(times)), sample_rate, 0.3)
    drift *= 0.1 / max(float(np.std(drift)), 1e-9)
    return glide + vibrato + drift


def _breath_envelope(phrase_onsets: np.ndarray, times: np.ndarray) -> np.ndarray:
    """An inhalation ending 50 ms before each phrase."""
    upcoming = np.minimum(np.searchsorted(phrase_onsets, times), len(phrase_onsets) - 1)
    lead = phrase_onsets[upcoming] - times
    return _bump((0.35 - lead) / 0.3)


def _synthesise_voice(rng: np.random.Generator, song: _Song, duration: float, long_pauses: bool,
                      frames: int, sample_rate: int) -> np.ndarray:
    singer = int(rng.integers(len(_SINGER_RANGES)))
    syllables = _plan_syllables(rng, song, duration, long_pauses, _SINGER_RANGES[singer])
    times = np.arange(frames) / sample_rate
    index = _event_index(syllables.onset, times)
    syllable = np.maximum(index, 0)
    since_onset = times - syllables.onset[syllable]
    until_release = syllables.onset[syllable] + syllables.length[syllable] - times
    voiced = (syllables.loudness[syllable] * (index >= 0) * _ramp(since_onset - syllables.consonant[syllable], 0.04)
              * _ramp(until_release, 0.06))
    f0 = _midi_to_hz(_sung_pitch(rng, syllables, times, syllable, sample_rate))
    source = _harmonic_pulses(f0, sample_rate, _highest_partial(sample_rate))
    source += 0.15 * rng.standard_normal(frames)  # aspiration makes the voice slightly breathy
    vowels = _vowel_filter(source * voiced, syllables, syllable, 1.0 + 0.12 * singer, sample_rate)
    vowels /= max(_active_rms(vowels, sample_rate), 1e-9)

    consonant_length = np.maximum(syllables.consonant[syllable], 1e-3)
    consonant_envelope = (index >= 0) * (syllables.consonant[syllable] > 0) * _bump(since_onset / consonant_length)
    hiss = _filtered(rng.standard_normal(frames), sample_rate, highpass=rng.uniform(2500, 4500), order=3)
    breath = _filtered(rng.standard_normal(frames), sample_rate, highpass=400, lowpass=2500)
    return (vowels + 0.5 * consonant_envelope * hiss
            + 0.05 * _breath_envelope(syllables.phrase_onsets, times) * breath)


# ----------------------------------------------------------------------------------------------
# Accompaniment


def _strike_envelope(strikes: np.ndarray, times: np.ndarray, attack: float, decay: float) -> np.ndarray:
    """Attack and exponential decay from each strike, closing just before the next one so that
    pitch changes at strikes are inaudible."""
    index = _event_index(strikes, times)
    latest = np.maximum(index, 0)
    since = times - strikes[latest]
    following = np.append(strikes, np.inf)[index + 1]
    return (index >= 0) * _ramp(since, attack) * np.exp(-since / decay) * _ramp(following - times, 0.015)


def _grid_strikes(song: _Song, duration: float, steps_in_bar: list[int]) -> np.ndarray:
    """Times of the given sixteenth steps (0-15) in every bar."""
    bars = np.arange(int(np.ceil(duration / song.bar)) + 1)
    times = (bars[:, None] * song.bar + np.asarray(steps_in_bar)[None, :] * song.beat / 4).ravel()
    return np.sort(times[times < duration])


def _chord_notes(song: _Song, bars: np.ndarray) -> np.ndarray:
    """(bars, chord size) MIDI notes: a triad folded into the octave above chord_floor, plus
    the root an octave higher for four-note chords."""
    roots = song.chord_roots(bars)
    degrees = roots[:, None] + np.array([0, 2, 4])[None, :]
    triads = song.chord_floor + (song.midi(degrees) - song.chord_floor) % 12
    if song.chord_size == 3:
        return triads
    top = song.chord_floor + 12 + (song.midi(roots) - song.chord_floor) % 12
    return np.column_stack([triads, top])


def _synthesise_chords(rng: np.random.Generator, song: _Song, duration: float, frames: int,
                       sample_rate: int) -> np.ndarray:
    times = np.arange(frames) / sample_rate
    bar = (times // song.bar).astype(int)
    if rng.random() < 0.5:  # held pad, one strike a bar
        envelope = _strike_envelope(_grid_strikes(song, duration, [0]), times, rng.uniform(0.05, 0.2), 4.0)
    else:  # rhythmic comping
        pattern = [[0, 4, 8, 12], [0, 6, 8, 14], [2, 6, 10, 14], [0, 3, 6, 10, 12]][rng.integers(4)]
        envelope = _strike_envelope(_grid_strikes(song, duration, pattern), times, 0.008, rng.uniform(0.15, 0.35))
    bars = np.arange(bar.max() + 1)
    frequencies = _midi_to_hz(_chord_notes(song, bars))
    detune = 2 ** (rng.uniform(4, 9) / 1200)  # the two oscillators of a note beat slowly, like a chorus
    highest = _highest_partial(sample_rate)
    left = sum(_harmonic_pulses(frequencies[bar, note] / detune, sample_rate, highest)
               for note in range(frequencies.shape[1]))
    right = sum(_harmonic_pulses(frequencies[bar, note] * detune, sample_rate, highest)
                for note in range(frequencies.shape[1]))
    brightness = rng.uniform(600, 1500)  # a sawtooth-like slope above it
    left = _filtered(left * envelope, sample_rate, highpass=120, lowpass=brightness, order=1)
    right = _filtered(right * envelope, sample_rate, highpass=120, lowpass=brightness, order=1)
    return _panned(left, -0.6) + _panned(right, 0.6)


def _synthesise_bass(rng: np.random.Generator, song: _Song, duration: float, frames: int,
                     sample_rate: int) -> np.ndarray:
    times = np.arange(frames) / sample_rate
    pattern = [[0, 4, 8, 12], [0, 8], [0, 6, 8, 14], [0, 2, 4, 6, 8, 10, 12, 14]][rng.integers(4)]
    strikes = _grid_strikes(song, duration, pattern)
    # Per note: the chord root, sometimes its fifth or octave.
    roots = song.chord_roots((strikes // song.bar).astype(int))
    degrees = roots + rng.choice([0, 0, 0, 4, 7], size=len(strikes))
    notes = 28 + (song.midi(degrees) - 28) % 12 + 12 * (degrees >= roots + 7)
    f0 = _midi_to_hz(notes)[np.maximum(_event_index(strikes, times), 0)]
    envelope = _strike_envelope(strikes, times, 0.005, rng.uniform(0.3, 0.6))
    pulses = _harmonic_pulses(f0, sample_rate, 1500.0)
    return _panned(_filtered(pulses * envelope, sample_rate, lowpass=rng.uniform(250, 500)), 0.0)


def _drum_sounds(rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
    """One sampled hit per drum, as a drum machine plays them."""
    times = np.arange(int(0.35 * sample_rate)) / sample_rate
    sweep = 45 + 110 * np.exp(-times / 0.025)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sample_rate) * np.exp(-times / 0.1) * _ramp(times, 0.002)
    noise = rng.standard_normal((2, len(times)))
    snare = (_filtered(noise[0], sample_rate, highpass=1000, lowpass=5000) * np.exp(-times / 0.07)
             + 0.5 * np.sin(2 * np.pi * 185 * times) * np.exp(-times / 0.04))
    hihat = _filtered(noise[1], sample_rate, highpass=min(6000.0, 0.35 * sample_rate), order=3)
    hihat *= np.exp(-times / 0.025)
    return {"kick": kick, "snare": snare, "hihat": hihat}


def _synthesise_drums(rng: np.random.Generator, song: _Song, duration: float, frames: int,
                      sample_rate: int) -> np.ndarray:
    patterns = {"kick": [[0, 8], [0, 6, 8], [0, 8, 10], [0, 3, 8, 11]][rng.integers(4)],
                "snare": [4, 12],
                "hihat": list(range(0, 16, 2)) if rng.random() < 0.6 else list(range(16))}
    levels = {"kick": 1.0, "snare": 0.6, "hihat": 0.25}
    pans = {"kick": 0.0, "snare": 0.1, "hihat": 0.35}
    stereo = np.zeros((frames, 2))
    for name, sound in _drum_sounds(rng, sample_rate).items():
        strikes = _grid_strikes(song, duration, patterns[name])
        track = np.zeros(frames + len(sound))  # room for the last hit's tail
        for start, velocity in zip((strikes * sample_rate).astype(int), rng.uniform(0.8, 1.0, len(strikes))):
            track[start:start + len(sound)] += levels[name] * velocity * sound
        stereo += _panned(track[:frames], pans[name])
    return stereo


# ----------------------------------------------------------------------------------------------
# Songs and files


def _synthesise_song(rng: np.random.Generator, settings: DemoSettings, long_pauses: bool,
                     instrumental: bool) -> dict[str, np.ndarray]:
    """The four stems, float32 (frames, channels), at the song's own loudness."""
    frames = int(round(settings.duration * settings.sample_rate))
    song = _plan_song(rng)
    arguments = (rng, song, settings.duration, frames, settings.sample_rate)

    def relative_to(reference: np.ndarray, signal: np.ndarray, decibels: float) -> np.ndarray:
        ratio = _active_rms(reference, settings.sample_rate) / _active_rms(signal, settings.sample_rate)
        return signal * ratio * 10 ** (decibels / 20)

    drums = _synthesise_drums(*arguments)
    stems = {"bass": relative_to(drums, _synthesise_bass(*arguments), rng.uniform(-4, 0)), "drums": drums,
             "other": relative_to(drums, _synthesise_chords(*arguments), rng.uniform(-1, 3))}
    if instrumental:
        stems["vocals"] = np.zeros((frames, 2))
    else:
        voice = _synthesise_voice(rng, song, settings.duration, long_pauses, frames, settings.sample_rate)
        voice = relative_to(sum(stems.values()), voice, rng.uniform(-5, 3))
        stems["vocals"] = _panned(voice, rng.uniform(-0.15, 0.15))
    peak_target = 10 ** (rng.uniform(-14, -2) / 20)  # loudness varies per song
    peak = max(np.abs(sum(stems.values())).max(), *(np.abs(stem).max() for stem in stems.values()))
    return {name: _stored_form(stem * (peak_target / peak), settings.channels) for name, stem in stems.items()}


def _stored_form(stereo: np.ndarray, channels: int) -> np.ndarray:
    """float32 on the 24-bit PCM grid: such values, and sums of a few of them, survive writing
    unchanged, so a stored mixture is exactly the sum of its stored stems."""
    chosen = stereo if channels == 2 else stereo.mean(axis=1, keepdims=True)
    return (np.round(chosen * _PCM_24_STEPS) / _PCM_24_STEPS).astype(np.float32)


def _song_generator(settings: DemoSettings, stream: int, number: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, stream, number])


def _write(path: str, signal: np.ndarray, sample_rate: int) -> None:
    """24-bit PCM, not float: libsndfile puts a time stamp into float WAVs (the PEAK chunk), so
    they would differ from run to run."""
    audio.write(path, signal, sample_rate, subtype="PCM_24")


def _write_paired_song(root: str, settings: DemoSettings, number: int, split_folder: str) -> None:
    stems = _synthesise_song(_song_generator(settings, _PAIRED_STREAM, number), settings,
                             long_pauses=number % _LONG_PAUSE_EVERY == 0, instrumental=False)
    folder = f"{number:03d} - Demo - Song {number}"
    for name, stem in stems.items():
        _write(os.path.join(root, "Sources", split_folder, folder, f"{name}.wav"), stem, settings.sample_rate)
    _write(os.path.join(root, "Mixtures", split_folder, folder, "mixture.wav"),
           sum(stems.values()), settings.sample_rate)


def _write_extra_song(root: str, settings: DemoSettings, number: int) -> Track:
    instrumental_song = number > settings.extra_tracks - settings.instrumental_extra_tracks
    stems = _synthesise_song(_song_generator(settings, _EXTRA_STREAM, number), settings,
                             long_pauses=number % _LONG_PAUSE_EVERY == 0, instrumental=instrumental_song)
    folder = f"Demo_-_Extra_Song_{number:02d}"
    instrumental = stems["bass"] + stems["drums"] + stems["other"]
    files = {"Mix": ("mix.wav", instrumental + stems["vocals"]),
             "Instrumental": ("instrumental.wav", instrumental),
             "Voice": ("voice.wav", stems["vocals"]),
             "Bass": ("bass.wav", stems["bass"]), "Drums": ("drums.wav", stems["drums"]),
             "Other": ("other.wav", stems["other"])}
    instruments = []
    for name, (file_name, signal) in files.items():
        relative_path = os.path.join(folder, file_name)
        _write(os.path.join(root, relative_path), signal, settings.sample_rate)
        sample = audio.info(os.path.join(root, relative_path))
        instruments.append(Instrument(relative_path=relative_path, name=name, sample_rate=sample.sample_rate,
                                      channels=sample.channels, length=sample.duration))
    return Track(title=f"Extra Song {number}", artist="Demo", instruments=tuple(instruments))


def _write_songs(paired_root: str, extra_root: str, settings: DemoSettings) -> list[Track]:
    """Writes all songs, several at once (numpy releases the GIL); returns the extra tracks.

    Each song has its own generator, so the files do not depend on the order of the work."""
    split_folders = ["Dev"] * settings.training_tracks + ["Test"] * settings.test_tracks
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        paired = [pool.submit(_write_paired_song, paired_root, settings, number, split_folder)
                  for number, split_folder in enumerate(split_folders, start=1)]
        extra = [pool.submit(_write_extra_song, extra_root, settings, number)
                 for number in range(1, settings.extra_tracks + 1)]
        for job in paired:
            job.result()
        return [job.result() for job in extra]


# ----------------------------------------------------------------------------------------------
# Cache handling


def _descriptor_paths(root: str, settings: DemoSettings) -> list[str]:
    names = [PAIRED_DESCRIPTOR] + ([EXTRA_DESCRIPTOR] if settings.extra_tracks else [])
    return [os.path.join(root, name) for name in names]


def _manifest(settings: DemoSettings) -> dict:
    return {"format_version": FORMAT_VERSION, "settings": asdict(settings)}


def is_complete(root: str, settings: DemoSettings) -> bool:
    """Whether `root` holds a finished demo set made with `settings` whose files all exist."""
    root = os.path.abspath(root)
    try:
        with open(os.path.join(root, MANIFEST_NAME), encoding="utf-8") as file:
            if json.load(file) != _manifest(settings):
                return False
        databases = [parse_descriptor(path) for path in _descriptor_paths(root, settings)]
    except (OSError, ValueError, DescriptorError):
        return False
    # A moved or copied cache still names its old folder in the descriptors.
    expected_roots = [os.path.join(root, PAIRED_FOLDER), os.path.join(root, EXTRA_FOLDER)]
    return (all(database.root == expected for database, expected in zip(databases, expected_roots))
            and all(os.path.isfile(os.path.join(database.root, instrument.relative_path))
                    for database in databases for track in database.tracks for instrument in track.instruments))


def _clear(root: str) -> None:
    """Removes a previous demo set, manifest first so that a half-cleared root is never taken as complete."""
    for name in (MANIFEST_NAME, PAIRED_DESCRIPTOR, EXTRA_DESCRIPTOR):
        if os.path.lexists(os.path.join(root, name)):
            os.remove(os.path.join(root, name))
    for name in (PAIRED_FOLDER, EXTRA_FOLDER):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _write_manifest(root: str, settings: DemoSettings) -> None:
    with atomic_open(os.path.join(root, MANIFEST_NAME), "w", encoding="utf-8") as file:
        json.dump(_manifest(settings), file, indent=2)


def demo_folder(cache_dir: str, options: dict) -> str:
    """Where the demo set of these generator `options` (DemoSettings fields, the config key
    `demo_options`) lives: `<cache_dir>/demo` for the default set, a folder of their own for
    others, so that switching between them never regenerates either."""
    unknown = sorted(set(options) - {field.name for field in fields(DemoSettings)})
    if unknown:
        raise ValueError(f"Config key `demo_options`: unknown demo settings {unknown}; the settings are "
                         f"{[field.name for field in fields(DemoSettings)]}.")
    if not options:
        return os.path.join(cache_dir, "demo")
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return os.path.join(cache_dir, f"demo_{digest}")


def generate_demo_data(root: str, seed: int = DemoSettings.seed, *,
                       training_tracks: int = DemoSettings.training_tracks,
                       test_tracks: int = DemoSettings.test_tracks,
                       extra_tracks: int = DemoSettings.extra_tracks,
                       instrumental_extra_tracks: int = DemoSettings.instrumental_extra_tracks,
                       duration: float = DemoSettings.duration,
                       sample_rate: int = DemoSettings.sample_rate,
                       channels: int = DemoSettings.channels) -> list[str]:
    """Writes the demo set under `root` unless it already holds one with these settings.

    Returns the descriptor paths: DemoPaired.xml, then DemoExtra.xml when there are extra tracks.
    """
    settings = DemoSettings(seed=seed, training_tracks=training_tracks, test_tracks=test_tracks,
                            extra_tracks=extra_tracks, instrumental_extra_tracks=instrumental_extra_tracks,
                            duration=float(duration), sample_rate=sample_rate, channels=channels)
    settings.validate()
    root = os.path.abspath(root)
    descriptors = _descriptor_paths(root, settings)
    if is_complete(root, settings):
        return descriptors
    os.makedirs(root, exist_ok=True)
    _clear(root)
    paired_root, extra_root = os.path.join(root, PAIRED_FOLDER), os.path.join(root, EXTRA_FOLDER)
    extra_tracks = _write_songs(paired_root, extra_root, settings)
    write_descriptor(scan_folder(paired_root, "DSD100", name="DemoPaired"), descriptors[0])
    if extra_tracks:
        write_descriptor(Database(name="DemoExtra", format="CCMixter", root=extra_root, tracks=tuple(extra_tracks)),
                         descriptors[1])
    _write_manifest(root, settings)
    return descriptors


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the built-in synthetic demo data set.")
    parser.add_argument("root", help="folder to write it to (reused when it already holds it)")
    for setting in fields(DemoSettings):
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=type(setting.default), default=setting.default)
    arguments = parser.parse_args(argv)
    settings = DemoSettings(**{setting.name: getattr(arguments, setting.name) for setting in fields(DemoSettings)})
    reused = is_complete(arguments.root, settings)
    start = time.perf_counter()
    descriptors = generate_demo_data(arguments.root, **asdict(settings))
    action = "Found" if reused else f"Generated in {time.perf_counter() - start:.1f} s"
    print(f"{action}: {settings.training_tracks} training + {settings.test_tracks} test paired and "
          f"{settings.extra_tracks} extra tracks of {settings.duration:g} s at {settings.sample_rate} Hz; "
          f"descriptors {', '.join(descriptors)}")


if __name__ == "__main__":
    main()

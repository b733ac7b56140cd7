"""Text-to-speech with exact word timings: espeak-ng (library events) and flite (segment times).

docs/benchmarks.md. espeak-ng is driven through ctypes on ``libespeak-ng.so.1`` (its command
line prints no timings); flite's ``-psdur`` gives every segment's end time, which are aligned to
the words' lexicon phones by edit distance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import shutil
import subprocess
import tempfile
import threading
import wave
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from fw.errors import DataError

_APT = "install it with `apt-get install -y espeak-ng flite` (Debian/Ubuntu)"
PAUSES = ("_", "_:", "_!", "_!_", "||", "|")


@attrs.frozen
class Speech:
    """A synthesised utterance: int16-range float samples, rate, and per-word [start, end] s."""

    samples: np.ndarray
    rate: int
    words: list[str]
    spans: np.ndarray  # [n_words, 2] seconds


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)
_EV_WORD, _EV_PHONEME = 1, 7


class Espeak:
    """The espeak-ng library in synchronous mode with phoneme events (one per process)."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as err:
            raise DataError(f"espeak-ng library {name} not found; {_APT}") from err
        # AUDIO_OUTPUT_SYNCHRONOUS = 2, espeakINITIALIZE_PHONEME_EVENTS = 1
        self.rate = int(self.lib.espeak_Initialize(2, 0, None, 1))
        if self.rate <= 0:
            raise DataError(f"espeak_Initialize failed ({self.rate}); is espeak-ng-data installed?")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        self._cb = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav, n, events) -> int:  # type: ignore[no-untyped-def]
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != 0:
            ev = events[i]
            name = (
                bytes(ev.id.string).split(b"\0")[0].decode("ascii", "replace")
                if ev.type == _EV_PHONEME
                else ""
            )
            self._events.append((ev.type, ev.text_position, ev.audio_position, name))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int) -> Speech:
        """Speak ``text`` with ``voice`` (e.g. ``en-us+m1``) at ``rate`` wpm and ``pitch``."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise DataError(f"espeak-ng has no voice {voice!r} (British English is 'en')")
            self.lib.espeak_SetParameter(1, int(rate), 0)  # espeakRATE
            self.lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
            self._chunks, self._events = [], []
            data = text.encode()
            # POS_CHARACTER = 1, flags 0 (espeakCHARS_AUTO)
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                raise DataError(f"espeak_Synth failed ({err}) on {text!r}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events = list(self._events)
        words = text.split()
        duration = len(samples) / self.rate
        return Speech(
            samples.astype(np.float64), self.rate, words, _espeak_spans(text, events, duration)
        )


def _espeak_spans(
    text: str, events: list[tuple[int, int, int, str]], duration: float
) -> np.ndarray:
    """Word spans from word events (start) and pause phonemes / next word (end).

    espeak-ng joins some unstressed function words to their neighbour under one word event
    (observed: "at a" in "look at a sandal"); such a word gets the span of the event that
    covers it. Every event must start at a word of ``text``.
    """
    words = text.split()
    starts_char, pos = [], 0
    for w in words:
        pos = text.index(w, pos)
        starts_char.append(pos + 1)  # text_position is 1-based
        pos += len(w)
    # some voices emit an extra word event at text position 0 before the first word: skipped
    event_start = {tp: ms / 1000.0 for kind, tp, ms, _ in events if kind == _EV_WORD and tp > 0}
    if (
        not event_start
        or any(tp not in starts_char for tp in event_start)
        or starts_char[0] not in event_start
    ):
        raise DataError(
            f"espeak-ng word events {sorted(event_start)} do not match the words of {text!r}"
        )
    own = [tp in event_start for tp in starts_char]
    starts = sorted(event_start.values())
    pauses = sorted(
        ms / 1000.0 for kind, _, ms, name in events if kind == _EV_PHONEME and name in PAUSES
    )
    event_spans = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else duration
        first_pause = next((p for p in pauses if p > start), None)
        if first_pause is not None and first_pause < end:
            end = first_pause
        event_spans.append((start, min(end, duration)))
    spans = np.zeros((len(words), 2), np.float64)
    k = -1
    for i in range(len(words)):
        k += int(own[i])
        spans[i] = event_spans[k]
    return spans


def espeak_word_events(text: str, voice: str = "en-us") -> list[int]:
    """1-based text positions of the word events espeak-ng emits for ``text`` (for tests)."""
    eng = Espeak()
    eng.synth(text, voice, 175, 50)
    return [tp for kind, tp, _, _ in eng._events if kind == _EV_WORD]


@functools.lru_cache(maxsize=1)
def espeak() -> Espeak:
    """An espeak-ng engine in this process (its state carries over between calls)."""
    return Espeak()


def espeak_synth(text: str, voice: str, rate: int, pitch: int) -> Speech:
    """Speak ``text`` from a pristine espeak-ng state, so the result depends on the arguments alone.

    espeak-ng keeps state between utterances (observed: the same caption comes out a few
    samples longer or shorter depending on what was spoken before, even after re-initialising
    or seeding rand), which would break item-by-item regeneration. A small helper process
    (numpy and ctypes only) initialises the library once and forks a child per caption, so
    every caption starts from the same just-initialised state (a few ms per caption).
    """
    return _server().request((text, voice, int(rate), int(pitch)))


class _EspeakServer:
    """Client side of the helper process that forks one espeak-ng child per caption."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        code = "from fw_denseav.speech import _serve; _serve()"
        self.pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.lock = threading.Lock()

    def request(self, args: tuple[str, str, int, int]) -> Speech:
        import pickle

        with self.lock:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            _send(self.proc.stdin, args)
            result = _receive(self.proc.stdout)
        if result is None:
            raise DataError(f"the espeak-ng helper process died (exit {self.proc.poll()})")
        result = pickle.loads(result)
        if isinstance(result, Exception):
            raise result
        return result


_SERVERS: dict[int, _EspeakServer] = {}


def _server() -> _EspeakServer:
    import os

    pid = os.getpid()  # one helper per process (forked or spawned workers start their own)
    if pid not in _SERVERS or _SERVERS[pid].proc.poll() is not None:
        _SERVERS[pid] = _EspeakServer()
    return _SERVERS[pid]


def _send(stream: Any, obj: object) -> None:
    import pickle
    import struct

    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: Any) -> bytes | None:
    import struct

    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    return stream.read(size)


def _serve() -> None:
    """Helper main loop: initialise espeak-ng once, fork a child per request (see espeak_synth)."""
    import os
    import pickle
    import sys

    try:
        engine: Espeak | Exception = Espeak()
    except DataError as err:
        engine = err
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        raw = _receive(stdin)
        if raw is None:
            return
        text, voice, rate, pitch = pickle.loads(raw)
        pid = os.fork()
        if pid == 0:
            try:
                if isinstance(engine, Exception):
                    raise engine
                result: object = engine.synth(text, voice, rate, pitch)
            except Exception as err:  # sent back and re-raised by the client
                result = err if isinstance(err, DataError) else DataError(str(err))
            _send(stdout, result)
            os._exit(0)
        os.waitpid(pid, 0)


def _flite() -> str:
    exe = shutil.which("flite")
    if exe is None:
        raise DataError(f"the flite command was not found; {_APT}")
    return exe


@functools.lru_cache(maxsize=4096)
def flite_lexicon(word: str) -> tuple[str, ...]:
    """The lexicon phones of one word (``flite -ps``), pauses dropped."""
    out = subprocess.run(
        [_flite(), "-ps", "-t", word, "-o", "none"], capture_output=True, text=True, check=True
    ).stdout
    return tuple(p for p in out.split() if p != "pau")


def align_phones(segments: list[str], lexicon: list[str]) -> list[int | None]:
    """For each segment, the index of the lexicon phone it aligns to (Levenshtein), or None."""
    n, m = len(segments), len(lexicon)
    cost = np.zeros((n + 1, m + 1), np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1, j - 1] + (segments[i - 1] != lexicon[j - 1])
            cost[i, j] = min(sub, cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    out: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i, j] == cost[i - 1, j - 1] + (segments[i - 1] != lexicon[j - 1]):
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1  # an extra segment: attached to a neighbour below
        else:
            j -= 1
    return out


def flite_synth(text: str, voice: str, stretch: float) -> Speech:
    """Speak ``text`` with flite ``voice`` (kal, awb, rms, slt) and ``duration_stretch``."""
    if voice == "awb_time":
        raise DataError("flite's awb_time is a talking clock that cannot say arbitrary text")
    words = text.split()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        out = subprocess.run(
            [
                _flite(),
                "-voice",
                voice,
                "--setf",
                f"duration_stretch={stretch:.4f}",
                "-psdur",
                "-t",
                text,
                "-o",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        with wave.open(str(path)) as fh:
            rate = fh.getframerate()
            samples = np.frombuffer(fh.readframes(fh.getnframes()), np.int16).astype(np.float64)
    segs = [
        (tok.rsplit(":", 1)[0], float(tok.rsplit(":", 1)[1])) for tok in out.split() if ":" in tok
    ]
    starts = [0.0] + [end for _, end in segs[:-1]]
    lexicon, owner = [], []
    for w_i, w in enumerate(words):
        phones = flite_lexicon(w.lower())
        lexicon += phones
        owner += [w_i] * len(phones)
    speech_idx = [k for k, (name, _) in enumerate(segs) if name != "pau"]
    match = align_phones([segs[k][0] for k in speech_idx], lexicon)
    seg_word: list[int | None] = [owner[j] if j is not None else None for j in match]
    for k in range(len(seg_word)):  # unmatched segments join the previous segment's word
        if seg_word[k] is None:
            seg_word[k] = (
                seg_word[k - 1] if k > 0 else next((w for w in seg_word if w is not None), 0)
            )
    duration = len(samples) / rate
    spans = np.full((len(words), 2), np.nan)
    for k, w in zip(speech_idx, seg_word, strict=True):
        assert w is not None
        start, end = starts[k], segs[k][1]
        spans[w, 0] = start if np.isnan(spans[w, 0]) else min(spans[w, 0], start)
        spans[w, 1] = end if np.isnan(spans[w, 1]) else max(spans[w, 1], end)
    if np.isnan(spans).any():
        raise DataError(f"flite alignment left a word without segments in {text!r}: {out.strip()}")
    return Speech(samples, rate, words, np.clip(spans, 0.0, duration))

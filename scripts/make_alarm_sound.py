"""Write the board's alarm sound, `src/sentinel/control/board_assets/alarm.wav`.

A two-tone siren (alternating 960 Hz and 770 Hz, the classic European "hi-lo" pattern that
people read as an emergency, not a notification chime), 1.6 s long so that the board's
loop of it is seamless. Pure Python (`wave`, `math`): nothing is downloaded, and the output
is the same bytes on every machine, so the committed file can be checked against this
script (tests/test_board.py does).

Usage::

    python scripts/make_alarm_sound.py [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import struct
import wave
from pathlib import Path

RATE = 16_000          # Hz: enough for tones under 1 kHz, and a small file (51 KB)
TONES = (960.0, 770.0)  # Hz, high then low
TONE_S = 0.4            # each tone; two pairs make one 1.6 s loop
PAIRS = 2
VOLUME = 0.6            # of full scale: loud, without clipping
FADE_S = 0.004          # a 4 ms ramp at each tone's edges: no click between tones
OUT = Path(__file__).resolve().parents[1] / "src/sentinel/control/board_assets/alarm.wav"


def samples() -> list[int]:
    """The siren as signed 16-bit samples."""
    out: list[int] = []
    per_tone = int(RATE * TONE_S)
    fade = int(RATE * FADE_S)
    for _ in range(PAIRS):
        for freq in TONES:
            for i in range(per_tone):
                edge = min(i, per_tone - 1 - i)
                gain = VOLUME * (min(edge, fade) / fade)
                value = gain * math.sin(2 * math.pi * freq * i / RATE)
                out.append(round(value * 32767))
    return out


def write(path: Path) -> None:
    """Write the siren to `path` as 16-bit mono PCM WAV."""
    data = samples()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(struct.pack(f"<{len(data)}h", *data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    write(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

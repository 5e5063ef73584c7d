"""The documentation matches the repository: README.md and docs/*.md cite only things that exist.

- every relative link resolves to a file or folder of the repository (and every #anchor to a heading);
- in docs/concepts.md, every backticked name after a link to a .py file (and every `path.py::name`) is a
  top-level function or class, or a method written `Class.method`, of that file (read with `ast`; test
  files: test functions); each concept section cites code, a test and a config line;
- every config key cited exists: `a.b.c` / `a.b=v` in params.yaml (or in an option file of group `a`
  for keys under a null default such as `sft.instructions`), `group=option[,option]` as
  conf/<group>/<option>.yaml, `+decoder.field=v` as a ModelConfig field (value among its choices)
  that params.yaml does not already set;
- in shell snippets (```bash blocks and inline code): `make` targets exist in the Makefile, `tinylm`
  subcommands and flags in cli.py, DVC stage names in dvc.yaml, `python -m` modules and repository paths
  on disk, and paths of pipeline outputs under an output of dvc.yaml;
- the README opens with the quick start: `make run` and `make test`.

Static: no imports of tinylm, no network, no subprocess; well under a second.
"""

import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONCEPTS = ROOT / "docs" / "concepts.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]

LINK_RE = re.compile(r"!?\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN_RE = re.compile(r"`([^`]+)`")
PY_NAME_RE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?$")
PATH_REF_RE = re.compile(r"([\w./-]+\.py)::([\w.]+)")
CONFIG_WORD_RE = re.compile(r"^(\+{0,2})([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)(?:=(.*))?$")
SOURCE_DIRS = ("src", "pipelines", "tests", "conf", "benchmarks", "docs")
OUTPUT_DIRS = ("data", "models", "reports", "artifacts")
FILE_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".py", ".md", ".png", ".csv", ".txt", ".bin", ".ckpt",
                 ".safetensors", ".db", ".toml", ".html")


# ---- reading markdown -------------------------------------------------------------------------------------
def lines_of(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, line, fence language or None outside fenced code) for each line; fence lines dropped."""
    out, lang = [], None
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence:
            lang = None if lang is not None else (fence.group(1) or "text")
            continue
        out.append((i, line, lang))
    return out


def prose(path: Path) -> list[tuple[int, str]]:
    return [(i, line) for i, line, lang in lines_of(path) if lang is None]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str, re.Match]]:
    return [(i, line, m) for i, line in prose(path) for m in LINK_RE.finditer(line)]


def shell_snippets(path: Path) -> list[tuple[int, str]]:
    """Lines of ```bash/sh blocks (continuations joined) and inline code spans of the prose."""
    out, pending = [], None
    for i, line, lang in lines_of(path):
        if lang in ("bash", "sh", "shell", "console"):
            text = line if pending is None else pending[1] + " " + line.strip()
            start = i if pending is None else pending[0]
            if text.rstrip().endswith("\\"):
                pending = (start, text.rstrip()[:-1])
                continue
            pending = None
            out.append((start, text))
        elif lang is None:
            out += [(i, m.group(1)) for m in CODE_SPAN_RE.finditer(re.sub(LINK_RE, "", line))]
    return out


def words_of(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose code: fall back to whitespace
        return text.split()


# ---- what the repository defines --------------------------------------------------------------------------
@cache
def defined_names(path: Path) -> frozenset[str]:
    """Top-level functions and classes of a Python file, and methods as Class.method."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{f.name}" for f in node.body
                      if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    return frozenset(names)


@cache
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def groups() -> set[str]:
    return {p.name for p in (ROOT / "conf").iterdir() if p.is_dir()}


@cache
def model_config_fields() -> tuple[frozenset[str], dict[str, tuple]]:
    """ModelConfig's field names and its CHOICES (allowed values of the string fields), via ast."""
    tree = ast.parse((ROOT / "src/tinylm/models/config.py").read_text(encoding="utf-8"))
    fields, choices = set(), {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "ModelConfig":
            fields = {s.target.id for s in node.body
                      if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "CHOICES" for t in targets):
            choices = ast.literal_eval(node.value)
    assert fields, "src/tinylm/models/config.py defines no ModelConfig dataclass"
    return frozenset(fields), choices


def model_groups() -> set[str]:
    return {k for k, v in params().items() if isinstance(v, dict) and "preset" in v}


def lookup(tree, dotted: str):
    """(found, value) of a dotted key in nested dicts."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


@cache
def dvc_stages() -> frozenset[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    names = set(stages)
    names |= {f"{name}@{item}" for name, s in stages.items() for item in s.get("foreach", [])}
    return frozenset(names)


@cache
def dvc_paths() -> frozenset[str]:
    """Every path dvc.yaml names (deps, outs, metrics, plots), foreach items expanded."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = set()
    for s in stages.values():
        items, body = (s["foreach"], s["do"]) if "foreach" in s else ([None], s)
        for item in items:
            for key in ("deps", "outs", "metrics", "plots"):
                for entry in body.get(key, []):
                    p = entry if isinstance(entry, str) else next(iter(entry))
                    out.add(p.replace("${item}", str(item)).rstrip("/"))
    return frozenset(out)


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.M)
    return frozenset(t for t in targets if not t.startswith("."))


@cache
def cli_spec() -> tuple[frozenset[str], frozenset[str]]:
    text = (ROOT / "src/tinylm/cli.py").read_text(encoding="utf-8")
    return (frozenset(re.findall(r"add_parser\(\s*\"([\w-]+)\"", text)),
            frozenset(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", text) + ["--help", "-h"]))


# ---- checks -----------------------------------------------------------------------------------------------
def check_config_word(word: str) -> str | None:
    """None if `word` (a Hydra override or a bare key) names existing config, else the reason it does not."""
    m = CONFIG_WORD_RE.match(word)
    plus, key, value = m.group(1), m.group(2), m.group(3)
    top = key.split(".")[0]
    if "." not in key:  # group=option[,option...]
        if value is None:
            return None
        if top not in groups():
            found, _ = lookup(params(), key)
            return None if found else f"{word!r}: no group conf/{top}/ and no key {key!r} in params.yaml"
        missing = [o for o in value.split(",") if not (ROOT / "conf" / top / f"{o}.yaml").is_file()]
        return f"{word!r}: no conf/{top}/{missing[0]}.yaml" if missing else None
    found, _ = lookup(params(), key)
    if plus == "+":
        if found:
            return f"{word!r}: {key} is already in params.yaml; Hydra refuses '+' for it (drop the '+')"
        rest = key.split(".", 1)[1]
        fields, choices = model_config_fields()
        if top not in model_groups() or rest not in fields:
            return f"{word!r}: '+' adds a ModelConfig field to a model group {sorted(model_groups())}; " \
                   f"{rest!r} is not one of {sorted(fields)}"
        if value is not None and rest in choices and value not in choices[rest]:
            return f"{word!r}: {rest} must be one of {choices[rest]}"
        return None
    if found:
        return None
    options = sorted((ROOT / "conf" / top).glob("*.yaml")) if top in groups() and top != "experiment" else []
    sub = key.split(".", 1)[1]
    if any(lookup(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, sub)[0] for p in options):
        return None
    hint = " (a ModelConfig field needs '+')" if top in model_groups() else ""
    return f"{word!r}: no key {key} in params.yaml or in any conf/{top}/*.yaml{hint}"


def is_config_word(word: str) -> bool:
    m = CONFIG_WORD_RE.match(word)
    if not m:
        return False
    key, value = m.group(2), m.group(3)
    top = key.split(".")[0]
    if value is None:
        return "." in key and top in params() and not key.endswith(FILE_SUFFIXES)
    return top in params() or top in groups()


def check_path_word(word: str) -> str | None:
    w = word.split("::")[0].rstrip(".,:;)").lstrip("(")
    first = w.split("/")[0]
    if "/" not in w or re.search(r"[*?<>{}$\[\]]", w):
        return None
    if first in SOURCE_DIRS:
        return None if (ROOT / w).exists() else f"{w}: no such file or folder in the repository"
    if first in OUTPUT_DIRS:
        p = w.rstrip("/")
        ok = any(p == d or p.startswith(d + "/") or d.startswith(p + "/") for d in dvc_paths())
        return None if ok else f"{w}: not under any path of dvc.yaml"
    return None


def check_command(words: list[str]) -> list[str]:
    """Commands of a shell snippet: make, tinylm, dvc, python -m / python <script>."""
    errors = []
    for i, w in enumerate(words):
        rest = words[i + 1:]
        if w == "make" and rest and not rest[0].startswith("-"):
            if rest[0] not in make_targets():
                errors.append(f"make {rest[0]}: no such Makefile target ({sorted(make_targets())})")
        elif w == "tinylm" and rest:
            subs, flags = cli_spec()
            if rest[0] not in subs:
                errors.append(f"tinylm {rest[0]}: no such subcommand in cli.py ({sorted(subs)})")
            errors += [f"tinylm {rest[0]} {f}: no such flag in cli.py" for f in rest[1:]
                       if f.startswith("--") and f.split("=")[0] not in flags]
        elif w == "dvc" and rest[:1] in (["repro"], ["commit"]) or w == "dvc" and rest[:2] == ["exp", "run"]:
            args = rest[1:] if rest[0] != "exp" else rest[2:]
            skip = False
            for a in args:
                if a in ("&&", "||", ";", "|"):
                    break
                if skip:
                    skip = False
                elif a in ("-S", "--set-param", "-n", "--name", "-m", "--message", "-j", "--jobs"):
                    skip = True
                elif not a.startswith("-") and a not in dvc_stages():
                    cmd = "exp run" if rest[0] == "exp" else rest[0]
                    errors.append(f"dvc {cmd} {a}: no such stage in dvc.yaml")
        elif w == "-m" and i > 0 and words[i - 1].startswith("python") and rest:
            mod = Path("src", *rest[0].split("."))
            if not ((ROOT / mod).with_suffix(".py").is_file() or (ROOT / mod / "__init__.py").is_file()):
                errors.append(f"python -m {rest[0]}: no module {mod}.py")
    return errors


# ---- tests ------------------------------------------------------------------------------------------------
def test_doc_files_exist():
    assert README.is_file() and CONCEPTS.is_file()


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    errors = []
    for n, _, m in links(doc):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.is_relative_to(ROOT):
            errors.append(f"{doc.name}:{n}: {target} points outside the repository")
        elif not path.exists():
            errors.append(f"{doc.name}:{n}: {target} does not exist")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            errors.append(f"{doc.name}:{n}: {target}: no heading with anchor #{anchor} in {path.name}")
    assert not errors, "\n".join(errors)


def test_concepts_names_exist_in_the_linked_files():
    errors, checked = [], 0
    for n, line in prose(CONCEPTS):
        found = list(LINK_RE.finditer(line))
        for j, m in enumerate(found):
            target = m.group(1).partition("#")[0]
            if not target.endswith(".py") or re.match(r"^[a-z]+:", target):
                continue
            path = (CONCEPTS.parent / target).resolve()
            end = found[j + 1].start() if j + 1 < len(found) else len(line)
            for name in CODE_SPAN_RE.findall(line[m.end():end]):
                checked += 1
                errors += check_name(path, name, f"concepts.md:{n}")
        for rel, name in PATH_REF_RE.findall(line):
            checked += 1
            errors += check_name(ROOT / rel, name, f"concepts.md:{n}")
    assert checked > 50, f"expected many name references in concepts.md, found {checked}"
    assert not errors, "\n".join(errors)


def check_name(path: Path, name: str, where: str) -> list[str]:
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if not path.is_file():
        return [f"{where}: {rel} does not exist"]
    if not PY_NAME_RE.match(name):
        return [f"{where}: `{name}` after the link to {rel} is not a function/class/method name"]
    if name not in defined_names(path):
        return [f"{where}: {rel} defines no `{name}` (top-level function or class, or Class.method)"]
    if path.parent.name == "tests" and not name.split(".")[-1].startswith("test"):
        return [f"{where}: `{name}` in {rel} is not a test"]
    return []


def test_every_concept_section_cites_code_test_and_config():
    sections: dict[str, list[str]] = {}
    current = None
    for _, line in prose(CONCEPTS):
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    assert len(sections) >= 11, f"concepts.md has only {len(sections)} sections"
    errors = []
    for title, body in sections.items():
        code = [ln for ln in body if re.match(r"^- code: \[", ln)]
        test = [ln for ln in body if re.match(r"^- test: \[", ln)]
        config = [ln for ln in body if re.match(r"^- config: ", ln) and CODE_SPAN_RE.search(ln)]
        if not code or not test or not config:
            errors.append(f"section {title!r}: needs '- code:', '- test:' and '- config:' lines")
        for ln in code:
            if not all(re.match(r"\.\./(src|pipelines)/", m.group(1)) for m in LINK_RE.finditer(ln)):
                errors.append(f"section {title!r}: a '- code:' link must point into src/ or pipelines/: {ln}")
        for ln in test:
            if not all(re.match(r"\.\./tests/test_\w+\.py$", m.group(1)) for m in LINK_RE.finditer(ln)):
                errors.append(f"section {title!r}: a '- test:' link must point to tests/test_*.py: {ln}")
    assert not errors, "\n".join(errors)


def test_concepts_config_lines_name_existing_config():
    errors, checked = [], 0
    for n, line in prose(CONCEPTS):
        if not re.match(r"^- config: ", line):
            continue
        for span in CODE_SPAN_RE.findall(line):
            if not CONFIG_WORD_RE.match(span):
                errors.append(f"concepts.md:{n}: `{span}` in a config line is not a config key or override")
                continue
            checked += 1
            reason = check_config_word(span)
            if reason:
                errors.append(f"concepts.md:{n}: {reason}")
    assert checked >= 11
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_config_keys_and_overrides_in_snippets_exist(doc):
    errors = []
    for n, text in shell_snippets(doc):
        for w in words_of(text):
            if is_config_word(w):
                reason = check_config_word(w)
                if reason:
                    errors.append(f"{doc.name}:{n}: {reason}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_commands_and_paths_in_snippets_exist(doc):
    errors = []
    for n, text in shell_snippets(doc):
        words = words_of(text)
        errors += [f"{doc.name}:{n}: {e}" for e in check_command(words)]
        errors += [f"{doc.name}:{n}: {e}" for w in words if (e := check_path_word(w))]
    assert not errors, "\n".join(errors)


def test_readme_layout_names_existing_folders_and_files():
    """The Layout block: top-level entries exist at the root, indented ones under src/tinylm/."""
    lines = [(n, ln) for n, ln, lang in lines_of(README) if lang == "text"]
    layout = [(n, ln) for n, ln in lines if re.match(r"^(src|conf|pipelines|tests)/\s", ln)]
    assert layout, "README.md: no Layout block (a plain ``` block listing the folders)"
    first = layout[0][0]
    block = [(n, ln) for n, ln in lines if n >= first and ln.strip()]
    block = block[:next((i for i, (n, _) in enumerate(block) if i and n != block[i - 1][0] + 1), len(block))]
    errors, base = [], ROOT
    for n, ln in block:
        base = ROOT / "src" / "tinylm" if ln.startswith(" ") else ROOT
        if not ln.startswith(" ") and ln.split()[0] == "src/tinylm/":
            base = ROOT
        names = [ln.split()[0], *re.findall(r"(?<=;)\s+([\w/]+(?:\.py|/))", ln)]
        errors += [f"README.md:{n}: {base.relative_to(ROOT) / x} does not exist" for x in names
                   if not (base / x).exists()]
    assert not errors, "\n".join(errors)


def test_readme_opens_with_the_quick_start():
    lines = README.read_text(encoding="utf-8").splitlines()
    heading = next((i for i, ln in enumerate(lines) if re.match(r"^#{2,3} .*quick start", ln, re.I)), None)
    assert heading is not None and heading < 15, "README.md must have a 'Quick start' section near the top"
    assert not any(ln.startswith("## ") for ln in lines[1:heading]), "the quick start must come first"
    start = next(i for i in range(heading + 1, len(lines)) if lines[i].startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    assert not any(ln.startswith("#") for ln in lines[heading + 1:start]), "quick start: commands first"
    commands = [ln.split("#")[0].strip() for ln in lines[start + 1:end]]
    assert "make run" in commands and "make test" in commands, commands
    assert {"run", "test"} <= make_targets()


# ---- the checker itself -----------------------------------------------------------------------------------
@pytest.mark.parametrize("word, ok", [
    ("trainer.max_steps=10", True), ("decoder=baichuan", True), ("decoder=gpt2,baichuan", True),
    ("experiment=smoke", True), ("eval.beams", True), ("sft.instructions.path=x.json", True),
    ("+decoder.position=rope", True), ("+decoder.attention=flash", True),
    ("decoder=nope", False), ("trainer.max_stepz=10", False), ("decoder.position=rope", False),
    ("+decoder.position=sideways", False), ("+decoder.n_layer=2", False), ("+trainer.position=rope", False),
    ("+decoder.nonsense=1", False),
])
def test_config_checker(word, ok):
    assert (check_config_word(word) is None) == ok, check_config_word(word)


def test_command_and_path_checkers():
    assert check_command(words_of("dvc exp run -S decoder=baichuan pretrain@decoder")) == []
    assert check_command(words_of("dvc repro nosuchstage"))
    assert check_command(words_of("make nosuchtarget"))
    assert check_command(words_of("tinylm generate --no-such-flag"))
    assert check_command(words_of("python -m tinylm.nosuchmodule"))
    assert check_path_word("pipelines/nosuch.py") and check_path_word("models/nosuchmodel")
    assert check_path_word("pipelines/pretrain.py") is None and check_path_word("models/decoder/hf/") is None
    assert not is_config_word("tokenizer.json") and is_config_word("tokenizer.vocab_size")

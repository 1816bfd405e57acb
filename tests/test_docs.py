"""The docs resolve (design §5).

- Every relative link in ``docs/*.md`` (and ``README.md``) points at a file or folder of this
  repository that exists; a ``#anchor`` into a Markdown file names one of its headings
  (GitHub's slugs).
- A link written ``[`path/to/file.py::name`](../path/to/file.py)`` (or with ``::name`` in the
  target) names a ``def``/``class`` of that file; ``Class.method`` looks inside the class; in a
  test file the name must be a test (``test_*`` or ``Test*``). The path in the text must be
  the end of the path the target resolves to, so the text cannot drift from the link.
- The index's equation map has one row per seed equation 1-9 plus the encoder block (seed §3),
  each with code (``::name``), tests, a notebook and a docs page; every notebook in
  ``notebooks/`` and every docs page is linked from the index; every equation page links to
  code, tests and a notebook.

- The notebooks' markdown cells obey the same link rules.
- Code in the prose names things that exist: ``path/file.py::name`` (a test, a function or a
  class of a file of this repository, also outside a link) and dotted names of the library
  (``minitransformer.x.y``, ``mt.x``, ``F.x``, ``nn.X``, ``models.X``, ...).
- mkdocs.yml's navigation lists every docs page and every notebook, so each is on the site
  (``python docs/build.py`` builds it; CI runs that build, not pytest).
- No file of the repository cites the project's private working notes or a path outside
  the repository.

The checks are plain text parsing (no Markdown library): fenced code and ``$...$`` math are
blanked out first (line numbers kept), so a bracket in a formula is not read as a link.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INDEX = DOCS / "index.md"
NOTEBOOK_DIR = ROOT / "notebooks"

# one page per equation group (design §5), plus the index
PAGES = ["index", "autograd", "attention", "encoder", "vit", "mlm", "mim", "clip", "dino",
         "dinov2", "training"]
SEED_ROWS = {"1", "2", "3", "4", "5", "6", "7", "8", "9", "encoder"}

DOC_FILES = sorted(DOCS.glob("*.md")) + [p for p in [ROOT / "README.md"] if p.exists()]

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\1[ \t]*$", re.M | re.S)
_DISPLAY_MATH = re.compile(r"\$\$.*?\$\$", re.S)
_INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\$)[^$\n]+?(?<![\\$])\$")
_LINK = re.compile(r"\[([^\[\]]*)\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^[ ]{0,3}\[([^\]]+)\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# link text that names a file: "dir/file.ext", "file.py", "dir/" (checked against the target)
_PATHLIKE = re.compile(r"^[\w./-]*(/[\w.-]*|\.(py|md|ipynb|txt|toml))$")
_HEADING = re.compile(r"^[ ]{0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$", re.M)


@dataclass(frozen=True)
class Link:
    source: Path  # the Markdown file
    line: int  # 1-based
    text: str
    target: str  # as written

    def where(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}: [{self.text}]({self.target})"


def _blank(match: re.Match) -> str:
    """Replace a span by spaces, keeping its newlines, so line numbers stay right."""
    return re.sub(r"[^\n]", " ", match.group(0))


def _read(path: Path) -> str:
    """A Markdown file's text, or a notebook's markdown cells joined by blank lines."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                           for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


@functools.cache
def _prose(path: Path) -> str:
    """The file's text (a notebook's markdown) with fenced code blocks and math blanked out."""
    text = _read(path)
    for pattern in (_FENCE, _DISPLAY_MATH, _INLINE_MATH):
        text = pattern.sub(_blank, text)
    return text


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def links_in(path: Path) -> list[Link]:
    """Inline links ``[text](target)`` (images too) and reference definitions ``[x]: target``."""
    text = _prose(path)
    found = [Link(path, _line_of(text, m.start()), m.group(1), m.group(2))
             for m in _LINK.finditer(text)]
    found += [Link(path, _line_of(text, m.start()), m.group(1), m.group(2))
              for m in _REF_DEF.finditer(text)]
    return sorted(found, key=lambda link: link.line)


def _relative(link: Link) -> bool:
    return not _SCHEME.match(link.target) and not link.target.startswith("//")


def _split(link: Link) -> tuple[str, str | None, str | None]:
    """``(path, name, anchor)`` of a relative link: ``name`` from ``::name`` in the target or
    in the link text, ``anchor`` from ``#anchor``."""
    target, _, anchor = link.target.partition("#")
    target, _, name_in_target = unquote(target).partition("::")
    text = link.text.replace("`", "").strip()
    name_in_text = text.partition("::")[2].strip() if "::" in text else ""
    return target, (name_in_target or name_in_text or None), (anchor or None)


def _resolve(link: Link, path: str) -> Path:
    return (link.source.parent / path).resolve() if path else link.source.resolve()


# ----------------------------------------------------------------------------- names in .py
@functools.cache
def _definitions(path: Path) -> dict[str, set[str]]:
    """Top-level names -> the names defined directly in their body (methods of a class)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defs: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = {n.name for n in getattr(node, "body", [])
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
            defs[node.name] = inner
    return defs


def _name_problem(file: Path, name: str) -> str | None:
    """Why ``name`` is not a definition in ``file`` (None when it is)."""
    if file.suffix != ".py":
        return f"'::{name}' needs a .py file, got {file.name}"
    parts = name.split(".")
    if len(parts) > 2 or not all(p.isidentifier() for p in parts):
        return f"'::{name}' is not NAME or Class.method"
    defs = _definitions(file)
    if parts[0] not in defs:
        return f"no top-level def/class {parts[0]!r} in {file.relative_to(ROOT)}"
    if len(parts) == 2 and parts[1] not in defs[parts[0]]:
        return f"class {parts[0]!r} in {file.relative_to(ROOT)} defines no {parts[1]!r}"
    if file.relative_to(ROOT).parts[0] == "tests":
        test = parts[-1].startswith("test_") or (len(parts) == 1 and parts[0].startswith("Test"))
        if not test:
            return f"{name!r} in {file.relative_to(ROOT)} is not a test (test_* / Test*)"
    return None


# ----------------------------------------------------------------------------- anchors in .md
def _slug(heading: str) -> str:
    """GitHub's heading anchor: the rendered text, lower-cased, punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.cache
def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for m in _HEADING.finditer(_prose(path)):
        slug = _slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _problem(link: Link) -> str | None:
    """Why a relative link does not resolve (None when it does)."""
    path, name, anchor = _split(link)
    file = _resolve(link, path)
    if ROOT not in file.parents and file != ROOT:
        return f"points outside the repository: {file}"
    if not file.exists():
        return f"no such file: {file.relative_to(ROOT)}"
    text_path = link.text.replace("`", "").partition("::")[0].strip()
    if _PATHLIKE.match(text_path) and \
            not ("/" + file.relative_to(ROOT).as_posix()).endswith("/" + text_path.rstrip("/")):
        return f"the text names {text_path!r} but the link goes to {file.relative_to(ROOT)}"
    if name is not None:
        why = _name_problem(file, name)
        if why:
            return why
    if anchor is not None and file.suffix == ".md" and anchor not in _anchors(file):
        return f"no heading #{anchor} in {file.relative_to(ROOT)}"
    return None


def _relative_links(path: Path) -> list[Link]:
    return [link for link in links_in(path) if _relative(link)]


def _targets(path: Path) -> set[Path]:
    return {_resolve(link, _split(link)[0]) for link in _relative_links(path)}


# ----------------------------------------------------------------------------- the tests
def test_every_page_exists():
    missing = [f"docs/{p}.md" for p in PAGES if not (DOCS / f"{p}.md").exists()]
    assert not missing, f"missing docs pages: {missing}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_relative_links_resolve(doc):
    links = _relative_links(doc)
    assert links, f"{doc.name} has no relative links"
    broken = [f"{link.where()}\n    {why}" for link in links if (why := _problem(link))]
    assert not broken, f"{len(broken)} of {len(links)} links in {doc.name} do not resolve:\n" + \
        "\n".join(broken)


def _table_after(heading_pattern: str, text: str) -> list[list[str]]:
    """The rows (cells as raw Markdown) of the first table after the matching heading."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.lstrip().startswith("#") and re.search(heading_pattern, line, re.I)),
                 None)
    assert start is not None, f"no heading matching {heading_pattern!r} in docs/index.md"
    rows = []
    for line in lines[start + 1:]:
        if line.lstrip().startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
            rows.append([c.strip() for c in cells])
        elif rows:
            break
    assert len(rows) > 2, f"no table after the heading matching {heading_pattern!r}"
    return [rows[0]] + rows[2:]  # header and body, without the |---| row


def _cell_links(cell: str) -> list[Link]:
    return [Link(INDEX, 0, m.group(1), m.group(2)) for m in _LINK.finditer(cell)]


def test_index_maps_every_seed_equation():
    """One row per seed equation (and the encoder block), each with code, tests, notebook
    and page links of the right kind (whether they resolve is checked above)."""
    text = INDEX.read_text(encoding="utf-8")
    header, *body = _table_after(r"equation map", text)
    cols = {}
    for want in ("seed", "code", "tests", "notebook", "docs"):
        hits = [i for i, h in enumerate(header) if h.lower().startswith(want)]
        assert hits, f"the equation map has no {want!r} column: {header}"
        cols[want] = hits[0]
    seen = {}
    for row in body:
        seed = row[cols["seed"]]
        m = re.search(r"\((\d+)\)", seed)
        key = m.group(1) if m else ("encoder" if "encoder" in seed.lower() else seed)
        seen[key] = row

    assert SEED_ROWS <= set(seen), f"equation map lacks rows for {sorted(SEED_ROWS - set(seen))}"

    def kinds(row: list[str], col: str) -> list[tuple[str, str | None]]:
        out = []
        for link in _cell_links(row[cols[col]]):
            path, name, _ = _split(link)
            out.append((_resolve(link, path).relative_to(ROOT).as_posix(), name))
        return out

    problems = []
    for key in sorted(SEED_ROWS):
        row = seen[key]
        if not any(p.startswith("minitransformer/") and n for p, n in kinds(row, "code")):
            problems.append(f"({key}): no `minitransformer/...py::name` link in the code column")
        if not any(p.startswith("tests/") for p, _ in kinds(row, "tests")):
            problems.append(f"({key}): no tests/ link in the tests column")
        if not any(p.startswith("notebooks/") and p.endswith(".ipynb")
                   for p, _ in kinds(row, "notebook")):
            problems.append(f"({key}): no notebooks/*.ipynb link in the notebook column")
        if not any(p.startswith("docs/") and p.endswith(".md") for p, _ in kinds(row, "docs")):
            problems.append(f"({key}): no docs/*.md link in the docs column")
    assert not problems, "\n".join(problems)


def test_every_notebook_and_page_is_linked_from_the_index():
    targets = _targets(INDEX)
    notebooks = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    pages = [DOCS / f"{p}.md" for p in PAGES if p != "index"]
    unlinked = [p.relative_to(ROOT).as_posix() for p in notebooks + pages
                if p.resolve() not in targets]
    assert not unlinked, f"not linked from docs/index.md: {unlinked}"


@pytest.mark.parametrize("page", [p for p in PAGES if p != "index"])
def test_equation_page_links_code_tests_and_a_notebook(page):
    path = DOCS / f"{page}.md"
    assert path.exists(), f"missing docs/{page}.md"
    targets = [t.relative_to(ROOT).as_posix() for t in _targets(path) if ROOT in t.parents]
    for prefix, suffix in (("minitransformer/", ".py"), ("tests/", ".py"),
                           ("notebooks/", ".ipynb")):
        assert any(t.startswith(prefix) and t.endswith(suffix) for t in targets), \
            f"docs/{page}.md links no {prefix}*{suffix}"


# ----------------------------------------------------------------------------- notebooks
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_markdown_links_resolve(notebook):
    """A notebook's markdown cells follow the docs' link rules (lines count within the
    markdown cells joined by blank lines)."""
    links = _relative_links(notebook)
    broken = [f"{link.where()}\n    {why}" for link in links if (why := _problem(link))]
    assert not broken, f"{len(broken)} of {len(links)} links in {notebook.name} do not " \
        "resolve:\n" + "\n".join(broken)


# ----------------------------------------------------------------------------- names in code
PROSE_FILES = DOC_FILES + NOTEBOOKS
PY_FILES = sorted(p for tree in ("minitransformer", "tests", "bench", "docs")
                  for p in (ROOT / tree).rglob("*.py") if "__pycache__" not in p.parts)
# `code` in prose: `dir/file.py::name` (also without a link), and dotted names of the library
_CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FILE_REF = re.compile(r"^([\w./-]+\.py)::([\w.]+)$")
_LIBRARY_ROOTS = {"minitransformer": "minitransformer", "mt": "minitransformer",
                  "F": "minitransformer.functional", "nn": "minitransformer.nn"}
_SUBPACKAGES = ["autograd", "functional", "models", "objectives", "optim", "data", "io", "eval",
                "viz", "train", "pretrained", "exercises", "backend", "testing"]
_DOTTED = re.compile(r"^(" + "|".join([*_LIBRARY_ROOTS, *_SUBPACKAGES]) +
                     r")((?:\.\w+)+)(?:\(.*\))?$")
_FILE_NAME = re.compile(r"\.(py|md|ipynb|txt|toml|json|ya?ml|safetensors)$")  # `backend.py`
# names the pages quote from PyTorch, not from this library
_FOREIGN = {"nn.MultiheadAttention": "torch.nn", "F.interpolate": "torch.nn.functional"}


@dataclass(frozen=True)
class CodeRef:
    source: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.source.relative_to(ROOT)}:{self.line}: `{self.text}`"


def code_refs(path: Path) -> list[CodeRef]:
    """The inline code spans of the prose that name a ``file.py::name`` or a dotted library
    name."""
    text = _prose(path)
    refs = []
    for m in _CODE_SPAN.finditer(text):
        span = m.group(1).strip()
        if _FILE_REF.match(span) or (_DOTTED.match(span) and not _FILE_NAME.search(span)):
            refs.append(CodeRef(path, _line_of(text, m.start()), span))
    return refs


def _file_ref_problem(span: str) -> str | None:
    """`dir/file.py::name`: some file of the repository whose path ends with ``dir/file.py``
    defines ``name`` (the linked form is checked exactly by the link test)."""
    file, name = _FILE_REF.match(span).groups()
    candidates = [p for p in PY_FILES
                  if ("/" + p.relative_to(ROOT).as_posix()).endswith("/" + file.lstrip("./"))]
    if not candidates:
        return f"no file of the repository ends with {file!r}"
    problems = [_name_problem(p, name) for p in candidates]
    if all(problems):
        return "; ".join(problems)
    return None


def _dotted_problem(span: str) -> str | None:
    """`F.softmax`, `mt.testing.gradcheck`, `minitransformer.train.make_recipe`, ...: each
    part is an attribute (or a submodule) of the one before."""
    head, rest = _DOTTED.match(span).groups()
    name = head + rest
    if name in _FOREIGN:
        return None
    module = _LIBRARY_ROOTS.get(head, f"minitransformer.{head}")
    try:
        obj = importlib.import_module(module)
    except ImportError as err:
        return f"cannot import {module}: {err}"
    path = module
    for part in rest.strip(".").split("."):
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            try:
                obj = importlib.import_module(f"{path}.{part}")
            except ImportError:
                return f"{path} has no attribute or submodule {part!r}"
        path = f"{path}.{part}"
    return None


def _code_ref_problem(ref: CodeRef) -> str | None:
    return _file_ref_problem(ref.text) if _FILE_REF.match(ref.text) else \
        _dotted_problem(ref.text)


@pytest.mark.parametrize("doc", PROSE_FILES, ids=[p.name for p in PROSE_FILES])
def test_code_names_in_prose_exist(doc):
    """Every test, function or class the prose names in code exists under that name."""
    refs = code_refs(doc)
    broken = [f"{ref.where()}\n    {why}" for ref in refs if (why := _code_ref_problem(ref))]
    assert not broken, f"{len(broken)} of {len(refs)} names in {doc.name} do not exist:\n" + \
        "\n".join(broken)


# ----------------------------------------------------------------------------- the site
def _nav_entries() -> list[str]:
    """The page paths listed in mkdocs.yml's nav (read as text: one `- path` or
    `- Title: path` per line)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.(?:md|ipynb))\s*$", nav, re.M)


def test_every_page_and_notebook_is_in_the_site_nav():
    entries = set(_nav_entries())
    want = {f"docs/{p.name}" for p in sorted(DOCS.glob("*.md"))} | \
        {f"notebooks/{p.name}" for p in NOTEBOOKS}
    assert want - entries == set(), f"not in mkdocs.yml's nav: {sorted(want - entries)}"
    staged = {"index.md"} | want  # docs/build.py stages README.md as the home page index.md
    assert entries - staged == set(), f"mkdocs.yml's nav lists missing pages: " \
        f"{sorted(entries - staged)}"


# ----------------------------------------------------------------------------- private notes
_PRIVATE = "methods" + ".md"  # spelled in two parts, so this file does not match itself


def _repository_files() -> list[Path]:
    """The files git tracks or would track (untracked, not ignored)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


# the workspace around the checkout (spelled in parts, so this file does not match itself)
_OUTSIDE = ("../" + "shared/", "/work" + "/main", "/work" + "/shared", "/work" + "/.")


def test_no_file_cites_the_private_working_notes():
    """The project stands alone: no file names the working notes the reference facts were
    first collected in, or a path outside the repository; pages cite the primary sources
    (docs/references.md) instead."""
    hits = []
    for path in _repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for needle in (_PRIVATE, *_OUTSIDE):
            hits += [f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: "
                     f"{needle}" for m in re.finditer(re.escape(needle), text)]
    assert not hits, f"files that cite something outside the repository: {hits}"


# ----------------------------------------------------------------------------- the checker
def test_the_checker_catches_bad_links(tmp_path):
    """The parser itself: math and code are not links; wrong files, names and anchors are
    caught; right ones pass."""
    doc = DOCS / "_probe.md"  # resolved relative to docs/, never written to disk
    good = [
        Link(doc, 1, "`minitransformer/nn/attention.py::MultiHeadAttention`",
             "../minitransformer/nn/attention.py"),
        Link(doc, 1, "`MultiHeadAttention.forward`",
             "../minitransformer/nn/attention.py::MultiHeadAttention.forward"),
        Link(doc, 1, "`test_docs.py::test_the_checker_catches_bad_links`", "../tests/test_docs.py"),
        Link(doc, 1, "index", "index.md#equation-map"),
        Link(doc, 1, "`nn/`", "../minitransformer/nn"),
        Link(doc, 1, "`nn.PatchEmbed`", "vit.md"),
    ]
    bad = [
        Link(doc, 1, "x", "../minitransformer/no_such_file.py"),
        Link(doc, 1, "`minitransformer/nn/attention.py::NoSuchThing`",
             "../minitransformer/nn/attention.py"),
        Link(doc, 1, "`MultiHeadAttention.no_such_method`",
             "../minitransformer/nn/attention.py::MultiHeadAttention.no_such_method"),
        Link(doc, 1, "`nn/block.py::MultiHeadAttention`", "../minitransformer/nn/attention.py"),
        Link(doc, 1, "`nn/block.py`", "../minitransformer/nn/attention.py"),
        Link(doc, 1, "`ention.py`", "../minitransformer/nn/attention.py"),
        Link(doc, 1, "`tests/test_docs.py::links_in`", "../tests/test_docs.py"),
        Link(doc, 1, "index", "index.md#no-such-heading"),
        Link(doc, 1, "x", "../../outside.md"),
    ]
    assert [(link.target, _problem(link)) for link in good if _problem(link)] == []
    assert all(_problem(link) for link in bad), [link for link in bad if not _problem(link)]

    probe = tmp_path / "probe.md"
    probe.write_text(
        "# A title\n"
        "see [the code](../x.py) and $[a](b)$ and $$\n[c](d)\n$$\n"
        "```\n[e](f)\n```\n"
        "[g]: ./ref.md\n"
        "an [external](https://example.org) link\n",
        encoding="utf-8",
    )
    found = [(link.line, link.target) for link in links_in(probe)]
    assert found == [(2, "../x.py"), (8, "./ref.md"), (9, "https://example.org")]
    assert _slug("Eq. 2: scaled dot-product `attention`") == "eq-2-scaled-dot-product-attention"


def test_the_name_checker_catches_stale_names(tmp_path):
    """Names that exist pass; a renamed function, a missing test or submodule are caught; file
    names and code blocks are not read as names."""
    def problem(text: str) -> str | None:
        return _code_ref_problem(CodeRef(DOCS / "_probe.md", 1, text))

    good = ["F.softmax", "F.scaled_dot_product_attention(q, k, v, mask=None, scale=None)",
            "mt.testing.gradcheck", "minitransformer.train.make_recipe", "nn.MultiHeadAttention",
            "models.CLIP", "objectives/dino.py::dino_loss",
            "tests/test_docs.py::test_the_name_checker_catches_stale_names",
            "nn/attention.py::MultiHeadAttention.forward"]
    bad = ["F.no_such_op", "mt.no_such_module.f", "minitransformer.train.no_such_recipe",
           "tests/test_docs.py::test_no_such_test", "test_docs.py::links_in",
           "objectives/dino.py::no_such_loss", "no/such_file.py::f"]
    assert [(t, problem(t)) for t in good if problem(t)] == []
    assert [t for t in bad if not problem(t)] == []

    probe = tmp_path / "probe.md"
    probe.write_text("see `F.softmax` and `backend.py` and `x = F.gone`\n"
                     "```\n`F.in_a_block`\n```\n"
                     "and `tests/test_docs.py::test_x`\n", encoding="utf-8")
    assert [(r.line, r.text) for r in code_refs(probe)] == \
        [(1, "F.softmax"), (5, "tests/test_docs.py::test_x")]

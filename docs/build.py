"""Build the documentation site: docs/*.md and every notebook, executed, as pages of one site.

    pip install -e ".[docs]" && python docs/build.py            # full size  -> site/
    python docs/build.py --tiny                                 # MINITRANSFORMER_TINY=1 (CI)

Steps:

1. **Stage** the sources into ``build/site-src/`` (mkdocs.yml's ``docs_dir``) with the
   repository's own layout: ``README.md`` as the home page ``index.md``, ``docs/*.md``,
   ``notebooks/*.ipynb``, and the trees the pages link to (``minitransformer/``, ``tests/``,
   ``bench/``, ``LICENSE``). A page's ``../minitransformer/functional/attention.py`` link then
   resolves on the site exactly as it does in the repository. A link to a folder
   (``../minitransformer/optim``) is pointed at a generated ``index.md`` that lists the
   folder's files, since a static site cannot list a folder.
2. **Execute** every notebook top to bottom in a fresh kernel of this interpreter, from the
   staged ``notebooks/`` folder (so whatever a notebook writes stays under ``build/``), with
   ``MINITRANSFORMER_TINY=1`` when ``--tiny`` is given (or already set). Exercise cells are left
   as the learner finds them, so their output is the checker's "not attempted yet" reminder.
   A failing cell stops the build with the notebook's name and the traceback.
3. **Render** with ``mkdocs build --strict`` (MkDocs Material + mkdocs-jupyter). The build
   fetches nothing: no web fonts, no plugin that downloads. Only the browser fetches, when a
   page is viewed: MathJax, which typesets the equations, and the small script with which
   Material's offline plugin lets search work on a site opened from disk. Strict mode makes a
   link to a missing file, a missing heading or a missing page an error.
4. **Check** that every notebook page carries its pictures (an ``<img>`` with
   ``data:image``), and print how long each step took.

``--committed`` stages the notebooks as committed at ``HEAD`` (``git show``) instead of the
working tree, for a build while someone is mid-edit. ``--no-execute`` renders the notebooks
without running them (a quick check of the pages and links only; step 4 is skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "build" / "site-src"  # mkdocs.yml: docs_dir
SITE = ROOT / "site"  # mkdocs.yml: site_dir
SOURCE_TREES = ["minitransformer", "tests", "bench"]
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.safetensors", ".ipynb_checkpoints")
KERNEL_NAME = "minitransformer-docs"

# MathJax 3 settings: typeset the spans pymdownx.arithmatex marks (docs pages) and the
# rendered markdown cells of the notebook pages, whose math is still written $...$.
MATHJAX_CONFIG = """\
window.MathJax = {
  tex: {
    inlineMath: [["\\\\(", "\\\\)"], ["$", "$"]],
    displayMath: [["\\\\[", "\\\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
    tags: "ams"
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-RenderedMarkdown|jp-MarkdownOutput"
  }
};
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
"""

_LINK = re.compile(r"(\[[^\[\]]*\]\(\s*<?)([^()\s<>#]+)(#[^()\s<>]*)?(>?(?:\s+\"[^\"]*\")?\s*\))")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)


def log(msg: str) -> None:
    print(f"[docs] {msg}", flush=True)


# ----------------------------------------------------------------------------- 1. stage
def stage(committed: bool) -> list[Path]:
    """Copy the sources into STAGE; returns the staged notebooks."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "docs").mkdir(parents=True)
    shutil.copy2(ROOT / "README.md", STAGE / "index.md")
    shutil.copy2(ROOT / "LICENSE", STAGE / "LICENSE")
    for page in sorted((ROOT / "docs").glob("*.md")):
        shutil.copy2(page, STAGE / "docs" / page.name)
    for tree in SOURCE_TREES:
        shutil.copytree(ROOT / tree, STAGE / tree, ignore=SKIP)
    (STAGE / "assets").mkdir()
    (STAGE / "assets" / "mathjax-config.js").write_text(MATHJAX_CONFIG, encoding="utf-8")

    nb_dir = STAGE / "notebooks"
    nb_dir.mkdir()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if committed:
        listed = subprocess.run(["git", "ls-tree", "--name-only", "HEAD", "notebooks/"],
                                cwd=ROOT, check=True, capture_output=True, text=True).stdout
        notebooks = [ROOT / p for p in sorted(listed.split()) if p.endswith(".ipynb")]
        for nb in notebooks:
            text = subprocess.run(["git", "show", f"HEAD:notebooks/{nb.name}"], cwd=ROOT,
                                  check=True, capture_output=True, text=True).stdout
            (nb_dir / nb.name).write_text(text, encoding="utf-8")
    else:
        for nb in notebooks:
            shutil.copy2(nb, nb_dir / nb.name)
    # Helper scripts a notebook launches beside itself (notebook 12's mpiexec demo script).
    for script in sorted((ROOT / "notebooks").glob("_*.py")):
        shutil.copy2(script, nb_dir / script.name)

    folders = _point_folder_links_at_listings([STAGE / "index.md",
                                               *sorted((STAGE / "docs").glob("*.md"))])
    log(f"staged {len(notebooks)} notebooks, {len(list((STAGE / 'docs').glob('*.md')))} pages "
        f"and {len(folders)} folder listings into {STAGE.relative_to(ROOT)}/")
    return sorted(nb_dir.glob("*.ipynb"))


def _point_folder_links_at_listings(pages: list[Path]) -> set[Path]:
    """Rewrite each relative link to a folder as a link to that folder's generated index.md
    (outside fenced code), and write those listings."""
    folders: set[Path] = set()

    def fix(page: Path, m: re.Match) -> str:
        target = m.group(2)
        if _SCHEME.match(target) or target.startswith("/"):
            return m.group(0)
        path = (page.parent / target).resolve()
        if not path.is_dir() or STAGE.resolve() not in path.parents:
            return m.group(0)
        folders.add(path)
        return m.group(1) + target.rstrip("/") + "/index.md" + (m.group(3) or "") + m.group(4)

    for page in pages:
        text = page.read_text(encoding="utf-8")
        pieces, last = [], 0
        for fence in _FENCE.finditer(text):  # leave code blocks alone
            pieces.append(_LINK.sub(lambda m, p=page: fix(p, m), text[last:fence.start()]))
            pieces.append(fence.group(0))
            last = fence.end()
        pieces.append(_LINK.sub(lambda m, p=page: fix(p, m), text[last:]))
        page.write_text("".join(pieces), encoding="utf-8")

    for folder in sorted(folders):
        rel = folder.relative_to(STAGE.resolve()).as_posix()
        lines = [f"# `{rel}/`", ""]
        for entry in sorted(folder.iterdir()):
            if entry.name == "index.md":
                continue
            if entry.is_dir():
                lines.append(f"- `{entry.name}/`")
            else:
                lines.append(f"- [`{entry.name}`]({entry.name})")
        (folder / "index.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folders


# ----------------------------------------------------------------------------- 2. execute
def execute(notebooks: list[Path], tiny: bool, timeout: int) -> dict[str, float]:
    """Run each notebook in place (outputs written into the staged copy); seconds per book."""
    import nbclient
    import nbformat

    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as kernels:
        # a kernelspec naming this interpreter, so no other python3 kernel can be picked up
        spec_dir = Path(kernels) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "minitransformer docs", "language": "python"}))
        env = {
            "JUPYTER_PATH": os.pathsep.join(filter(None, [kernels,
                                                          os.environ.get("JUPYTER_PATH")])),
            # the kernel imports the package from this checkout, installed or not
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
        if tiny:
            env["MINITRANSFORMER_TINY"] = "1"
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            for path in notebooks:
                nb = nbformat.read(path, as_version=4)
                client = nbclient.NotebookClient(
                    nb, kernel_name=KERNEL_NAME, timeout=timeout,
                    startup_timeout=300,  # a busy 2-core CI machine can be slow to start one
                    resources={"metadata": {"path": str(path.parent)}})  # the kernel's cwd
                start = time.perf_counter()
                try:
                    client.execute()
                except Exception as err:  # CellExecutionError, timeouts, a dead kernel
                    raise SystemExit(f"[docs] notebook {path.name} failed to execute:\n{err}") \
                        from err
                seconds[path.name] = time.perf_counter() - start
                nbformat.write(nb, path)
                log(f"executed {path.name} in {seconds[path.name]:.1f} s")
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return seconds


# ----------------------------------------------------------------------------- 3-4. render
def render() -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
                    "--config-file", str(ROOT / "mkdocs.yml")], cwd=ROOT, env=env, check=True)


def check_pictures(notebooks: list[Path]) -> None:
    """Every notebook page shows the pictures its cells drew."""
    missing = []
    for nb in notebooks:
        page = SITE / "notebooks" / (nb.stem + ".html")
        html = page.read_text(encoding="utf-8") if page.exists() else ""
        if not re.search(r"<img[^>]*src=\"data:image/", html):
            missing.append(page.relative_to(ROOT).as_posix())
    if missing:
        raise SystemExit(f"[docs] notebook pages without a picture: {missing}")
    log(f"every notebook page has pictures ({len(notebooks)} pages)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        help="execute the notebooks with MINITRANSFORMER_TINY=1 (as CI does)")
    parser.add_argument("--committed", action="store_true",
                        help="stage the notebooks as committed at HEAD, not the working tree")
    parser.add_argument("--no-execute", action="store_true",
                        help="render the notebooks without running them (links and pages only)")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds one notebook cell may run (default 1800)")
    args = parser.parse_args(argv)
    tiny = args.tiny or os.environ.get("MINITRANSFORMER_TINY", "") not in ("", "0")

    t0 = time.perf_counter()
    notebooks = stage(args.committed)
    t1 = time.perf_counter()
    seconds = {} if args.no_execute else execute(notebooks, tiny, args.timeout)
    t2 = time.perf_counter()
    render()
    t3 = time.perf_counter()
    if not args.no_execute:
        check_pictures(notebooks)
    mode = "tiny" if tiny else "full"
    log(f"built {SITE.relative_to(ROOT)}/ ({mode} notebooks) in {t3 - t0:.0f} s: staging "
        f"{t1 - t0:.1f} s, notebooks {t2 - t1:.0f} s"
        + (f" (slowest {max(seconds, key=seconds.get)}, {max(seconds.values()):.0f} s)"
           if seconds else "")
        + f", mkdocs {t3 - t2:.0f} s")


if __name__ == "__main__":
    main()

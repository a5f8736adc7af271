"""MkDocs hooks: publish the benchmark tables and figures of `benchmarks/results/`.

The benchmark scripts write their tables (Markdown) and figures into `benchmarks/results/`;
the documentation shows them without keeping a second copy in `docs/`:

- every non-Markdown file of `benchmarks/results/` (figures, CSV) is added to the site under
  `results/`;
- in a page, a line ``!include-results GLOB [COMMAND]`` is replaced by the Markdown files of
  `benchmarks/results/` matching GLOB (sorted), with their headings moved below the page's
  section level and their relative links pointing at `results/`; ``!include-figures GLOB
  [COMMAND]`` embeds the matching images. GLOB may list alternatives, ``a.md|b.md``: the
  first that matches anything is used (e.g. the full run, else the quick one). When nothing
  matches (the benchmark has not been run yet), a note says that COMMAND produces it, so the
  build stays strict and honest;
- a line ``!include-families`` is replaced by the families table generated from emf_jax's
  registry (`emf_jax.transforms.family_table_markdown`), so the docs never list a family or
  a kind of map that the code does not have.

The formulas render offline: `on_post_build` copies MathJax 3 (the ``es5`` bundle and its
fonts, from the ``django-static-mathjax`` package of the docs extra, which holds nothing but
MathJax's files) into the site under ``assets/mathjax/``, and mkdocs.yml loads it from there
instead of from a CDN.

`ExampleSections` is a griffe extension (loaded by mkdocstrings from this file, see
mkdocs.yml): the project's docstrings title their doctests "Example:", which griffe's Google
parser does not know; it reads them as "Examples:" so they render as code. It also shows
Sphinx roles (``:func:`name` ``) as plain code, since the pages are Markdown.
"""
from __future__ import annotations

import fnmatch
import re
import shutil
from pathlib import Path
from typing import Any

import griffe
from mkdocs.structure.files import File, Files

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
SITE_PREFIX = "results"
_IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif")
_DIRECTIVE = re.compile(r"^!(include-results|include-figures)\s+(\S+)(?:\s+(.*))?$",
                        re.MULTILINE)
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")
_HEADING = re.compile(r"^(#{1,6})(\s)", re.MULTILINE)
_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_SPHINX_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|obj|exc):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    """Reads a docstring section titled "Example:" as Google-style "Examples:"."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _EXAMPLE_TITLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _SPHINX_ROLE.sub(r"`\1`", value)


def _result_files(pattern: str) -> list[Path]:
    if not RESULTS_DIR.is_dir():
        return []
    files = sorted(p for p in RESULTS_DIR.rglob("*") if p.is_file())
    for alternative in pattern.split("|"):
        matches = [p for p in files
                   if fnmatch.fnmatch(p.relative_to(RESULTS_DIR).as_posix(), alternative)]
        if matches:
            return matches
    return []


def on_files(files: Files, config: Any) -> Files:
    for path in _result_files("*"):
        if path.suffix == ".md":
            continue  # inlined by on_page_markdown instead
        uri = f"{SITE_PREFIX}/{path.relative_to(RESULTS_DIR).as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


MATHJAX_SITE_DIR = "assets/mathjax"


def _mathjax_source() -> Path:
    """The directory of MathJax 3's ``es5`` bundle inside the installed package."""
    try:
        import mathjax  # the django-static-mathjax distribution: static files only
    except ImportError as err:
        raise RuntimeError("the docs need MathJax: pip install -e '.[docs]' (the "
                           "django-static-mathjax package ships it)") from err
    source = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-mml-chtml.js").is_file():
        raise RuntimeError(f"no MathJax es5 bundle at {source}")
    return source


def on_post_build(config: Any) -> None:
    source = _mathjax_source()
    target = Path(config["site_dir"]) / MATHJAX_SITE_DIR
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "tex-mml-chtml.js", target / "tex-mml-chtml.js")
    # CommonHTML output loads its fonts relative to the script's own URL.
    fonts = Path("output") / "chtml" / "fonts"
    shutil.copytree(source / fonts, target / fonts, dirs_exist_ok=True)


def _relink(text: str, base: str) -> str:
    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^([a-z]+:|/|#)", target):
            return match.group(0)
        return f"{match.group(1)}{SITE_PREFIX}/{base}{target}{match.group(3)}"

    return _LINK.sub(fix, text)


def _demote(text: str, levels: int) -> str:
    return _HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + levels) + m.group(2), text)


def _missing(pattern: str, command: str | None) -> str:
    how = f" Run `{command}` from the repository root to produce it." if command else ""
    wanted = " or ".join(f"`{p}`" for p in pattern.split("|"))
    return (f'!!! note "Not generated yet"\n    No file in `benchmarks/results/` matches '
            f"{wanted}.{how}\n")


def _include(kind: str, pattern: str, command: str | None) -> str:
    if kind == "include-figures":
        images = [p for p in _result_files(pattern) if p.suffix.lower() in _IMAGE_SUFFIXES]
        if not images:
            return _missing(pattern, command)
        return "\n\n".join(
            f"![{p.stem}]({SITE_PREFIX}/{p.relative_to(RESULTS_DIR).as_posix()})"
            for p in images) + "\n"
    tables = [p for p in _result_files(pattern) if p.suffix == ".md"]
    if not tables:
        return _missing(pattern, command)
    parts = []
    for path in tables:
        base = path.parent.relative_to(RESULTS_DIR).as_posix()
        base = "" if base == "." else base + "/"
        parts.append(_demote(_relink(path.read_text(encoding="utf-8"), base), 2))
    return "\n\n".join(parts) + "\n"


_FAMILIES_DIRECTIVE = re.compile(r"^!include-families[ \t]*$", re.MULTILINE)


def _families_table() -> str:
    from emf_jax.transforms import family_table_markdown

    return family_table_markdown()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if _FAMILIES_DIRECTIVE.search(markdown):
        markdown = _FAMILIES_DIRECTIVE.sub(lambda m: _families_table().rstrip("\n"), markdown)
    return _DIRECTIVE.sub(
        lambda m: _include(m.group(1), m.group(2), (m.group(3) or "").strip("` ") or None),
        markdown)

"""The docs' code examples run, and the files they include are the files in the repository.

For every page docs/*.md:

- its ```python blocks run in order, in one namespace, in an empty temporary folder, with the
  fixture plugins (demo, broken, clash) and the example backend installed by pip
  (tests/fixtures/plugin_env.py); the environment, the config flags, the default dtype, the
  current backend and the plugins are restored afterwards. A block preceded by
  `<!-- no-test -->` is not run (use sparingly);
- a block preceded by `<!-- include: PATH -->` must equal the repository file PATH (it is
  shown, not run: tests/test_plugins.py exercises those files);
- a block preceded by `<!-- file: NAME -->` is written to NAME in the temporary folder before
  the blocks after it run (a recipe TOML the page then loads, say);
- relative links point at files that exist.
"""
from __future__ import annotations

import contextvars
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import lamina
from lamina import config, plugins

from fixtures import plugin_env

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# the broken and clashing fixture plugins are installed too, and warn on every discovery
pytestmark = pytest.mark.filterwarnings("ignore::lamina.plugins.PluginWarning")

REQUIRED_PAGES = ("architecture.md", "writing-a-plugin.md", "writing-a-backend.md")

FENCE = re.compile(r"^```([\w+-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*(.*?)\s*-->\s*$")
DIRECTIVE = re.compile(r"^(no-test|include:\s*(\S+)|file:\s*(\S+))$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int                  # of the opening fence, 1-based
    lang: str
    code: str
    directive: str | None      # "no-test", "include", "file" or None
    argument: str | None       # the included path or the file name

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def parse(page: Path) -> list[Block]:
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        directive = argument = None
        marker = MARKER.search(before) if before.lstrip().startswith("<!--") else None
        if marker:
            found = DIRECTIVE.match(marker.group(1))
            if found is None:
                raise AssertionError(f"{page.relative_to(REPO)}:{line - 1}: unknown marker <!-- {marker.group(1)} -->; "
                                     f"expected no-test, include: PATH or file: NAME")
            directive = found.group(1).split(":")[0]
            argument = found.group(2) or found.group(3)
        blocks.append(Block(page, line, match.group(1), match.group(2), directive, argument))
    return blocks


def _page_id(page: Path) -> str:
    return page.name


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    with plugin_env.activated(plugin_env.install(tmp_path_factory)) as target:
        yield target


@pytest.fixture
def isolated(installed, tmp_path, monkeypatch):
    """An empty working folder; environment, flags, dtype, backend choice and plugins restored after."""
    monkeypatch.chdir(tmp_path)
    saved_env = dict(os.environ)
    plugins.reset()
    try:
        yield tmp_path
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        config.set_flag("backend", None)
        lamina.set_default_dtype("float32")
        plugins.reset()


def test_the_required_pages_exist_and_have_tested_code():
    for name in REQUIRED_PAGES:
        page = DOCS / name
        assert page.is_file(), f"docs/{name} is missing"
        runnable = [b for b in parse(page) if b.lang == "python" and b.directive is None]
        assert runnable, f"docs/{name} has no Python block that the tests run"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_code_runs(page, isolated):
    blocks = parse(page)
    namespace = {"__name__": f"docs_{page.stem.replace('-', '_')}"}

    def run_all():
        for block in blocks:
            if block.directive == "file":
                (isolated / block.argument).write_text(block.code)
            if block.lang != "python" or block.directive is not None:
                continue
            code = compile(block.code, block.where, "exec")
            try:
                exec(code, namespace)
            except Exception as err:
                raise AssertionError(f"the Python block at {block.where} failed: {type(err).__name__}: {err}") from err

    contextvars.copy_context().run(run_all)


INCLUDES = [pytest.param(block, id=f"{page.name}:{block.argument}")
            for page in PAGES for block in parse(page) if block.directive == "include"]


@pytest.mark.parametrize("block", INCLUDES)
def test_included_file_is_literally_the_repository_file(block):
    path = REPO / block.argument
    assert path.is_file(), f"{block.where} includes {block.argument}, which does not exist"
    assert block.code == path.read_text(), (f"{block.where} no longer matches {block.argument}; "
                                            f"copy the file into the page again")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"

"""The documentation keeps its promises: README's set-up commands, links that resolve, a page for
every command naming each of its options, one table of every environment variable the code reads,
and every ```console example run as written against a real registry.

A ```console block is a transcript: `$ COMMAND` lines (run with bash, `cas` first on PATH) each
followed by what it printed, stdout and stderr together. The examples of one page run in order
in one fresh store and working directory, against a registry of the standard test images that
the page calls 127.0.0.1:5000 (and localhost:5000, the same registry under another name, as a
second registry to cas); the store is shown at its default place, ~/.cache/cas. An example
whose output has an `error:` line (or skopeo's `level=fatal`) must exit non-zero, any other
zero, unless its command ends in a comment `# exit N`. A `...` line stands for any lines.
Timings, ages and clock times are compared as shapes, column padding as one space.

To refresh the outputs after a change in what cas prints, run
`.venv/bin/python tests/test_readme.py docs/commands/pull.md ...` and review the diff.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.registry import Registry  # noqa: E402
from support.standard import standard_images  # noqa: E402

DOC_HOST, DOC_ALIAS = "127.0.0.1:5000", "localhost:5000"
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
BLOCK = re.compile(r"^```console\n(.*?)^```$", re.M | re.S)
# What changes from run to run, each replaced by its shape before comparing.
VOLATILE = [
    (re.compile(r"\(\d+\.\d+s\)"), "(Ns)"),
    (re.compile(r"\b\d+(\.\d+)?[smhd] ago\b"), "N ago"),
    (re.compile(r"\b\d\d:\d\d:\d\d\.\d{3}\b"), "HH:MM:SS"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b"), "TIME"),
    (re.compile(r"\bin \d+\.\d+ s\b"), "in N s"),
    (re.compile(r'"seconds": \d+(\.\d+)?'), '"seconds": N'),
]


def examples(page: Path) -> list[tuple[str, str]]:
    """(command, expected output) for every `$ ` line of the page's ```console blocks, in order."""
    found: list[tuple[str, str]] = []
    for block in BLOCK.findall(page.read_text()):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], ""))
            elif found:
                found[-1] = (found[-1][0], found[-1][1] + line + "\n")
            else:
                raise AssertionError(f"{page}: a ```console block must start with a `$ ` line: {line!r}")
    return found


def shape(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return "\n".join(re.sub(r"[ \t]+", " ", line).strip() for line in text.strip().splitlines())


def matches(expected: str, actual: str) -> bool:
    lines = [re.escape(line) if line != "..." else r"(?:[^\n]*\n?)*?" for line in shape(expected).splitlines()]
    return re.fullmatch(r"\n?".join(lines), shape(actual)) is not None if lines else not actual.strip()


class Session:
    """One page's run: a store, a working directory and a Docker config of its own."""

    def __init__(self, registry: Registry, work: Path) -> None:
        self.port = registry.port
        self.work = work
        (work / "docker").mkdir(parents=True)
        bin_dir = str(Path(sys.executable).parent)
        drop = ("CAS_PLATFORM", "DOCKER_DEFAULT_PLATFORM", "CAS_JOBS", "CAS_CONNECTIONS", "CAS_TIMEOUT", "CAS_MIN_RATE")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(
            PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            CAS_HOME=str(work / "home"),
            DOCKER_CONFIG=str(work / "docker"),
            REGISTRY_AUTH_FILE=str(work / "no-containers-auth.json"),
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )

    def run(self, command: str) -> tuple[int, str]:
        real = command.replace(DOC_HOST, f"127.0.0.1:{self.port}").replace(DOC_ALIAS, f"localhost:{self.port}")
        real = real.replace("~/.cache/cas", self.env["CAS_HOME"])
        proc = subprocess.run(
            ["bash", "-c", real],
            cwd=self.work,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=300,
        )
        out = proc.stdout.replace(f"127.0.0.1:{self.port}", DOC_HOST).replace(f"localhost:{self.port}", DOC_ALIAS)
        return proc.returncode, out.replace(self.env["CAS_HOME"], "~/.cache/cas").replace(f"{self.work}/", "")


def _pages_with_examples() -> list[Path]:
    return [page for page in PAGES if examples(page)]


@pytest.fixture(scope="module")
def doc_registry(tmp_path_factory):
    """A registry of this module's own: the examples push to it, and must see it as the page does."""
    with Registry(tmp_path_factory.mktemp("doc-registry")) as registry:
        standard_images().push(registry)
        yield registry


@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_examples_print_what_the_page_shows(page, doc_registry, tmp_path):
    session = Session(doc_registry, tmp_path / "work")
    for command, expected in examples(page):
        code, out = session.run(command)
        assert matches(expected, out), f"{page.name}: `$ {command}` printed:\n{out}\nthe page shows:\n{expected}"
        said = re.search(r"# exit (\d+)", command)  # `$ cas verify   # exit 1: ...`
        failing = re.search(r"^error: |^time=.* level=fatal ", expected, re.M) is not None  # cas's or skopeo's
        ok = code == int(said.group(1)) if said else (code != 0) == failing
        assert ok, f"{page.name}: `$ {command}` exited {code}:\n{out}"


def test_readme_names_the_demo_and_the_test_command_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^bash scripts/demo\b", readme, re.M)
    assert re.search(r"^bash \.ci/run\b", readme, re.M)
    assert "pytest" in (ROOT / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 350


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lowercase, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", BLOCK.sub("", page.read_text()), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_between_pages_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```$", "", page.read_text(), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links that lead nowhere:\n" + "\n".join(broken)


def _options(command: str) -> set[str]:
    """The long options `cas COMMAND --help` lists."""
    cas = str(Path(sys.executable).parent / "cas")
    text = subprocess.run([cas, command, "--help"], capture_output=True, text=True, check=True, env=os.environ).stdout
    return set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z-]+)", text.split("Options:", 1)[1], re.M)) - {"--help"}


def _commands() -> list[str]:
    """The commands `cas --help` lists."""
    cas = str(Path(sys.executable).parent / "cas")
    text = subprocess.run([cas, "--help"], capture_output=True, text=True, check=True, env=os.environ).stdout
    return re.findall(r"^ {2}([a-z]+) ", text.split("Commands:", 1)[1], re.M)


def test_cas_help_lists_the_commands():
    assert {"pull", "export", "verify"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_each_command_has_a_page_naming_every_option_and_exit_code(command):
    page = ROOT / "docs" / "commands" / f"{command}.md"
    text = page.read_text()
    options = _options(command)
    assert "--help" not in options and len(options) >= 1, options  # the help was read
    missing = sorted(o for o in options if not re.search(rf"`{o}\b", text))
    assert not missing, f"{page.relative_to(ROOT)} does not describe {missing}"
    assert re.search(r"^## Exit codes$", text, re.M), f"{page.relative_to(ROOT)} has no `## Exit codes` section"
    assert f"(docs/commands/{command}.md)" in (ROOT / "README.md").read_text(), f"README's table lacks {command}"


# Read for cas by its libraries (httpx's proxies, OpenSSL's CA paths), not by name in cas's code.
READ_BY_LIBRARIES = {"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"}


def _variables_in_code() -> set[str]:
    """Every NAME the code reads from the environment: environ/getenv/env lookups, typer's envvar=,
    and the names cas's own helpers take (`_positive_env("CAS_MIN_RATE", ...)`)."""
    name = r"""["']([A-Z_][A-Z0-9_]*)["']"""
    reads = [
        re.compile(r"(?:environ|getenv|\benv)(?:\.get)?[\[(]\s*" + name),  # os.environ.get("X"), env["X"]
        re.compile(r"\benv,\s*" + name),  # a helper given the environment: _file(env, "X", ...)
        re.compile(name + r"\s+in\s+(?:os\.)?env"),  # "X" in env
        re.compile(r"envvar=" + name),  # typer's envvar="X"
        re.compile(r"_env\(\s*" + name),  # _positive_env("X", ...)
    ]
    lists = re.compile(r"^[A-Z_]*ENV[A-Z_]* = [\[(]([^\])\n]*)", re.M)  # PLATFORM_ENV = ["X", "Y"]
    settings = re.compile(r"\benv=\(([^)\n]*)\)")  # cas.settings: Setting("jobs", env=("CAS_JOBS",), ...)
    found: set[str] = set()
    for source in [*(ROOT / "cas").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]:
        text = source.read_text()
        for pattern in reads:
            found |= set(pattern.findall(text))
        for names in lists.findall(text) + settings.findall(text):
            found |= set(re.findall(r"[A-Z0-9_]+", names))
    return found


def test_the_environment_page_lists_every_variable_the_code_reads():
    first_cells = re.findall(r"^\| (`[^|]*)\|", (ROOT / "docs" / "environment.md").read_text(), re.M)
    table = {name for cell in first_cells for name in re.findall(r"`([A-Z_][A-Z0-9_]*)`", cell)}
    in_code = _variables_in_code()
    assert {"CAS_HOME", "CAS_TIMEOUT", "DOCKER_CONFIG"} <= in_code  # the scan itself still finds them
    assert not in_code - table, f"read by the code, missing from docs/environment.md: {sorted(in_code - table)}"
    assert not table - in_code - READ_BY_LIBRARIES, f"in the table, read nowhere: {sorted(table - in_code)}"


def test_demo_pulls_incrementally_and_exports_a_checked_archive(tmp_path):
    out = tmp_path / "app.tar"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout + proc.stderr
    app, base = standard_images().app, standard_images().base
    own, shared = set(app.digests) - set(base.digests), set(app.digests) & set(base.digests)
    assert f"downloaded {len(own)} blob(s)" in lines and f"reused {len(shared)}," in lines  # only app's own blobs
    assert f"downloaded 0 blob(s), 0 B; reused {len(app.digests)}," in lines
    assert f"docker-archive: {len(app.digests)} blob(s)" in lines  # the export counts the same blobs as the pull
    assert out.stat().st_size > 1_000_000


def write(pages: list[Path]) -> None:
    """Run each page's examples and write what they printed into it (timings as measured)."""
    with tempfile.TemporaryDirectory(prefix="cas-docs-") as tmp, Registry(Path(tmp, "registry")) as registry:
        standard_images().push(registry)
        for page in pages:
            session = Session(registry, Path(tmp, "work", page.stem))
            outputs = iter([session.run(command)[1] for command, _ in examples(page)])

            def fill(block: re.Match, outputs=outputs) -> str:
                commands = [line for line in block.group(1).splitlines() if line.startswith("$ ")]
                return "```console\n" + "".join(f"{c}\n{next(outputs)}" for c in commands) + "```"

            page.write_text(BLOCK.sub(fill, page.read_text()))
            print(f"wrote {page}")


if __name__ == "__main__":
    write([Path(p).resolve() for p in sys.argv[1:]])


# What a comment may not lean on: files outside the repository, the issue tracker, another
# project's bug numbers. A comment says what it means instead.
OUTSIDE = re.compile(
    r"\.\./shared|\b(?:TESTING|DESIGN|STYLE|TRACKS)\.md\b|\b[Ii]ssue \d|\b[\w.-]+/[\w.-]+#\d+\b|\b[\w-]+#\d{2,}\b"
)


def _sources() -> list[Path]:
    return [p for d in ("cas", "cli", "tests", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")]


def test_no_comment_points_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line) and path.name != "test_readme.py"
    ]
    assert not found, "comments that point outside the repository:\n" + "\n".join(found)


def test_no_empty_type_checking_block():
    empty = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                if all(isinstance(b, ast.Pass | ast.Expr) for b in node.body):
                    empty.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not empty, "empty `if TYPE_CHECKING:` blocks: " + ", ".join(empty)

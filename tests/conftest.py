"""Fixtures for the whole suite. Every server starts once per session; nothing is ever skipped:
a missing tool fails the test and says to run ``bash .ci/run`` or which apt package to install.

Registries (session; ``.host`` is "127.0.0.1:PORT", ``.url`` is "http://..."):
- ``registry``: no auth. ``basic_registry``: htpasswd (``.username``/``.password``; anonymous
  gets 401). ``token_registry``: bearer tokens from ``token_registry.token_server``
  (anonymous may pull, push needs the credentials).
- Server-side counting: ``registry.mark()``, ``registry.requests()``, ``blob_gets()``,
  ``blob_bytes_served()``, ``manifest_requests()``. Each registry that is running is marked
  before every test, so the counters start at zero for each test by default. Blobs flipped
  with ``corrupt_blob`` are restored after each test.
- ``token_server`` (function): ``token_registry.token_server`` with its counters reset.

Faults (function): ``proxy`` is a FaultProxy in front of ``registry`` with knobs and counters
reset; ``proxy_factory(upstream)`` starts another one in front of any registry.

Images (session): ``test_images`` is a ``support.standard.StandardImages`` (names: base, app,
dockermedia, ocidata, multi, multidocker; see support/standard.py), already pushed to
``registry`` as ``{registry.host}/NAME:latest``. ``test_images.push(basic_registry)`` pushes
the set to another registry once and returns name -> Pushed(ref, digest, ...);
``test_images.ref(registry, "app")`` gives the reference.

Consumers: ``skopeo`` (session), ``dockerd`` (session; call ``wipe()`` first, or use
``clean_dockerd`` which wipes before the test: docker skips layers it already holds, which
hides a missing layer file), ``podman`` / ``clean_podman`` likewise. ``pane(width)`` (function)
is a real terminal: a tmux pane (``support.terminal.Pane``) whose screen a test reads and types into.

cas itself: ``cas_home`` (function) is a fresh directory set as ``CAS_HOME`` (and an empty
``DOCKER_CONFIG``, so the host's docker credentials never leak in); ``cas(*args, input=None,
stdin=None, check=True, env=None, text=True, timeout=300)`` runs ``python -m cli ARGS`` with them and
returns a CompletedProcess (stdout is bytes when ``text=False``, e.g. ``export -o -``).
``store`` (function) is an empty ``cas.store.Store`` in ``tmp_path / "home"``, closed after
the test (stores built by hand: test_lifecycle_support.py, test_export_plan.py).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import support` from any test module

from support.consumers import Dockerd, Podman, Skopeo  # noqa: E402
from support.proxy import FaultProxy  # noqa: E402
from support.registry import Registry  # noqa: E402
from support.standard import StandardImages, standard_images  # noqa: E402
from support.tools import MissingTool, run  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
_running: list[Registry] = []  # registries this session started, for per-test reset


@contextlib.contextmanager
def _loud():
    """A missing tool is a failure with instructions, never a skip."""
    try:
        yield
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


def _start_registry(tmp_path_factory, auth: str):
    with _loud():
        reg = Registry(tmp_path_factory.mktemp(f"registry-{auth}"), auth).start()
    _running.append(reg)
    return reg


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    reg = _start_registry(tmp_path_factory, "none")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory):
    reg = _start_registry(tmp_path_factory, "basic")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    reg = _start_registry(tmp_path_factory, "token")
    yield reg
    reg.stop()


@pytest.fixture
def token_server(token_registry):
    token_registry.token_server.reset()
    return token_registry.token_server


@pytest.fixture(autouse=True)
def _no_settings_of_this_machine(tmp_path_factory, monkeypatch):
    """No test reads the podman logins, the config file or the platform and tuning variables of whoever
    runs it: cas reads podman's login files after docker's, and a test sets any variable it wants."""
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path_factory.getbasetemp() / "no-containers-auth.json"))
    monkeypatch.setenv("CAS_CONFIG", str(tmp_path_factory.getbasetemp() / "no-cas-config.toml"))
    for name in (
        "CAS_PLATFORM",
        "DOCKER_DEFAULT_PLATFORM",
        "CAS_JOBS",
        "CAS_CONNECTIONS",
        "CAS_TIMEOUT",
        "CAS_MIN_RATE",
        "CAS_MAX_SIZE",
        "CAS_MAX_AGE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _registry_per_test_state():
    """Counters start at zero for each test; a blob corrupted by a test is restored after it."""
    for reg in _running:
        reg.mark()
    yield
    for reg in _running:
        reg.restore_all_blobs()


@pytest.fixture(scope="session")
def _session_proxy(registry):
    proxy = FaultProxy(registry).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(_session_proxy):
    _session_proxy.reset()
    yield _session_proxy
    _session_proxy.reset()


@pytest.fixture
def proxy_factory():
    started: list[FaultProxy] = []

    def make(upstream: Registry) -> FaultProxy:
        started.append(FaultProxy(upstream).start())
        return started[-1]

    yield make
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def test_images(registry) -> StandardImages:
    with _loud():
        images = standard_images()
    images.push(registry)
    return images


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory) -> Skopeo:
    with _loud():
        return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    with _loud():
        daemon = Dockerd(tmp_path_factory.mktemp("dockerd")).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def clean_dockerd(dockerd) -> Dockerd:
    dockerd.wipe()
    return dockerd


@pytest.fixture(scope="session")
def podman(tmp_path_factory) -> Podman:
    with _loud():
        return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture
def clean_podman(podman) -> Podman:
    podman.wipe()
    return podman


@pytest.fixture
def cas_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "cas-home"
    home.mkdir()
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    monkeypatch.setenv("CAS_HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return home


@pytest.fixture
def cas(cas_home):
    def run_cas(
        *args: str,
        input: bytes | str | None = None,
        stdin=None,
        check: bool = True,
        env: dict[str, str] | None = None,
        text: bool = True,
        timeout: float = 300,
    ):
        full_env = {**os.environ, "CAS_HOME": str(cas_home), **(env or {})}
        return run(
            [sys.executable, "-m", "cli", *map(str, args)],
            input=input,
            stdin=stdin,
            check=check,
            env=full_env,
            text=text,
            timeout=timeout,
            cwd=REPO_ROOT,
        )

    return run_cas


@pytest.fixture
def store(tmp_path: Path):
    from cas.store import Store  # here, not at the top: the support tests run without importing cas

    s = Store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
def pane(tmp_path):
    """``pane(width)``: a real terminal (tmux), stopped after the test."""
    from support.terminal import Pane

    panes: list[Pane] = []

    def make(width: int = 100) -> Pane:
        panes.append(Pane(tmp_path, width))
        return panes[-1]

    yield make
    for p in panes:
        p.stop()

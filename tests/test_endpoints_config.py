"""The mirror configuration readers: hosts.toml, registries.conf (+ .d), daemon.json, and their precedence.

Pure: files in tmp_path, no network. Each malformed input is a one-line ConfigError that names
the file and, where the file has one, the line.
"""

from __future__ import annotations

import json

import pytest

from cas.errors import Blocked, ConfigError
from cas.reference import parse
from cas.registry.endpoints import PULL, RESOLVE, TLS, Sources


def sources(tmp_path, *, hosts: dict[str, str] | None = None, conf: str | None = None, daemon: object = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    hosts_root = tmp_path / "hosts"
    for name, body in (hosts or {}).items():
        (hosts_root / name).mkdir(parents=True)
        (hosts_root / name / "hosts.toml").write_text(body)
    env = {"CAS_HOSTS_DIR": str(hosts_root) if hosts else "", "CAS_REGISTRIES_CONF": "", "CAS_DOCKER_DAEMON_JSON": ""}
    if conf is not None:
        (tmp_path / "registries.conf").write_text(conf)
        env["CAS_REGISTRIES_CONF"] = str(tmp_path / "registries.conf")
    if daemon is not None:
        (tmp_path / "daemon.json").write_text(daemon if isinstance(daemon, str) else json.dumps(daemon))
        env["CAS_DOCKER_DAEMON_JSON"] = str(tmp_path / "daemon.json")
    return Sources.from_env(env=env)


def summary(endpoints) -> list[tuple[str, str, str, bool]]:
    return [(e.url, e.api, e.repository, ",".join(sorted(e.capabilities)), e.mirror) for e in endpoints]


# --- no configuration ----------------------------------------------------------------------------


def test_without_configuration_the_registry_is_alone(tmp_path):
    src = sources(tmp_path)
    assert summary(src.endpoints(parse("alpine"))) == [
        (
            "https://registry-1.docker.io",
            "https://registry-1.docker.io/v2",
            "library/alpine",
            "pull,push,resolve",
            False,
        )
    ]
    (own,) = src.endpoints(parse("127.0.0.1:5000/app"))
    assert own.url == "http://127.0.0.1:5000"  # loopback: plain HTTP, as always
    (own,) = src.endpoints(parse("reg.example:5000/app"), insecure=True)
    assert (own.url, own.insecure, own.tls) == ("https://reg.example:5000", True, TLS(skip_verify=True))
    (own,) = src.endpoints(parse("127.0.0.1:5000/app"), insecure=True)  # insecure on loopback: HTTPS first too
    assert (own.url, own.insecure, own.tls) == ("https://127.0.0.1:5000", True, TLS(skip_verify=True))


# --- hosts.toml --------------------------------------------------------------------------------------


def test_hosts_toml_mirrors_in_file_order_then_the_server(tmp_path):
    src = sources(
        tmp_path,
        hosts={
            "docker.io": """
server = "https://docker.io"
[host."http://10.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
[host."https://mirror.example/cache"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "ca.pem"
  client = [["c.cert", "c.key"], "/abs/both.pem"]
  header = { X-Team = "build", X-Many = ["a", "b"] }
[host."https://override.example/custom/api"]
  override_path = true
"""
        },
    )
    eps = src.endpoints(parse("alpine:3"))
    assert summary(eps) == [
        ("http://10.0.0.1:5000", "http://10.0.0.1:5000/v2", "library/alpine", "pull,resolve", True),
        ("https://mirror.example/cache", "https://mirror.example/cache/v2", "library/alpine", "pull", True),
        (
            "https://override.example/custom/api",
            "https://override.example/custom/api",
            "library/alpine",
            "pull,push,resolve",
            True,
        ),
        (
            "https://registry-1.docker.io",
            "https://registry-1.docker.io/v2",
            "library/alpine",
            "pull,push,resolve",
            False,
        ),
    ]
    folder = tmp_path / "hosts" / "docker.io"
    assert eps[1].tls == TLS(
        True, (str(folder / "ca.pem"),), ((str(folder / "c.cert"), str(folder / "c.key")), ("/abs/both.pem", None))
    )
    assert eps[1].headers == (("X-Team", "build"), ("X-Many", "a"), ("X-Many", "b"))
    assert eps[1].host == "mirror.example" and eps[0].source == str(folder / "hosts.toml")


def test_hosts_toml_default_server_and_the_default_directory(tmp_path):
    src = sources(tmp_path, hosts={"_default": '[host."http://127.0.0.1:6000"]\n'})
    eps = src.endpoints(parse("reg.example/team/app"))
    assert [e.url for e in eps] == ["http://127.0.0.1:6000", "https://reg.example"]


def test_an_explicit_https_loopback_server_keeps_tls(tmp_path):
    src = sources(tmp_path, hosts={"127.0.0.1:5443": 'server = "https://127.0.0.1:5443"\nca = "/pki/ca.pem"\n'})
    (own,) = src.endpoints(parse("127.0.0.1:5443/app"))
    assert own.url == "https://127.0.0.1:5443" and own.tls.ca == ("/pki/ca.pem",)


@pytest.mark.parametrize(
    ("body", "problem", "line"),
    [
        ('server = "https://x"\n[host."http://m"\n', "Expected ']'", ":2"),  # TOML syntax: tomllib's line
        ('[host."http://m"]\n  capabilities = ["pull", "fetch"]\n', "unknown capability 'fetch'", ":2"),
        ('[host."http://m"]\n  capabilites = ["pull"]\n', "unknown key 'capabilites'", ":2"),
        ('[host."http://m"]\n  skip_verify = "yes"\n', "skip_verify must be true or false", ":2"),
        ('[host."ftp://m"]\n', "not an http or https URL", ":1"),
        ("server = 5\n", '"server" must be a URL string', ":1"),
        ('[host."http://m"]\n  client = [1, 2]\n', "client must be a path", ":2"),
    ],
)
def test_a_malformed_hosts_toml_is_one_line_naming_file_and_line(tmp_path, body, problem, line):
    src = sources(tmp_path, hosts={"reg.example": body})
    with pytest.raises(ConfigError) as info:
        src.endpoints(parse("reg.example/app"))
    path = tmp_path / "hosts" / "reg.example" / "hosts.toml"
    assert info.value.message.startswith(str(path)) and problem in info.value.message
    assert "\n" not in info.value.message
    assert line in info.value.message


# --- registries.conf ---------------------------------------------------------------------------------

CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/hub"
[[registry.mirror]]
location = "10.0.0.9:5000"
insecure = true
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tags.example"
pull-from-mirror = "tag-only"

[[registry]]
prefix = "docker.io/team"
location = "internal.example/team-copy"

[[registry]]
prefix = "*.corp.example"
[[registry.mirror]]
location = "cache.corp.example"

[[registry]]
location = "forbidden.example"
blocked = true

[aliases]
"alpine" = "docker.io/library/alpine"
"""


def test_registries_conf_mirrors_rewrite_the_prefix(tmp_path):
    src = sources(tmp_path, conf=CONF)
    assert summary(src.endpoints(parse("alpine:3"))) == [
        ("https://mirror.example:5000", "https://mirror.example:5000/v2", "hub/library/alpine", "pull,resolve", True),
        ("https://10.0.0.9:5000", "https://10.0.0.9:5000/v2", "library/alpine", "pull", True),  # insecure: HTTPS first
        ("https://tags.example", "https://tags.example/v2", "library/alpine", "pull,resolve", True),
        ("https://registry-1.docker.io", "https://registry-1.docker.io/v2", "library/alpine", "pull,resolve", False),
    ]
    by_digest = src.endpoints(parse("alpine@sha256:" + "a" * 64))
    assert [e.url for e in by_digest] == [
        "https://mirror.example:5000",
        "https://10.0.0.9:5000",
        "https://registry-1.docker.io",
    ]  # tag-only mirrors serve tag pulls only
    assert [(e.insecure, e.tls.skip_verify) for e in by_digest] == [(False, False), (True, True), (False, False)]


def test_the_longest_prefix_wins_on_a_path_boundary(tmp_path):
    src = sources(tmp_path, conf=CONF)
    assert summary(src.endpoints(parse("docker.io/team/app:1"))) == [
        ("https://internal.example", "https://internal.example/v2", "team-copy/app", "pull,resolve", False)
    ]
    assert src.endpoints(parse("docker.io/teamwork/app"))[0].url == "https://mirror.example:5000"


def test_a_wildcard_prefix_matches_hosts_below_it(tmp_path):
    src = sources(tmp_path, conf=CONF)
    assert [(e.url, e.repository) for e in src.endpoints(parse("git.corp.example/tools/lint"))] == [
        ("https://cache.corp.example", "tools/lint"),
        ("https://git.corp.example", "tools/lint"),
    ]
    assert [e.url for e in src.endpoints(parse("corp.example.org/x"))] == ["https://corp.example.org"]


def test_a_blocked_registry_is_refused(tmp_path):
    src = sources(tmp_path, conf=CONF)
    with pytest.raises(Blocked) as info:
        src.endpoints(parse("forbidden.example/app:1"))
    assert info.value.message == (
        f"registry forbidden.example is blocked for forbidden.example/app by {tmp_path / 'registries.conf'} "
        "(prefix 'forbidden.example')"
    )
    assert "blocked = true" in info.value.hint


def test_blocked_applies_even_when_hosts_toml_configures_the_registry(tmp_path):
    src = sources(tmp_path, hosts={"forbidden.example": '[host."http://m"]\n'}, conf=CONF)
    with pytest.raises(Blocked):
        src.endpoints(parse("forbidden.example/app"))


def test_drop_ins_replace_entries_with_the_same_prefix(tmp_path):
    (tmp_path / "registries.conf.d").mkdir()
    (tmp_path / "registries.conf.d" / "50-mirror.conf").write_text(
        '[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "dropin.example"\n'
    )
    (tmp_path / "registries.conf.d" / "ignored.txt").write_text("not toml at all [")
    src = sources(tmp_path, conf=CONF)
    assert [e.url for e in src.endpoints(parse("alpine"))] == ["https://dropin.example", "https://registry-1.docker.io"]


def test_mirror_by_digest_only_makes_every_mirror_digest_only(tmp_path):
    conf = '[[registry]]\nlocation = "reg.example"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m.example"\n'
    (mirror, own) = sources(tmp_path, conf=conf).endpoints(parse("reg.example/app:1"))
    assert mirror.capabilities == frozenset({PULL}) and own.capabilities == frozenset({PULL, RESOLVE})


@pytest.mark.parametrize(
    ("conf", "problem"),
    [
        ('[[registry]]\nlocation = "a.example"\n[[registry.mirror]]\npull-from-mirror = "all"\n', "needs a location"),
        (
            '[[registry]]\nlocation = "a.example"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "some"\n',
            "pull-from-mirror = 'some'",
        ),
        ('[[registry]]\nprefix = "*.a.example"\nlocation = "b.example"\n', "must not set a location"),
        ('[[registry]]\nlocation = "a.example"\nblocked = "true"\n', "blocked must be true or false"),
        ('[[registry]]\nlocation = "a.example"\nmirrors = []\n', "unknown key 'mirrors'"),
        ('[registries.search]\nregistries = ["docker.io"]\n', "version 1"),
        ("[[registry]]\nlocation = 'a.example\n", "registries.conf:2: "),
    ],
)
def test_a_malformed_registries_conf_is_one_line(tmp_path, conf, problem):
    with pytest.raises(ConfigError) as info:
        sources(tmp_path, conf=conf).endpoints(parse("a.example/app"))
    assert info.value.message.startswith(f"{tmp_path / 'registries.conf'}:") and problem in info.value.message
    assert "\n" not in info.value.message


# --- daemon.json ----------------------------------------------------------------------------------------


def test_daemon_json_mirrors_apply_to_docker_hub_only(tmp_path):
    src = sources(tmp_path, daemon={"registry-mirrors": ["https://mirror.gcr.example", "http://10.1.1.1:5000/"]})
    assert summary(src.endpoints(parse("alpine"))) == [
        ("https://mirror.gcr.example", "https://mirror.gcr.example/v2", "library/alpine", "pull,resolve", True),
        ("http://10.1.1.1:5000", "http://10.1.1.1:5000/v2", "library/alpine", "pull,resolve", True),
        (
            "https://registry-1.docker.io",
            "https://registry-1.docker.io/v2",
            "library/alpine",
            "pull,push,resolve",
            False,
        ),
    ]
    assert [e.url for e in src.endpoints(parse("ghcr.io/org/tool"))] == ["https://ghcr.io"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{\n  "registry-mirrors": ["https://m",]\n}\n', ":2: not valid JSON"),
        ('{\n  "debug": true,\n  "registry-mirrors": "https://m"\n}\n', ":3: 'registry-mirrors' must be a list"),
        ('{"registry-mirrors": ["ftp://m"]}', "not an http or https URL"),
        ('{\n  "insecure-registries": "reg.lan"\n}\n', ":2: 'insecure-registries' must be a list of strings"),
        ('{\n  "insecure-registries": [5000]\n}\n', ":2: 'insecure-registries' must be a list of strings"),
        (
            '{\n  "debug": true,\n  "insecure-registries": ["http://reg.lan"]\n}\n',
            ":3: insecure-registries: 'http://reg.lan' must not contain a scheme",
        ),
        (
            '{\n  "insecure-registries": [\n    "10.0.0.0/33"\n  ]\n}\n',
            ":3: insecure-registries: '10.0.0.0/33' is not a CIDR range",
        ),
        ('{"insecure-registries": ["reg.lan:port"]}', ":1: insecure-registries: 'reg.lan:port' is not host[:port]"),
        ('{"insecure-registries": ["reg lan"]}', "'reg lan' is not host[:port]"),
        ('["reg.lan"]', ":1: not a JSON object"),
    ],
)
def test_a_malformed_daemon_json_is_one_line_naming_the_line(tmp_path, text, problem):
    with pytest.raises(ConfigError) as info:
        sources(tmp_path, daemon=text).endpoints(parse("alpine"))
    assert info.value.message.startswith(str(tmp_path / "daemon.json")) and problem in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("entries", "ref", "insecure"),
    [
        (["reg.lan:5000"], "reg.lan:5000/app", True),
        (["REG.LAN:5000"], "reg.lan:5000/app", True),  # names compare without case
        (["reg.lan:5000"], "reg.lan:5001/app", False),  # host[:port] is matched exactly, as docker does
        (["reg.lan"], "reg.lan:5000/app", False),
        (["10.0.0.0/8"], "10.1.2.3:5000/app", True),
        (["10.1.2.3/8"], "10.200.0.1/app", True),  # host bits are ignored, as net.ParseCIDR does
        (["10.0.0.0/8"], "11.0.0.1:5000/app", False),
        (["fd00::/8"], "[fd00::5]:5000/app", True),
        (["10.0.0.0/8"], "reg.lan:5000/app", False),  # a name is not resolved to match a range
        (["127.0.0.0/8"], "127.0.0.1:5000/app", True),  # loopback marked: HTTPS first, like any insecure one
        ([], "127.0.0.1:5000/app", False),  # loopback unmarked: plain HTTP, as always
    ],
)
def test_daemon_json_insecure_registries_match_host_port_or_an_ip_range(tmp_path, entries, ref, insecure):
    (own,) = sources(tmp_path, daemon={"insecure-registries": entries}).endpoints(parse(ref))
    assert (own.insecure, own.tls.skip_verify) == (insecure, insecure)
    if insecure:
        assert own.url.startswith("https://") and own.source == str(tmp_path / "daemon.json")


def test_daemon_json_insecure_registries_apply_to_its_mirrors(tmp_path):
    daemon = {
        "registry-mirrors": ["https://10.0.0.7:5000", "http://mirror.lan", "https://secure.example"],
        "insecure-registries": ["10.0.0.0/8", "mirror.lan"],
    }
    found = sources(tmp_path, daemon=daemon).endpoints(parse("alpine"))
    assert [(e.url, e.insecure, e.tls.skip_verify) for e in found] == [
        ("https://10.0.0.7:5000", True, True),  # HTTPS unverified, plain HTTP if it answers that
        ("http://mirror.lan", True, False),  # an explicit http:// stays plain HTTP
        ("https://secure.example", False, False),
        ("https://registry-1.docker.io", False, False),
    ]


def test_insecure_flag_marks_the_registry_when_daemon_json_does_not(tmp_path):
    src = sources(tmp_path, daemon={"insecure-registries": ["other.lan"]})
    (own,) = src.endpoints(parse("reg.lan/app"), insecure=True)
    assert (own.url, own.insecure, own.source) == ("https://reg.lan", True, "")


# --- precedence and environment ----------------------------------------------------------------------


def test_hosts_toml_beats_registries_conf_which_beats_daemon_json(tmp_path):
    hosts = {"docker.io": '[host."http://from-hosts-toml:5000"]\n'}
    daemon = {"registry-mirrors": ["https://from-daemon-json"]}
    assert sources(tmp_path / "a", hosts=hosts, conf=CONF, daemon=daemon).endpoints(parse("alpine"))[0].url == (
        "http://from-hosts-toml:5000"
    )
    assert sources(tmp_path / "b", conf=CONF, daemon=daemon).endpoints(parse("alpine"))[0].url == (
        "https://mirror.example:5000"
    )
    assert sources(tmp_path / "c", daemon=daemon).endpoints(parse("alpine"))[0].url == "https://from-daemon-json"


def test_hosts_dirs_flag_replaces_the_environment_and_missing_explicit_paths_are_errors(tmp_path):
    (tmp_path / "one" / "reg.example").mkdir(parents=True)
    (tmp_path / "one" / "reg.example" / "hosts.toml").write_text('[host."http://m1"]\n')
    env = {"CAS_HOSTS_DIR": str(tmp_path / "nowhere"), "CAS_REGISTRIES_CONF": "", "CAS_DOCKER_DAEMON_JSON": ""}
    src = Sources.from_env([str(tmp_path / "one")], env)
    assert src.endpoints(parse("reg.example/app"))[0].url == "http://m1"
    with pytest.raises(ConfigError, match="nowhere does not exist"):
        Sources.from_env(None, env)
    with pytest.raises(ConfigError, match=r"from \$CAS_REGISTRIES_CONF"):
        Sources.from_env(None, {**env, "CAS_HOSTS_DIR": "", "CAS_REGISTRIES_CONF": str(tmp_path / "missing.conf")})


def test_hosts_toml_keeps_its_explicit_schemes_and_never_falls_back(tmp_path):
    body = 'server = "https://10.0.0.2:5000"\nskip_verify = true\n[host."http://10.0.0.1:5000"]\n'
    found = sources(tmp_path, hosts={"10.0.0.2:5000": body}).endpoints(parse("10.0.0.2:5000/app"), insecure=True)
    assert [(e.url, e.insecure, e.tls.skip_verify) for e in found] == [
        ("http://10.0.0.1:5000", False, False),  # plain HTTP, as written
        ("https://10.0.0.2:5000", False, True),  # HTTPS unverified, never plain HTTP: containerd's meaning
    ]


def test_a_login_gets_the_registrys_own_endpoint_from_an_entry_for_the_registry_or_a_wildcard(tmp_path):
    conf = (
        '[[registry]]\nprefix = "*.corp.example"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "cache.corp.example"\n'
        '[[registry]]\nlocation = "reg.example/team"\ninsecure = true\n'
    )
    src = sources(tmp_path, conf=conf)
    (own,) = src.login_endpoints("git.corp.example")  # the mirror is left out
    assert (own.url, own.mirror, own.insecure, own.tls.skip_verify) == ("https://git.corp.example", False, True, True)
    (own,) = src.login_endpoints("reg.example")  # an entry for a repository below the registry is not its own
    assert (own.url, own.insecure, own.tls.skip_verify) == ("https://reg.example", False, False)

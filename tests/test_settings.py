"""Settings: LINEGUARD_ variables only; Faust's own variables never override them."""

from __future__ import annotations

import datetime
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from streams.settings import FAUST_REQUEST_TIMEOUT, Settings, unknown_variable

PROBE = (
    "from streams.app import app, settings;"
    "print(app.conf.broker[0], app.conf.web_port, app.conf.store, app.conf.web_tables_enabled,"
    " app.conf.web_router_enabled, app.conf.broker_session_timeout)"
)


def _run(env: dict[str, str], code: str = PROBE) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def test_fausts_unprefixed_variables_do_not_override_lineguard_settings() -> None:
    done = _run(
        {
            "BROKER_URL": "kafka://elsewhere:9092",
            "WEB_PORT": "1234",
            "STORE": "rocksdb://",
            "APP_BROKER": "kafka://elsewhere:9092",
            "LINEGUARD_BROKER_URL": "kafka://127.0.0.1:19092",
            "LINEGUARD_WEB_PORT": "6099",
        }
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "kafka://127.0.0.1:19092",
        "6099",
        "memory:",
        "False",
        "False",
        "60.0",
    ]


def test_the_dev_broker_setting_turns_on_fast_joins_unless_set_explicitly() -> None:
    fast = _run({"LINEGUARD_DEV_BROKER": "tansu"})
    assert fast.stdout.split()[-1] == "2.0"
    explicit = _run({"LINEGUARD_DEV_BROKER": "tansu", "LINEGUARD_BROKER_SESSION_TIMEOUT": "9"})
    assert explicit.stdout.split()[-1] == "9.0"


FETCH_PROBE = """
import asyncio
from streams.app import app
async def main():
    app.on_worker_init.send()
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        print(consumer._fetcher._fetch_max_wait_ms, consumer._fetcher._prefetch_backoff)
    finally:
        await consumer.stop()
asyncio.run(main())
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    ("env", "wait_ms"),
    [
        ({}, "500"),
        ({"LINEGUARD_DEV_BROKER": "tansu"}, "20"),
        ({"LINEGUARD_DEV_BROKER": "tansu", "LINEGUARD_CONSUMER_FETCH_MAX_WAIT": "0.25"}, "250"),
    ],
)
def test_the_workers_consumer_gets_the_fetch_wait_and_a_prompt_prefetch_backoff(
    kafka_bootstrap: str, env: dict[str, str], wait_ms: str
) -> None:
    # Faust hard-codes a 1.5 s fetch wait, and aiokafka holds every partition of a broker
    # for 0.1 s after a fetch whose records wait (streams.app.PREFETCH_BACKOFF).
    probe = _run({**env, "LINEGUARD_BROKER_URL": f"kafka://{kafka_bootstrap}"}, FETCH_PROBE)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [wait_ms, "0.005"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LINEGUARD_WEB_PORT": "seventy"}, "LINEGUARD_WEB_PORT"),
        ({"LINEGUARD_CLOCK": "sundial"}, "LINEGUARD_CLOCK"),
        ({"LINEGUARD_STORE": "redis://"}, "LINEGUARD_STORE"),
        ({"LINEGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "LINEGUARD_KAFKA_SASL_USERNAME"),
        ({"LINEGUARD_POLICY_FILE": "/no/such/policy.toml"}, "LINEGUARD_POLICY_FILE"),
        (
            {"LINEGUARD_STORE": "rocksdb://", "LINEGUARD_PROCESSING_GUARANTEE": "exactly_once"},
            "LINEGUARD_STORE=rocksdb:// cannot be used with LINEGUARD_PROCESSING_GUARANTEE",
        ),
        ({"LINEGUARD_REPAYMENTS_TOPIC": "repayments v1"}, "LINEGUARD_REPAYMENTS_TOPIC"),
        ({"LINEGUARD_LIMIT_EVENTS_TOPIC": "x" * 246}, "LINEGUARD_LIMIT_EVENTS_TOPIC"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(env: dict[str, str], named: str) -> None:
    done = _run(env)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_policy_file_stops_the_worker_naming_the_field(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "v"\n[rules.loan_velocity]\nrestore_max_applications = 9\n')
    done = _run({"LINEGUARD_POLICY_FILE": str(policy)}, "import agents.assess")
    assert done.returncode != 0
    assert "rules.loan_velocity.restore_max_applications" in done.stderr


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEGUARD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LINEGUARD_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("LINEGUARD_KAFKA_SASL_PASSWORD", "hunter2")
    settings = Settings()
    assert "hunter2" not in repr(settings)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "hunter2"


def test_heartbeat_must_be_below_the_session_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEGUARD_BROKER_SESSION_TIMEOUT", "1")
    monkeypatch.setenv("LINEGUARD_BROKER_HEARTBEAT_INTERVAL", "3")
    with pytest.raises(ValidationError, match="HEARTBEAT"):
        Settings()


def test_the_url_given_to_other_workers_is_never_a_wildcard() -> None:
    listening_everywhere = Settings(web_host="0.0.0.0", web_port=6070)  # noqa: S104
    assert listening_everywhere.worker_url() == f"http://{socket.gethostname()}:6070"
    assert Settings(web_host="10.0.0.5").worker_url() == "http://10.0.0.5:6066"
    assert Settings(web_host="::1").worker_url() == "http://[::1]:6066"
    explicit = Settings(web_host="0.0.0.0", canonical_url="http://worker-1:6066")  # noqa: S104
    assert explicit.worker_url() == "http://worker-1:6066"
    with pytest.raises(ValidationError, match="canonical_url"):
        Settings(canonical_url="worker-1:6066")


def test_the_web_server_listens_on_the_web_host_whatever_fausts_variables_say() -> None:
    probe = "from streams.app import app; print(app.conf.web_bind)"
    fausts = {"FAUST_WEB_BIND": "0.0.0.0", "F_WEB_BIND": "0.0.0.0", "WEB_BIND": "0.0.0.0"}  # noqa: S104
    assert _run(fausts, probe).stdout.split() == ["127.0.0.1"]
    assert _run({**fausts, "LINEGUARD_WEB_HOST": "10.0.0.5"}, probe).stdout.split() == ["10.0.0.5"]


def test_the_worker_starts_its_tables_with_the_prompt_table_manager() -> None:
    probe = "from streams.app import app; print(type(app.tables).__name__)"
    assert _run({}, probe).stdout.split() == ["PromptTableManager"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LINEGUARD_API_TOKEN": ""}, "at least 16 characters"),
        ({"LINEGUARD_API_TOKEN": "short-token"}, "at least 16 characters"),
        ({"LINEGUARD_API_TOKEN": "a long token with spaces"}, "without spaces"),
        (
            {"LINEGUARD_API_TOKEN": "x" * 32, "LINEGUARD_API_ALLOW_ANONYMOUS": "true"},
            "LINEGUARD_API_ALLOW_ANONYMOUS=true contradicts LINEGUARD_API_TOKEN",
        ),
    ],
)
def test_an_unsafe_api_access_setting_stops_start_up(env: dict[str, str], message: str) -> None:
    done = _run(env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    token = env["LINEGUARD_API_TOKEN"]
    assert not token or token not in done.stderr  # a rejected secret is not echoed


def test_a_check_across_settings_prints_its_own_message_without_a_made_up_variable() -> None:
    done = _run(
        {"LINEGUARD_BROKER_SESSION_TIMEOUT": "1", "LINEGUARD_BROKER_HEARTBEAT_INTERVAL": "3"}
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "lineguard: invalid settings: LINEGUARD_BROKER_HEARTBEAT_INTERVAL must be below"
        " LINEGUARD_BROKER_SESSION_TIMEOUT"
    )


def test_a_bad_field_is_still_named_by_its_variable() -> None:
    done = _run({"LINEGUARD_WEB_PORT": "0"})
    assert done.stderr.startswith(
        "lineguard: invalid settings: LINEGUARD_WEB_PORT: Input should be"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("LINEGUARD_POLICY", "LINEGUARD_POLICY is not a lineguard setting;"
         " did you mean LINEGUARD_POLICY_FILE?"),
        ("lineguard_web_prot", "lineguard_web_prot is not a lineguard setting;"
         " did you mean LINEGUARD_WEB_PORT?"),
        ("LINEGUARD_NOTHING_LIKE_IT", "LINEGUARD_NOTHING_LIKE_IT is not a lineguard setting"
         " (see"),
    ],
)  # fmt: skip
def test_a_lineguard_variable_that_is_no_setting_stops_start_up(name: str, message: str) -> None:
    done = _run({name: "/etc/secret-value"})
    assert done.returncode == 2
    assert message in done.stderr
    assert "secret-value" not in done.stderr
    assert "Traceback" not in done.stderr


def test_the_test_suites_own_variables_are_not_refused() -> None:
    done = _run({"LINEGUARD_TEST_BOOTSTRAP": "127.0.0.1:9092", "LINEGUARD_FULL_ADVERSARIAL": "1"})
    assert done.returncode == 0, done.stderr


def test_every_lineguard_variable_the_repository_names_is_accepted() -> None:
    root = Path(__file__).parent.parent
    names: set[str] = set()
    for path in root.rglob("*"):
        parts = set(path.relative_to(root).parts)
        hidden = any(part.startswith(".") for part in parts)  # .venv, .git, caches
        if hidden or "lineguard.egg-info" in parts or not path.is_file():
            continue
        if path == Path(__file__):  # this file's misspellings are meant
            continue
        if path.suffix in {".py", ".md", ".yml", ".yaml", ".toml", ".txt"} or path.name in {
            "Makefile",
            "Dockerfile",
        }:
            names |= set(re.findall(r"LINEGUARD_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")))
    assert "LINEGUARD_TEST_BOOTSTRAP" in names
    assert "LINEGUARD_BROKER_URL" in names
    environ = dict.fromkeys(names - {"LINEGUARD_KAFKA"}, "x")  # README's "LINEGUARD_KAFKA_*"
    assert unknown_variable(environ, Settings.variables()) is None


@pytest.mark.parametrize(
    ("topics", "first", "second"),
    [
        ({"repayments_topic": "credit.purchases.v1"}, "LINEGUARD_PURCHASES_TOPIC",
         "LINEGUARD_REPAYMENTS_TOPIC"),
        ({"limit_overrides_topic": "credit.loan-applications.v1"},
         "LINEGUARD_LOAN_APPLICATIONS_TOPIC", "LINEGUARD_LIMIT_OVERRIDES_TOPIC"),
        ({"limit_events_topic": "credit.repayments.v1"}, "LINEGUARD_REPAYMENTS_TOPIC",
         "LINEGUARD_LIMIT_EVENTS_TOPIC"),
        ({"limit_events_topic": "credit.purchases.v1.dlt"}, "LINEGUARD_LIMIT_EVENTS_TOPIC",
         "the dead letters of LINEGUARD_PURCHASES_TOPIC"),
        ({"purchases_topic": "x", "repayments_topic": "x.dlt"}, "LINEGUARD_REPAYMENTS_TOPIC",
         "the dead letters of LINEGUARD_PURCHASES_TOPIC"),
        ({"income_verifications_topic": "lineguard-ticks"},
         "LINEGUARD_INCOME_VERIFICATIONS_TOPIC", "the ticks topic of LINEGUARD_APP_ID"),
        ({"limit_events_topic": "lineguard-users-changelog"},
         "LINEGUARD_LIMIT_EVENTS_TOPIC", "the state changelog of LINEGUARD_APP_ID"),
    ],
)  # fmt: skip
def test_two_settings_naming_one_topic_are_refused_naming_both(
    topics: dict[str, str], first: str, second: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(**topics)
    assert f"{first} and {second} both name the topic" in str(raised.value)


def test_a_duplicate_topic_stops_the_command_line_naming_both_variables() -> None:
    done = _run({"LINEGUARD_LIMIT_EVENTS_TOPIC": "credit.purchases.v1"})
    assert done.returncode == 2
    assert "LINEGUARD_PURCHASES_TOPIC and LINEGUARD_LIMIT_EVENTS_TOPIC" in done.stderr


@pytest.mark.parametrize(
    "field",
    [
        "max_idle", "producer_linger", "wall_sweep_interval", "broker_session_timeout",
        "broker_heartbeat_interval", "broker_rebalance_timeout", "broker_commit_interval",
        "consumer_fetch_max_wait",
    ],
)  # fmt: skip
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_no_seconds_setting_takes_inf_or_nan(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(**{field: value})
    assert field in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LINEGUARD_BROKER_SESSION_TIMEOUT", "91"),
        ("LINEGUARD_BROKER_REBALANCE_TIMEOUT", "91"),
        ("LINEGUARD_BROKER_COMMIT_INTERVAL", "61"),
    ],
)
def test_broker_timings_beyond_fausts_bounds_stop_start_up_naming_the_variable(
    variable: str, value: str
) -> None:
    done = _run({variable: value})
    assert done.returncode == 2
    assert f"{variable}: Input should be less than or equal to" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_session_timeouts_bound_is_fausts_request_timeout() -> None:
    import faust

    conf = faust.App("bound-probe", env={}).conf
    assert conf.broker_request_timeout == FAUST_REQUEST_TIMEOUT
    edge = Settings(broker_session_timeout=FAUST_REQUEST_TIMEOUT)
    assert edge.broker_session_timeout == FAUST_REQUEST_TIMEOUT


@pytest.mark.parametrize("host", ["", " ", "host name", "a..b", "http://worker-1", "-worker"])
def test_a_web_host_that_names_no_interface_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="neither an IP address nor a host name"):
        Settings(web_host=host)


def test_an_empty_web_host_stops_start_up_instead_of_listening_everywhere() -> None:
    done = _run({"LINEGUARD_WEB_HOST": ""})
    assert done.returncode == 2
    assert "LINEGUARD_WEB_HOST: '' is neither an IP address nor a host name" in done.stderr
    assert "explicit 0.0.0.0 or ::" in done.stderr


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "127.0.0.1", "::1", "localhost", "worker-1.example.com"],  # noqa: S104 - validated, not bound
)
def test_addresses_host_names_and_explicit_wildcards_are_accepted(host: str) -> None:
    assert Settings(web_host=host).web_host == host


def _self_signed(directory: Path, stem: str, password: bytes | None = None) -> tuple[Path, Path]:
    """A certificate and its key (encrypted with ``password`` if given), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    encryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_path, key_path


def _tls_env(cert: Path, key: Path, ca: Path | None = None, **more: str) -> dict[str, str]:
    return {
        "LINEGUARD_KAFKA_SECURITY_PROTOCOL": "SSL",
        "LINEGUARD_KAFKA_SSL_CAFILE": str(ca or cert),
        "LINEGUARD_KAFKA_SSL_CERTFILE": str(cert),
        "LINEGUARD_KAFKA_SSL_KEYFILE": str(key),
        **more,
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # ignored, each would leave the connection unencrypted or anonymous without a word
        ({"LINEGUARD_KAFKA_SSL_CAFILE": "{ca}"}, "LINEGUARD_KAFKA_SSL_CAFILE is set, but"),
        (
            {"LINEGUARD_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LINEGUARD_KAFKA_SSL_CAFILE": "{ca}",
             "LINEGUARD_KAFKA_SASL_USERNAME": "svc", "LINEGUARD_KAFKA_SASL_PASSWORD": "hunter2"},
            "LINEGUARD_KAFKA_SSL_CAFILE is set, but",
        ),
        (
            {"LINEGUARD_KAFKA_SECURITY_PROTOCOL": "SSL", "LINEGUARD_KAFKA_SASL_USERNAME": "svc",
             "LINEGUARD_KAFKA_SASL_PASSWORD": "hunter2"},
            "LINEGUARD_KAFKA_SASL_USERNAME is set, but",
        ),
        ({"LINEGUARD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, "LINEGUARD_KAFKA_SASL_MECHANISM is set"),
    ],
)  # fmt: skip
def test_security_settings_the_protocol_would_ignore_stop_start_up(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    ca, _ = _self_signed(tmp_path, "ca")
    done = _run({key: value.format(ca=ca) for key, value in env.items()})
    assert done.returncode == 2, done.stderr
    assert named in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "variable",
    [
        "LINEGUARD_KAFKA_SASL_PASSWORD",
        "LINEGUARD_KAFKA_SSL_CERTFILE",
        "LINEGUARD_KAFKA_SSL_KEYFILE",
        "LINEGUARD_KAFKA_SSL_KEY_PASSWORD",
    ],
)
def test_a_password_or_client_certificate_plaintext_would_ignore_stops_start_up_naming_it(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process: one subprocess per credential would add seconds for the same check.
    some_file = tmp_path / "some.pem"
    some_file.write_text("x")
    monkeypatch.setenv(variable, str(some_file))
    with pytest.raises(ValidationError, match=f"{variable} is set, but"):
        Settings()


def test_empty_client_certificate_and_key_variables_are_no_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, _ = _self_signed(tmp_path, "ca")
    monkeypatch.setenv("LINEGUARD_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("LINEGUARD_KAFKA_SSL_CAFILE", str(ca))
    monkeypatch.setenv("LINEGUARD_KAFKA_SSL_CERTFILE", "")
    monkeypatch.setenv("LINEGUARD_KAFKA_SSL_KEYFILE", "")
    settings = Settings()
    assert (settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile) == (None, None)


def test_a_key_password_without_a_key_file_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, _ = _self_signed(tmp_path, "ca")
    monkeypatch.setenv("LINEGUARD_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("LINEGUARD_KAFKA_SSL_CAFILE", str(ca))
    monkeypatch.setenv("LINEGUARD_KAFKA_SSL_KEY_PASSWORD", "pw")
    with pytest.raises(ValidationError, match="KEY_PASSWORD is set without a key file"):
        Settings()


def test_a_security_setting_at_its_default_or_empty_is_no_setting_the_protocol_ignores() -> None:
    # A deployment template that spells out the defaults must keep starting.
    done = _run(
        {
            "LINEGUARD_KAFKA_SASL_MECHANISM": "PLAIN",
            "LINEGUARD_KAFKA_SASL_USERNAME": "",
            "LINEGUARD_KAFKA_SSL_CAFILE": "",
            "LINEGUARD_KAFKA_SSL_KEY_PASSWORD": "",
        },
        "from streams.app import settings; print(settings.kafka_security_protocol)",
    )
    assert (done.returncode, done.stdout.strip()) == (0, "PLAINTEXT"), done.stderr


def test_tls_files_that_cannot_be_used_stop_start_up_naming_their_variable(
    tmp_path: Path,
) -> None:
    cert, key = _self_signed(tmp_path, "client")
    _, other_key = _self_signed(tmp_path, "other")
    passphrase = "s3cret-key-pass"  # noqa: S105 - a test key's passphrase
    locked_cert, locked_key = _self_signed(tmp_path, "locked", password=passphrase.encode())
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        (_tls_env(cert, key, ca=junk), "LINEGUARD_KAFKA_SSL_CAFILE: not usable"),
        (_tls_env(cert, other_key), "LINEGUARD_KAFKA_SSL_CERTFILE and LINEGUARD_KAFKA_SSL_KEYFILE"),
        # never a prompt on the terminal: refused, naming the setting that is missing
        (_tls_env(locked_cert, locked_key), "set LINEGUARD_KAFKA_SSL_KEY_PASSWORD"),
        (
            _tls_env(locked_cert, locked_key, LINEGUARD_KAFKA_SSL_KEY_PASSWORD=passphrase[::-1]),
            "LINEGUARD_KAFKA_SSL_KEY_PASSWORD is wrong",
        ),
    ]
    for env, named in cases:
        done = _run(env)
        assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
        assert named in done.stderr
    unlocked = _run(
        _tls_env(locked_cert, locked_key, LINEGUARD_KAFKA_SSL_KEY_PASSWORD=passphrase),
        "from streams.app import settings; print('started')",
    )
    assert unlocked.stdout.strip() == "started", unlocked.stderr


def test_a_validation_error_never_carries_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINEGUARD_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("LINEGUARD_API_TOKEN", "token-secret-0123456789")
    monkeypatch.setenv("LINEGUARD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")  # and no user name
    with pytest.raises(ValidationError) as caught:
        Settings()
    shown = str(caught.value)  # what a caller that prints the exception shows
    assert "LINEGUARD_KAFKA_SASL_USERNAME and LINEGUARD_KAFKA_SASL_PASSWORD are required" in shown
    assert "hunter2-secret" not in shown
    assert "token-secret-0123456789" not in shown


def test_the_data_directory_does_not_move_when_fausts_command_line_changes_directory(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _run(
        {"F_WORKDIR": str(elsewhere)},
        "import os; from streams.app import app; os.chdir(os.environ['F_WORKDIR']);"
        " print(app.conf.datadir.absolute())",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(Path.cwd() / "lineguard-data")


def test_a_relative_policy_file_names_the_file_where_the_command_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent loads the policy after Faust's -W/--workdir changed directory: a relative
    # path would then name another file, or none.
    (tmp_path / "mine.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    settings = Settings(policy_file=Path("mine.toml"))
    assert settings.policy_file == tmp_path / "mine.toml"
    assert Settings().policy_file is None


def test_the_rocksdb_caches_are_the_settings_not_fausts_two_gib_per_partition(
    tmp_path: Path,
) -> None:
    probe = (
        "from streams.topics import users; options = users.data.rocksdb_options;"
        " print(options.block_cache_size, options.write_buffer_size)"
    )
    env = {"LINEGUARD_STORE": "rocksdb://", "LINEGUARD_DATADIR": str(tmp_path)}
    assert _run(env, probe).stdout.split() == [str(64 << 20), str(64 << 20)]
    env |= {"LINEGUARD_ROCKSDB_BLOCK_CACHE_MIB": "8", "LINEGUARD_ROCKSDB_WRITE_BUFFER_MIB": "4"}
    assert _run(env, probe).stdout.split() == [str(8 << 20), str(4 << 20)]

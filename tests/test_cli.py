"""The `lineguard` command line: replay and check-policy, run as a user would."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import orjson
import pytest

from builders import application, purchase, repayment

LINEGUARD = [sys.executable, "-c", "from streams.entry import main; main()"]


def _lineguard(
    *args: str | Path, cwd: Path, settings: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    env |= settings or {}
    return subprocess.run(
        [*LINEGUARD, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=120, check=False,
    )  # fmt: skip


def _write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def test_replay_writes_limit_events_dead_letters_and_a_balanced_summary(tmp_path: Path) -> None:
    bad_utf8 = base64.b64encode(b'{"x": "\xff"}').decode()
    source = _write(
        tmp_path / "in.jsonl",
        [
            purchase("2026-02-01T00:00:00Z", 35000, order="o-17", first_due="2026-03-01T00:00:00Z"),
            repayment("2026-03-06T00:00:00Z", 35000, event_id="r-1"),
            {"topic": "credit.repayments.v1", "key": "u-1", "value_base64": bad_utf8},
            {"topic": "credit.repayments.v1", "key": "u-1", "value": "{"},
        ],
    )
    done = _lineguard(
        "replay", source, "--output", "out.jsonl", "--dead-letters", "dlt.jsonl",
        "--until", "2026-05-01T00:00:00Z", "--partitions", "4", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "records=4 processed=2 duplicates=0 dead_lettered=2 decisions=2 balanced" in done.stderr
    events = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [(e["type"], e["caused_by"]) for e in events] == [
        ("limit.freeze", "timer:overdue:2026-03-04T00:00:00Z"),
        ("limit.restore", "timer:cure:2026-04-05T00:00:00Z"),
    ]
    assert all(e["decided_at"].endswith("Z") for e in events)
    letters = [orjson.loads(line) for line in (tmp_path / "dlt.jsonl").read_bytes().splitlines()]
    assert [(d["reason"], d["line"]) for d in letters] == [("invalid_json", 3), ("invalid_json", 4)]
    assert letters[0]["value_base64"] == bad_utf8
    assert letters[1]["value"] == "{"


def test_replay_and_backtest_read_the_topic_names_the_settings_give(tmp_path: Path) -> None:
    renamed = {
        "LINEGUARD_PURCHASES_TOPIC": "bnpl.purchases",
        "LINEGUARD_REPAYMENTS_TOPIC": "bnpl.repayments",
    }
    lines = [
        purchase("2026-02-01T00:00:00Z", 35000, first_due="2026-03-01T00:00:00Z"),
        repayment("2026-03-06T00:00:00Z", 35000),
    ]
    lines[0]["topic"], lines[1]["topic"] = "bnpl.purchases", "bnpl.repayments"
    source = _write(tmp_path / "renamed.jsonl", lines)
    until = "2026-05-01T00:00:00Z"
    done = _lineguard("replay", source, "--until", until, cwd=tmp_path, settings=renamed)
    assert done.returncode == 0, done.stderr
    assert [orjson.loads(line)["type"] for line in done.stdout.splitlines()] == [
        "limit.freeze",
        "limit.restore",
    ]
    (tmp_path / "candidate.toml").write_text(GRACE_7D)
    compared = _lineguard(
        "backtest", source, "--candidate", "candidate.toml", "--until", until,
        "--format", "json", cwd=tmp_path, settings=renamed,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    assert orjson.loads(compared.stdout)["baseline"]["processed"] == 2
    refused = _lineguard("replay", source, cwd=tmp_path)  # the default names
    assert refused.returncode != 0
    assert "line 1: unknown topic 'bnpl.purchases'" in refused.stderr
    assert "credit.purchases.v1" in refused.stderr


def test_replay_to_stdout(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", [repayment("2026-03-06T00:00:00Z", 1)])
    done = _lineguard("replay", source, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "records=1 processed=1" in done.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"topic": "credit.refunds.v1", "key": "u", "value": {}}, "line 2: unknown topic"),
        ({"topic": "credit.repayments.v1", "key": "u"}, "line 2: needs `value`"),
        ("not an object", "line 2: not a JSON object"),
        (None, "line 2: not valid JSON"),
    ],
)
def test_replay_refuses_input_that_is_not_a_kafka_record(
    tmp_path: Path, line: object, message: str
) -> None:
    source = tmp_path / "in.jsonl"
    bad = b'{"topic": ' if line is None else orjson.dumps(line)
    source.write_bytes(orjson.dumps(repayment("2026-03-06T00:00:00Z", 1)) + b"\n" + bad)
    done = _lineguard("replay", source, cwd=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr


def test_replay_with_a_bad_policy_names_the_field(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('version = "x"\n[rules.loan_velocity]\nwindow = "7 days"\n')
    source = _write(tmp_path / "in.jsonl", [repayment("2026-03-06T00:00:00Z", 1)])
    done = _lineguard("replay", source, "--policy", policy, cwd=tmp_path)
    assert done.returncode != 0
    assert f"{policy}: invalid policy" in done.stderr
    assert "rules.loan_velocity.window" in done.stderr


def test_check_policy_accepts_the_shipped_policy(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "risk" / "default_policy.toml"
    done = _lineguard("check-policy", shipped, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "version 2026-11-28.2" in done.stdout


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('version = "x"\n[overdue]\ngrace_days = "3"\n', "overdue.grace_days"),
        ('version = "x"\n[rules.small_loan_burst]\nsmal_max_amount = 1\n', "smal_max_amount"),
        ("[overdue]\ngrace_days = 3\n", "version"),
        ('version = "x"\n[time]\ndedup_horizon = "7d"\n', "time.dedup_horizon"),
        ('version = "x"\nversion = "y"\n', "TOML"),
    ],
)
def test_check_policy_names_the_bad_field(tmp_path: Path, text: str, field: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    done = _lineguard("check-policy", policy, cwd=tmp_path)
    assert done.returncode == 1
    assert field in done.stderr


# An instalment due 2026-03-01 repaid on 03-06: frozen on 03-04 with the 3-day grace,
# never with a 7-day one.
LATE_BOOK = [
    purchase("2026-02-01T00:00:00Z", 35000, order="o-17", first_due="2026-03-01T00:00:00Z"),
    repayment("2026-03-06T00:00:00Z", 35000, event_id="r-1"),
]
GRACE_7D = 'version = "grace-7d"\n[overdue]\ngrace_days = 7\nminor_max_dpd = 7\n'


def test_backtest_prints_a_table_of_counts_frozen_users_and_differing_decisions(
    tmp_path: Path,
) -> None:
    source = _write(tmp_path / "in.jsonl", LATE_BOOK)
    (tmp_path / "candidate.toml").write_text(GRACE_7D)
    done = _lineguard(
        "backtest", source, "--candidate", "candidate.toml", "--until", "2026-06-01T00:00:00Z",
        "--partitions", "4", "--show", "1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "candidate policy grace-7d: records=2 processed=2 duplicates=0 dead_lettered=0" in lines
    table = {
        tuple(line.split()[:2]): line.split()[2:] for line in lines if line.startswith("limit.")
    }
    assert table[("limit.freeze", "OVERDUE_ACTIVE")] == ["1", "0", "-1"]
    assert table[("limit.restore", "REPAID_AND_CURED")] == ["1", "0", "-1"]
    assert table[("limit.reduce", "(decisions)")] == ["0", "0", "0"]
    assert "frozen at end: baseline 0, candidate 0; only baseline 0, only candidate 0" in lines
    assert "differing decisions: 2, first 1 shown" in lines
    assert lines[-1] == (
        "  2026-03-04T00:00:00Z  u-1  timer:overdue:2026-03-04T00:00:00Z:"
        " limit.freeze frozen [OVERDUE_ACTIVE] -> none"
    )


def test_backtest_json_is_one_document_for_machines(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", LATE_BOOK)
    (tmp_path / "candidate.toml").write_text(GRACE_7D)
    done = _lineguard(
        "backtest", source, "--candidate", "candidate.toml", "--format", "json",
        "--output", "report.json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = orjson.loads((tmp_path / "report.json").read_bytes())
    assert (doc["baseline"]["policy_version"], doc["candidate"]["policy_version"]) == (
        "2026-11-28.2", "grace-7d",
    )  # fmt: skip
    assert doc["records_agree"] is True
    assert doc["identical"] is False
    # Without --until the cure never ends: the baseline leaves u-1 frozen.
    assert doc["frozen_at_end"] == {
        "baseline": 1, "candidate": 0, "only_baseline": ["u-1"], "only_candidate": [],
    }  # fmt: skip
    assert [(c["kind"], c["caused_by"]) for c in doc["changes"]] == [
        ("baseline_only", "timer:overdue:2026-03-04T00:00:00Z")
    ]
    assert doc["changes"][0]["baseline"]["type"] == "limit.freeze"


@pytest.mark.parametrize("which", ["--baseline", "--candidate"])
def test_backtest_with_a_bad_policy_names_the_file_and_the_field(
    tmp_path: Path, which: str
) -> None:
    (tmp_path / "bad.toml").write_text('version = "x"\n[overdue]\ngrace_days = "3"\n')
    (tmp_path / "good.toml").write_text(GRACE_7D)
    other = "--candidate" if which == "--baseline" else "--baseline"
    source = _write(tmp_path / "in.jsonl", LATE_BOOK)
    done = _lineguard("backtest", source, which, "bad.toml", other, "good.toml", cwd=tmp_path)
    assert done.returncode != 0
    assert done.stdout == ""
    assert "bad.toml" in done.stderr
    assert "overdue.grace_days" in done.stderr


def test_backtest_names_the_bad_input_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(orjson.dumps(LATE_BOOK[0]) + b"\n" + b'{"topic": "credit.refunds.v1"}\n')
    (tmp_path / "candidate.toml").write_text(GRACE_7D)
    done = _lineguard("backtest", source, "--candidate", "candidate.toml", cwd=tmp_path)
    assert done.returncode != 0
    assert "line 2: unknown topic" in done.stderr


def test_replay_groups_by_the_workers_partition_count_by_default(tmp_path: Path) -> None:
    # u-1 and u-2 fall on partitions 1 and 4 of 6. On one partition, u-2's application moves
    # the watermark past u-1's overdue instalment; on the worker's 6, it does not.
    source = _write(
        tmp_path / "in.jsonl",
        [
            purchase("2026-02-01T00:00:00Z", 35000, first_due="2026-03-01T00:00:00Z"),
            application("2026-03-10T09:00:00Z", user="u-2"),
        ],
    )
    by_default = _lineguard("replay", source, cwd=tmp_path)
    one = _lineguard("replay", source, "--partitions", "1", cwd=tmp_path)
    one_by_setting = _lineguard(
        "replay", source, cwd=tmp_path, settings={"LINEGUARD_TOPIC_PARTITIONS": "1"}
    )
    assert by_default.returncode == one.returncode == one_by_setting.returncode == 0
    assert "decisions=0" in by_default.stderr
    assert "decisions=1" in one.stderr
    assert "decisions=1" in one_by_setting.stderr
    refused = _lineguard("replay", source, "--partitions", "0", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--partitions must be from 1 to 10000" in refused.stderr


def test_replay_reads_stdin_and_honours_now_at_the_epoch(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", [repayment("2026-03-06T00:00:00Z", 1)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    with source.open("rb") as stdin:
        done = subprocess.run(
            [*LINEGUARD, "replay", "-", "--now", "1970-01-01T00:00:00Z"], stdin=stdin,
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # 1970 as the wall clock puts the 2026 repayment in the future; the real clock would not.
    assert "records=1 processed=0 duplicates=0 dead_lettered=1" in done.stderr


def test_replay_keeps_integers_past_64_bits_in_object_values(tmp_path: Path) -> None:
    line = orjson.dumps(repayment("2026-03-06T00:00:00Z", 1))
    source = tmp_path / "in.jsonl"
    source.write_bytes(line.replace(b'"amount":1', b'"amount":1' + b"0" * 23))  # 10**23
    done = _lineguard("replay", source, "--dead-letters", "dlt.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (letter,) = [orjson.loads(line) for line in (tmp_path / "dlt.jsonl").read_bytes().splitlines()]
    assert letter["reason"] == "schema_violation"
    assert "<= 9007199254740991" in letter["error"]  # as the worker says it, not "got float"
    assert '"amount":1' + "0" * 23 in letter["value"]


@pytest.mark.parametrize("command", ["replay", "backtest"])
def test_an_output_that_cannot_be_written_stops_before_the_run(
    tmp_path: Path, command: str
) -> None:
    source = _write(tmp_path / "in.jsonl", [repayment("2026-03-06T00:00:00Z", 1)])
    (tmp_path / "candidate.toml").write_text(GRACE_7D)
    extra = ["--candidate", "candidate.toml"] if command == "backtest" else []
    done = _lineguard(command, source, *extra, "-o", tmp_path / "no" / "out", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"lineguard: {tmp_path / 'no' / 'out'}: No such file or directory"
    ]


def test_replay_refuses_to_write_over_its_input(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", [repayment("2026-03-06T00:00:00Z", 1)])
    before = source.read_bytes()
    done = _lineguard("replay", source, "-o", "in.jsonl", cwd=tmp_path)
    assert done.returncode == 2
    assert "an input of this command; it would be overwritten" in done.stderr
    assert source.read_bytes() == before
    both = _lineguard("replay", source, "-o", "a.jsonl", "--dead-letters", "a.jsonl", cwd=tmp_path)
    assert both.returncode == 2
    assert "--dead-letters a.jsonl is also --output" in both.stderr


def test_replay_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    # 3,000 users freeze on three small applications each: far more than a pipe's buffer.
    lines = [
        application(f"2026-03-01T00:00:0{n}Z", 500, user=f"u-{user}", event_id=f"a-{user}-{n}")
        for user in range(3_000)
        for n in range(3)
    ]
    source = _write(tmp_path / "in.jsonl", lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEGUARD_")}
    process = subprocess.Popen(
        [*LINEGUARD, "replay", str(source), "--now", "2026-03-02T00:00:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    with process.stdout, process.stderr:
        try:
            assert process.stdout.read(100).startswith(b'{"event_id"')
            process.stdout.close()
            errors = process.stderr.read().decode()
            assert process.wait(timeout=120) == 141, errors
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "Traceback" not in errors


BAD_ENV_POLICY = 'version = "env"\n[rules.loan_velocity]\nrestore_max_applications = 9\n'


def test_a_bad_policy_stops_the_worker_before_it_contacts_kafka(tmp_path: Path) -> None:
    policy = tmp_path / "env.toml"
    policy.write_text(BAD_ENV_POLICY)
    with socket.socket() as closed:  # a port no broker listens on: Kafka is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    done = _lineguard(
        "worker", cwd=tmp_path,
        settings={"LINEGUARD_BROKER_URL": f"kafka://127.0.0.1:{port}",
                  "LINEGUARD_POLICY_FILE": str(policy)},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"LINEGUARD_POLICY_FILE={policy}: invalid policy:" in done.stderr
    assert "rules.loan_velocity.restore_max_applications" in done.stderr
    assert "cannot reach Kafka" not in done.stderr


@pytest.mark.parametrize("before", [["-l", "info"], ["--json"], ["-q"], ["-L", "aio"]])
def test_the_worker_is_checked_with_fausts_top_level_options_before_it(
    before: list[str], tmp_path: Path
) -> None:
    # main() looked for "worker" only first on the line: after -l info it ran none of its
    # checks, and Faust started a worker with a bad policy, a taken port and no topics.
    policy = tmp_path / "env.toml"
    policy.write_text(BAD_ENV_POLICY)
    done = _lineguard(
        *before, "worker", cwd=tmp_path, settings={"LINEGUARD_POLICY_FILE": str(policy)}
    )
    assert done.returncode == 1, done.stderr
    assert f"LINEGUARD_POLICY_FILE={policy}: invalid policy:" in done.stderr
    assert "Unable connect" not in done.stderr  # stopped before it contacts Kafka
    refused = _lineguard(*before, "worker", "-p", "7000", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "takes its web address from LINEGUARD_WEB_HOST" in refused.stderr
    replayed = _lineguard(
        *before, "replay", _write(tmp_path / "in.jsonl", LATE_BOOK), cwd=tmp_path,
        settings={"LINEGUARD_POLICY_FILE": str(policy)},
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr  # runs no agent, so ignores that policy


@pytest.mark.parametrize(
    ("option", "named"),
    [(["-D", "elsewhere"], "LINEGUARD_DATADIR"), (["--app=os"], "its own app")],
)
@pytest.mark.parametrize("command", ["worker", "tables"])
def test_fausts_datadir_and_app_options_are_refused(
    option: list[str], named: str, command: str, tmp_path: Path
) -> None:
    # -D was ignored without a word, LINEGUARD_DATADIR kept; -A loaded another module.
    done = _lineguard(*option, command, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("lineguard: ") and named in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_a_workdir_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    # Faust changed into it after parsing, with a FileNotFoundError traceback.
    policy = Path(__file__).parents[1] / "risk" / "default_policy.toml"
    done = _lineguard("-W", tmp_path / "nowhere", "check-policy", policy, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        f"lineguard: -W/--workdir {tmp_path / 'nowhere'}: no such directory\n",
    )
    (tmp_path / "here").mkdir()
    moved = _lineguard("-W", tmp_path / "here", "check-policy", policy, cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr


@pytest.mark.parametrize(
    "given", [["-W", "here"], ["--workdir", "here"], ["--workdir=here"], ["-Where"]]
)
def test_a_relative_workdir_is_entered_once(given: list[str], tmp_path: Path) -> None:
    # Faust changed into it twice, the second time from inside it (here/here): a traceback.
    (tmp_path / "here").mkdir()
    done = _lineguard(*given, "tables", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| users |" in done.stdout


FAUST_COMMANDS_REFUSED = ["agents", "clean-versions", "completion", "livecheck", "model", "models",
                          "send"]  # fmt: skip


@pytest.mark.parametrize("command", FAUST_COMMANDS_REFUSED)
def test_fausts_commands_that_fail_here_are_refused_in_one_line(
    command: str, tmp_path: Path
) -> None:
    # agents, model and completion ended in a traceback, livecheck in a usage error, send
    # took no account of the contract, models and clean-versions had nothing to show or do.
    done = _lineguard(command, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"lineguard: {command} is Faust's, and not lineguard's: ")
    assert done.stderr.count("\n") == 1


def test_the_help_lists_the_commands_that_work_and_no_other(tmp_path: Path) -> None:
    shown = _lineguard("--help", cwd=tmp_path).stdout
    lines = shown.split("Commands:")[1].splitlines()
    listed = {line.split()[0] for line in lines if line[:3].strip() and line.startswith("  ")}
    assert listed == {"backtest", "check-policy", "demo", "replay", "reset", "simulate",
                      "tables", "worker"}  # fmt: skip
    assert "Start worker instance for given app" not in shown  # Faust's words, not ours


def test_commands_that_run_no_agent_ignore_the_workers_policy(tmp_path: Path) -> None:
    env_policy = tmp_path / "env.toml"
    env_policy.write_text(BAD_ENV_POLICY)
    settings = {"LINEGUARD_POLICY_FILE": str(env_policy)}
    good = tmp_path / "good.toml"
    good.write_text(GRACE_7D)
    checked = _lineguard("check-policy", good, cwd=tmp_path, settings=settings)
    assert checked.returncode == 0, checked.stderr
    assert "valid policy, version grace-7d" in checked.stdout
    source = _write(tmp_path / "in.jsonl", LATE_BOOK)
    replayed = _lineguard("replay", source, cwd=tmp_path, settings=settings)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replay uses the packaged policy, not LINEGUARD_POLICY_FILE ({env_policy})" in (
        replayed.stderr
    )
    compared = _lineguard("backtest", source, "--candidate", good, cwd=tmp_path, settings=settings)
    assert compared.returncode == 0, compared.stderr
    assert f"pass --baseline {env_policy} for the worker's" in compared.stderr
    chosen = _lineguard("replay", source, "--policy", good, cwd=tmp_path, settings=settings)
    assert "LINEGUARD_POLICY_FILE" not in chosen.stderr


@pytest.mark.parametrize("option", [["-p", "7000"], ["--web-host=10.0.0.1"], ["-b", "127.0.0.2"]])
def test_fausts_web_options_are_refused_for_the_lineguard_settings(
    option: list[str], tmp_path: Path
) -> None:
    # Faust's -b overrode LINEGUARD_WEB_HOST, and its banner then named another address.
    done = _lineguard("worker", *option, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "takes its web address from LINEGUARD_WEB_HOST and LINEGUARD_WEB_PORT" in done.stderr
    assert option[0].split("=")[0] in done.stderr


def test_a_worker_without_its_web_server_is_refused(tmp_path: Path) -> None:
    # Faust's --without-web left the other workers forwarding /users to a closed port,
    # and no /readyz or /metrics.
    done = _lineguard("worker", "--without-web", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "lineguard worker always serves HTTP" in done.stderr


def test_the_help_offers_no_option_that_is_refused(tmp_path: Path) -> None:
    shown = _lineguard("--help", cwd=tmp_path).stdout
    assert "--datadir" not in shown and "--app" not in shown
    assert "--loglevel" in shown
    worker = _lineguard("worker", "--help", cwd=tmp_path).stdout
    for refused in ("--web-port", "--web-host", "--web-bind", "--web-transport", "--without-web"):
        assert refused not in worker
    assert "--loglevel" in worker


def test_the_help_and_version_are_lineguards(tmp_path: Path) -> None:
    shown = _lineguard("--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "lineguard: a real-time credit-line risk monitor" in shown.stdout
    assert "Welcome" not in shown.stdout
    version = _lineguard("--version", cwd=tmp_path)
    assert version.stdout.startswith(f"lineguard {package_version('lineguard')} (faust-streaming ")


@pytest.mark.parametrize(
    ("args", "environment", "where"),
    [
        (["-L", "uvloop", "worker"], {}, "-L 'uvloop'"),
        (["--loop=eventlet", "worker"], {}, "--loop 'eventlet'"),
        (["worker", "--loop", "gevent"], {}, "--loop 'gevent'"),
        (["worker"], {"FAUST_LOOP": "uvloop"}, "FAUST_LOOP 'uvloop'"),
        (["replay", "x.jsonl"], {"F_LOOP": "uvloop"}, "F_LOOP 'uvloop'"),
    ],
)
def test_another_event_loop_is_refused_in_one_line_before_faust_loads_it(
    args: list[str], environment: dict[str, str], where: str, tmp_path: Path
) -> None:
    # Faust loads the loop's library when it is imported: a traceback ("No module named
    # 'uvloop'"), before lineguard's own checks ran.
    done = _lineguard(*args, cwd=tmp_path, settings=environment)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"lineguard: {where}: lineguard runs only on asyncio's event loop, aio (Faust's"
        " default); leave the option out"
    ]


def test_the_installed_command_checks_the_loop_before_faust_is_imported() -> None:
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="lineguard")
    assert command.value == "streams.entry:main"
    asked = subprocess.run(
        [sys.executable, "-c", "import sys; import streams.entry; print('faust' in sys.modules)"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert asked.stdout == "False\n"

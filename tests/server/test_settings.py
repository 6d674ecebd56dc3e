"""Settings enter in one place: a flag over a SHAPLEY_SVC_* variable over the default."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shapley_svc.contexts import ContextLimits
from shapley_svc.server import Settings, settings_from
from shapley_svc.spark import dataframe as spark_dataframe


def test_a_flag_beats_the_environment_which_beats_the_default():
    environ = {"SHAPLEY_SVC_MAX_FEATURES": "512", "SHAPLEY_SVC_COMPUTE_THREADS": "3"}
    settings = settings_from(["--max-features", "64"], environ)
    assert settings.max_features == 64  # flag over environment
    assert settings.compute_threads == 3  # environment over default
    assert settings.max_outputs == Settings().max_outputs  # default
    assert settings_from([], {}) == Settings()


def test_environment_values_are_typed_and_checked():
    settings = settings_from([], {"SHAPLEY_SVC_GRACE_SECONDS": "2.5", "SHAPLEY_SVC_ADDRESS": ":0"})
    assert settings.grace_seconds == 2.5 and settings.address == ":0"
    with pytest.raises(ValueError, match="SHAPLEY_SVC_MAX_CONTEXTS='many'"):
        settings_from([], {"SHAPLEY_SVC_MAX_CONTEXTS": "many"})
    with pytest.raises(ValueError, match="SHAPLEY_SVC_MAX_CONTEXTS must be >= 1"):
        settings_from([], {"SHAPLEY_SVC_MAX_CONTEXTS": "0"})


def test_the_context_service_gets_the_limits_and_answers_fit_in_a_message():
    limits = settings_from(
        ["--max-message-bytes", "4096", "--max-contexts", "3"], {}
    ).context_limits()
    assert limits.max_answer_bytes == 4096 and limits.max_contexts == 3
    assert limits.max_store_bytes == Settings().max_context_store_bytes


def test_help_names_both_streaming_rpcs_under_the_stream_limit(capsys):
    with pytest.raises(SystemExit):
        settings_from(["--help"], {})
    text = " ".join(capsys.readouterr().out.split())
    stream_limit = text[text.rindex("--max-concurrent-streams") :]  # past the usage line
    assert "ExplainStream and CreateContextStream" in stream_limit.split("(env")[0]


def test_max_budget_is_a_flag_an_environment_variable_and_a_context_limit():
    assert Settings().max_budget == 65_536
    # One default: the contexts' limit, which the server's flag and Spark's bound repeat.
    assert Settings().max_budget == ContextLimits.max_budget == spark_dataframe.MAX_BUDGET
    settings = settings_from([], {"SHAPLEY_SVC_MAX_BUDGET": "128"})
    assert settings.max_budget == 128 and settings.context_limits().max_budget == 128
    assert settings_from(["--max-budget", "64"], {"SHAPLEY_SVC_MAX_BUDGET": "128"}).max_budget == 64
    with pytest.raises(ValueError, match="--max-budget must be >= 1"):
        settings_from(["--max-budget", "0"], {})


@pytest.mark.parametrize("name", ["max_explain_rows", "max_context_store_bytes", "worker_threads"])
def test_an_integer_setting_past_int64_is_refused_naming_it(name):
    """GetServerInfo answered INTERNAL on a limit past 2**63 - 1, which its int64 field cannot
    carry; the largest that fits serves."""
    flag = "--" + name.replace("_", "-")
    with pytest.raises(
        ValueError,
        match=rf"^{flag} must be <= 9223372036854775807 \(2\*\*63 - 1\); got 9223372036854775808$",
    ):
        settings_from([flag, str(2**63)], {})
    assert getattr(settings_from([flag, str(2**63 - 1)], {}), name) == 2**63 - 1


def test_settings_built_in_code_name_the_field_and_the_command_line_names_the_flag():
    with pytest.raises(ValueError, match="worker_threads must be >= 1; got 0"):
        Settings(worker_threads=0)
    with pytest.raises(ValueError, match=r"^--worker-threads must be >= 1; got 0$"):
        settings_from(["--worker-threads", "0"], {"SHAPLEY_SVC_WORKER_THREADS": "4"})
    with pytest.raises(ValueError, match=r"^SHAPLEY_SVC_WORKER_THREADS must be >= 1; got 0$"):
        settings_from([], {"SHAPLEY_SVC_WORKER_THREADS": "0"})
    with pytest.raises(
        ValueError, match=r"^--tls-cert \(or SHAPLEY_SVC_TLS_CERT\) and --tls-key must be given t"
    ):
        settings_from(["--tls-key", __file__], {})
    # `health` reads the variables alone: a setting missing both ways is named both ways (it
    # named --tls-key, a flag `health` does not have).
    with pytest.raises(
        ValueError,
        match=r"^SHAPLEY_SVC_TLS_CERT and --tls-key \(or SHAPLEY_SVC_TLS_KEY\) must be given t",
    ):
        settings_from([], {"SHAPLEY_SVC_TLS_CERT": __file__})


def test_tls_files_that_grpc_could_not_bind_with_are_refused_naming_their_flags(
    certificates, tmp_path
):
    """A key that is not the certificate's, or an encrypted key, failed only at bind, reported
    as a failure to listen; each PEM file alone passed the marker check."""
    pki = certificates
    ok = settings_from(
        ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")], {}
    )
    assert ok.tls_cert.endswith("server.pem")
    with pytest.raises(ValueError, match=r"^--tls-cert and --tls-key are not a certificate and"):
        settings_from(
            ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "client.key")], {}
        )
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pki / "server.key"), "-aes256", "-passout", "pass:secret",
         "-out", str(encrypted)],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"^SHAPLEY_SVC_TLS_CERT and SHAPLEY_SVC_TLS_KEY are not"):
        settings_from(
            [],
            {
                "SHAPLEY_SVC_TLS_CERT": str(pki / "server.pem"),
                "SHAPLEY_SVC_TLS_KEY": str(encrypted),
            },
        )
    # A CA file with a certificate block that does not parse.
    damaged = tmp_path / "damaged-ca.pem"
    damaged.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=r"^--tls-client-ca: .* holds no readable certificate"):
        settings_from(
            ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
             "--tls-client-ca", str(damaged)],
            {},
        )  # fmt: skip


def test_a_tokens_file_saved_with_a_byte_order_mark_gives_its_first_token_whole(tmp_path):
    """Editors on Windows start UTF-8 files with a byte-order mark: it made the first token
    unusable (every call with it UNAUTHENTICATED) while the server started normally."""
    from shapley_svc.server.settings import read_tokens

    tokens = tmp_path / "tokens.txt"
    tokens.write_bytes(b"\xef\xbb\xbftok-first\r\ntok-second\n")
    assert read_tokens(str(tokens)) == (b"tok-first", b"tok-second")


def test_a_context_dir_that_cannot_hold_contexts_is_refused_naming_its_flag(tmp_path):
    """A file, or a path under one, stopped `serve` only after it had bound (exit 1, a bare
    "[Errno 17] File exists"); a directory that does not exist yet is made at start-up."""
    a_file = tmp_path / "contexts"
    a_file.write_text("not a directory")
    with pytest.raises(ValueError, match=r"^--context-dir: .*contexts exists and is not a direc"):
        settings_from(["--context-dir", str(a_file)], {})
    with pytest.raises(
        ValueError, match=r"^SHAPLEY_SVC_CONTEXT_DIR: cannot create .*below: Not a d"
    ):
        settings_from([], {"SHAPLEY_SVC_CONTEXT_DIR": str(a_file / "below")})
    with pytest.raises(ValueError, match=r"^context_dir: "):
        Settings(context_dir=str(a_file))
    later = tmp_path / "volume" / "contexts"
    assert settings_from(["--context-dir", str(later)], {}).context_dir == str(later)
    assert later.is_dir()  # made, as the server would make it
    # A link to nothing, and a parent that says it is writable but makes nothing, passed the
    # check and stopped the server after it had bound (QA, 2026-12-05).
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match=r"^--context-dir: .*dangling is a symbolic link to nothi"):
        settings_from(["--context-dir", str(dangling)], {})
    if Path("/proc/self").is_dir():
        with pytest.raises(ValueError, match=r"^--context-dir: cannot create /proc/shapley-"):
            settings_from(["--context-dir", "/proc/shapley-contexts"], {})
    result = subprocess.run(
        [sys.executable, "-m", "shapley_svc", "serve", "--address", "127.0.0.1:0",
         "--metrics-address", "", "--context-dir", str(a_file)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"shapley-svc serve: --context-dir: {a_file} exists and is not a directory"
    ]


def test_a_context_dir_that_cannot_be_written_is_refused(tmp_path):
    """Every fit's save failed there. Checked as the server runs: root writes through file
    modes, so as root the check runs without the capability that lets it."""
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    check = """
import sys
from shapley_svc.server import settings_from
try:
    settings_from(sys.argv[1:], {})
except ValueError as error:
    print(error)
"""
    for path, problem in (
        (read_only, f"--context-dir: {read_only} is not writable"),
        (read_only / "contexts", f"--context-dir: cannot create {read_only / 'contexts'}: "
         "Permission denied"),
    ):  # fmt: skip
        command = [sys.executable, "-c", check, "--context-dir", str(path)]
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                pytest.skip("as root, needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
            dropped = "-dac_override,-dac_read_search"
            command = ["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}", "--",
                       *command]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == problem, result.stderr


def test_a_tokens_file_splits_at_line_ends_only():
    """str.splitlines cut 'a<form feed>VeryLongSecretPart' into two live tokens, one of a
    single letter, past the printable-ASCII check (QA, 2026-12-05)."""
    import tempfile

    from shapley_svc.server.settings import SettingError, read_tokens

    with tempfile.NamedTemporaryFile("wb", suffix=".txt") as tokens:
        tokens.write(b"first\r\na\x0cVeryLongSecretPart\n")
        tokens.flush()
        with pytest.raises(SettingError, match=r"token 2 holds '\\x0c'"):
            read_tokens(tokens.name)


def test_a_small_but_matching_tls_key_is_left_to_grpc(tmp_path):
    """OpenSSL's default security level refused a matching RSA-1024 pair (EE_KEY_TOO_SMALL)
    with which the server had served TLS: the check is of the files, not of policy."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-days", "2",
         "-subj", "/CN=small", "-keyout", "small.key", "-out", "small.pem"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    flags = ["--tls-cert", str(tmp_path / "small.pem"), "--tls-key", str(tmp_path / "small.key")]
    assert settings_from(flags, {}).tls_key.endswith("small.key")


def test_the_health_port_must_be_a_port_of_its_own():
    with pytest.raises(ValueError, match=r"^--health-address must be another port than --address$"):
        settings_from(["--address", "0.0.0.0:50051", "--health-address", "0.0.0.0:50051"], {})
    with pytest.raises(
        ValueError,
        match=r"^SHAPLEY_SVC_HEALTH_ADDRESS must be another port than --metrics-address$",
    ):
        settings_from(["--metrics-address", ":9464"], {"SHAPLEY_SVC_HEALTH_ADDRESS": ":9464"})
    assert settings_from(["--address", ":0", "--health-address", ":0"], {}).health_address == ":0"


def test_an_artifact_that_is_not_a_file_is_refused_before_binding(tmp_path):
    # It bound, then stopped with exit 1 and "cannot start: artifact manifest not found",
    # naming no flag (QA 2026-12-06); its content is checked as it loads.
    with pytest.raises(ValueError, match=r"^--artifact: '.*missing.json' is not a file"):
        settings_from(["--artifact", str(tmp_path / "missing.json")], {})
    with pytest.raises(ValueError, match=r"^SHAPLEY_SVC_ARTIFACT: '.*' is not a file"):
        settings_from([], {"SHAPLEY_SVC_ARTIFACT": str(tmp_path)})
    manifest = tmp_path / "combiner.json"
    manifest.write_text("{}")
    assert settings_from(["--artifact", str(manifest)], {}).artifact == str(manifest)

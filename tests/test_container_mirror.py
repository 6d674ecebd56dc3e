"""The container build's Debian archive comes from the machine's apt configuration."""

from tests.container.image import debian_mirror


def test_the_archive_is_the_one_apt_uses_for_the_suite(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPLEY_SVC_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    assert debian_mirror(tmp_path) is None
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://archive.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://disabled.invalid/debian\nSuites: bookworm\nEnabled: no\n\n"
        "# a comment\nTypes: deb deb-src\nURIs: http://archive.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror(tmp_path) == "http://archive.invalid/debian"
    # One-line entries (options included) are read first, as apt lists them first.
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://source.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.invalid/debian bookworm main\n"
    )
    assert debian_mirror(tmp_path) == "http://one-line.invalid/debian"
    monkeypatch.setenv("SHAPLEY_SVC_DEBIAN_MIRROR", "http://chosen.invalid/debian")
    assert debian_mirror(tmp_path) == "http://chosen.invalid/debian"

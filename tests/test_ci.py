from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci_lines[-1]
    assert "pytest" in command and "venv" in command, command
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    first_screen = readme_lines[:40]
    assert command in first_screen, f"README's first screen lacks the CI command: {command}"

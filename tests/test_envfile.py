"""The env file is read as `set -a; . FILE` in bash reads it (the playbook sources `~/.env`
that way, so the panes and the orchestrator must see the same values): `#` inside values,
quotes, a byte order mark, `export`, `$NAME` / `${NAME}` expansion against the process
environment and the keys above; values in the file win over the process environment; a line
bash would not assign is skipped and named once; the process environment is never touched."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from dotenv import dotenv_values

from orchestrator.envfile import EnvSource, decode_env_bytes, parse_env_text, read_env_text
from orchestrator.redact import redact

BASE = {"HOME": "/home/tester", "PATH": "/usr/bin:/bin", "BASEVAR": "from-process", "EMPTY": ""}

# every line is one case; the cross-check compares each key with what bash sets
SAMPLE = r"""# a comment line
HASH_IN_WORD=b#c
HASH_AFTER_SPACE=b #c
PASSWORD=pa#ss@word
SINGLE='q # x'
DOUBLE="d # y"
export EXPORTED=yes
  export   INDENTED=also
BRACED=${HASH_IN_WORD}-x
BARE=$HASH_IN_WORD
IN_DOUBLE="${HOME}/p"
NOT_IN_SINGLE='${HASH_IN_WORD} $HOME'
EMPTY_VALUE=
ESCAPES="esc\"aped\n \$HOME \\ \q"
BACKSLASH_SPACE=a\ b
BACKSLASH_HASH=a\#b
BACKSLASH_DOLLAR=\$HOME
EQUALS=x=y
MULTI="first
second"
TRAILING=abc # comment
UNSET_BARE=$NOT_SET_ANYWHERE-x
DEFAULTS="${NOT_SET_ANYWHERE-unset} ${EMPTY-empty} ${EMPTY:-colon} ${HASH_IN_WORD:+plus} ${NOT_SET_ANYWHERE+no}"
JOINED=a'b c'"d e"f
TWO_SINGLES='it''s'
PROCESS=${BASEVAR}+$PATH
QUOTE_THEN_WORD="$HOME"/dir
TILDE=~/x
TILDE_AFTER_COLON=a:~/y
TILDE_QUOTED="~/q"
DOLLAR_ALONE=cost$
DOLLAR_DOT=a$.b
OVERRIDDEN=first
SEES_FIRST=$OVERRIDDEN
OVERRIDDEN=second
SEES_LATER=${DEFINED_BELOW:-not yet}
DEFINED_BELOW=now
"""


def bash_values(path: Path, base: dict[str, str]) -> dict[str, str]:
    """What `set -a; . FILE` exports, read back with `env -0` (any byte, newlines included)."""
    result = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; env -0', "bash", str(path)],
        env=base,
        capture_output=True,
        check=True,
        timeout=10,
    )
    pairs = (entry.partition("=") for entry in result.stdout.decode("utf-8").split("\0") if entry)
    return {key: value for key, _, value in pairs}


def test_every_key_of_the_sample_has_the_value_bash_gives_it(tmp_path: Path) -> None:
    path = tmp_path / "sample.env"
    path.write_text(SAMPLE, encoding="utf-8")
    bash = bash_values(path, BASE)
    ours, problems = read_env_text(SAMPLE, BASE)
    assert problems == []
    keys = {line.split("=", 1)[0].split()[-1] for line in SAMPLE.splitlines() if "=" in line and line[:1] != "#"}
    assert keys == set(ours)
    assert {key: ours[key] for key in keys} == {key: bash[key] for key in keys}


def test_where_dotenv_values_alone_reads_the_sample_unlike_bash(tmp_path: Path) -> None:
    """Why the values are not taken from `dotenv_values` as they are: these keys differ from
    bash there (a python-dotenv upgrade that changes the list is worth a look)."""
    path = tmp_path / "sample.env"
    path.write_text(SAMPLE, encoding="utf-8")
    bash = bash_values(path, BASE)
    dotenv = dotenv_values(stream=io.StringIO(SAMPLE), interpolate=False)
    differs = {key for key in bash if key in dotenv and dotenv[key] != bash[key]}
    assert differs == {
        "BRACED",  # no expansion without interpolate (and with it, os.environ, not ours, is the scope)
        "BARE",
        "IN_DOUBLE",
        "ESCAPES",  # \n becomes a newline; \$ keeps its backslash
        "BACKSLASH_SPACE",
        "BACKSLASH_HASH",
        "BACKSLASH_DOLLAR",
        "UNSET_BARE",
        "DEFAULTS",
        "JOINED",
        "PROCESS",
        "TILDE",
        "TILDE_AFTER_COLON",
        "SEES_FIRST",
        "SEES_LATER",
    }
    # "..." followed by more of the word, and two quoted parts: lines dotenv cannot parse at all
    assert "QUOTE_THEN_WORD" not in dotenv and "TWO_SINGLES" not in dotenv
    interpolated = dotenv_values(stream=io.StringIO("A=x\nS='${A}'\n"), interpolate=True)
    assert interpolated["S"] == "x"  # dotenv expands inside single quotes; bash never does
    assert parse_env_text("A=x\nS='${A}'\n")["S"] == "${A}"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("A=b#c", "b#c"),
        ("A=b #c", "b"),
        ("A=b\t#c", "b"),
        ("A=#start", "#start"),
        ("A= #only a comment", ""),
        ("A='b #c'", "b #c"),
        ('A="b #c"', "b #c"),
        ("A=sk-abc#def # the key", "sk-abc#def"),
    ],
)
def test_a_hash_starts_a_comment_only_at_the_start_of_a_word(line: str, value: str) -> None:
    assert parse_env_text(line + "\n") == {"A": value}


def test_quotes_export_and_expansion_against_process_and_earlier_keys() -> None:
    text = 'export A="one two"\nB=\'$A ${A}\'\nC="$A|${B}"\nD=${LATER:-none}\nLATER=x\nE=$FROM_PROCESS/$A\n'
    values = parse_env_text(text, {"FROM_PROCESS": "p", "A": "process A"})
    assert values == {
        "A": "one two",
        "B": "$A ${A}",
        "C": "one two|$A ${A}",
        "D": "none",
        "LATER": "x",
        "E": "p/one two",
    }


def test_a_file_saved_with_crlf_line_ends_has_no_cr_in_its_values() -> None:
    assert parse_env_text("A=b\r\nB='c d'\r\nC=\"e\" # note\r\n") == {"A": "b", "B": "c d", "C": "e"}


def test_a_byte_order_mark_does_not_cost_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "bom.env"
    path.write_bytes(b"\xef\xbb\xbfOPENAI_API_KEY=sk-first-line-0001\nOTHER=1\n")
    warnings: list[str] = []
    env = EnvSource(path, base={}, warn=warnings.append).current()
    assert env == {"OPENAI_API_KEY": "sk-first-line-0001", "OTHER": "1"}
    assert warnings == []
    assert decode_env_bytes(b"\xef\xbb\xbfA=\xff\n") == ("\n", [(1, "A")])  # named without the mark


def test_lines_bash_would_not_assign_are_skipped_and_named_once(tmp_path: Path) -> None:
    path = tmp_path / "odd.env"
    path.write_bytes(
        b"GOOD=1\n"
        b"BAD_UTF8=\xff\n"
        b"SPACED = value\n"
        b"TWO=words here\n"
        b"AMP=pass&word\n"
        b"CMD=$(cat secret)\n"
        b"OPEN='never closed\n"
        b"LAST=ok\n"
    )
    warnings: list[str] = []
    source = EnvSource(path, base={"TWO": "from process"}, warn=warnings.append)
    env = source.current()
    assert env == {"GOOD": "1", "LAST": "ok", "TWO": "from process"}  # bash leaves TWO as it was
    source.current()
    [utf8, syntax] = warnings  # once each, however often the file is read
    assert str(path) in utf8 and "line 2 (BAD_UTF8)" in utf8 and "UTF-8" in utf8
    assert str(path) in syntax
    for expected in (
        "line 3 (SPACED): not a KEY=value line bash reads",
        "line 4 (TWO): bash would run `here` as a command",
        "line 5 (AMP): an unquoted `&` is a shell operator",
        "line 6 (CMD): bash would expand `$(`",
        "line 7 (OPEN): a `'` is not closed",
    ):
        assert expected in syntax, syntax
    assert "single quotes" in syntax and "pass&word" not in syntax


def test_values_in_the_file_win_and_an_empty_one_unsets(tmp_path: Path) -> None:
    path = tmp_path / "over.env"
    path.write_text("HTTPS_PROXY=http://file:3128\nNO_PROXY=\n")
    env = EnvSource(path, base={"HTTPS_PROXY": "http://process:1", "NO_PROXY": "*", "KEEP": "k"}).current()
    assert env == {"HTTPS_PROXY": "http://file:3128", "KEEP": "k"}


def test_a_missing_file_is_named_once_unless_it_is_the_default(tmp_path: Path) -> None:
    warnings: list[str] = []
    missing = tmp_path / "nowhere.env"
    source = EnvSource(missing, base={"A": "1"}, warn=warnings.append)
    assert source.current() == {"A": "1"} and source.current() == {"A": "1"}
    assert len(warnings) == 1 and str(missing) in warnings[0] and "not found" in warnings[0]
    quiet: list[str] = []
    assert EnvSource(missing, base={}, required=False, warn=quiet.append).current() == {}
    assert quiet == []


def test_a_secret_with_a_hash_is_redacted_whole(tmp_path: Path) -> None:
    path = tmp_path / "secret.env"
    path.write_text("OPENAI_API_KEY=sk-zz#hash-inside-0001\n")
    EnvSource(path, base={}).current()
    assert "hash-inside" not in redact("key is sk-zz#hash-inside-0001 here")


def test_the_process_environment_is_never_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMUXAGENT_ENVFILE_PROBE", "process")
    before = dict(os.environ)
    path = tmp_path / "probe.env"
    path.write_text("TMUXAGENT_ENVFILE_PROBE=file\nTMUXAGENT_ENVFILE_NEW=$TMUXAGENT_ENVFILE_PROBE\n")
    env = EnvSource(path).current()
    assert env["TMUXAGENT_ENVFILE_PROBE"] == "file" and env["TMUXAGENT_ENVFILE_NEW"] == "file"
    assert dict(os.environ) == before

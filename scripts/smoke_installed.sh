#!/usr/bin/env bash
# The shipped playbook from a real (non-editable) install: a fresh venv in a temp dir,
# `pip install` of this checkout, then — from an empty folder, far from the source tree —
# `tmux-agent validate --scenario a` and the plugin run by pytest on the installed package.
# Exits non-zero when either fails. Needs tmux and chromium on the machine (.ci/run installs them).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/tmuxagent-smoke.XXXXXX")"
if [ -z "${KEEP_SMOKE:-}" ]; then
  trap 'rm -rf "$work"' EXIT
fi

echo "smoke: venv and non-editable install in $work"
"$python" -m venv "$work/venv"
# a copy of the tree, so the build leaves no build/ or egg-info behind in the checkout
mkdir "$work/src"
tar -C "$repo" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude=./reports -cf - . | tar -C "$work/src" -xf -
"$work/venv/bin/pip" install -q "$work/src"

bin="$work/venv/bin"
# the real agents .ci/run installed into the checkout's .agents/ (the empty folder has none)
for agent in claude codex; do
  var="TMUXAGENT_$(echo "$agent" | tr a-z A-Z)_BIN"
  if [ -z "${!var:-}" ] && [ -x "$repo/.agents/node_modules/.bin/$agent" ]; then
    export "$var=$repo/.agents/node_modules/.bin/$agent"
  fi
done
mkdir "$work/empty"
cd "$work/empty"
export PATH="$bin:$PATH"
unset PYTHONPATH

# the package must come from site-packages, not from the checkout
"$bin/python" - <<'EOF'
import pathlib, sys
import pytest_tmuxagent, tmuxagent_scenarios
for module in (pytest_tmuxagent, tmuxagent_scenarios):
    where = pathlib.Path(module.__file__).resolve()
    assert "site-packages" in where.parts, f"{module.__name__} imported from {where}"
deploy = pathlib.Path(tmuxagent_scenarios.__file__).parent / "deploy" / "prometheus" / "prometheus.yml"
assert deploy.is_file(), f"scenario F's deploy files are missing from the wheel: {deploy}"
assert (pathlib.Path(pytest_tmuxagent.__file__).parent / "py.typed").is_file(), "py.typed is missing"
print("smoke: imports from", pathlib.Path(tmuxagent_scenarios.__file__).parent.parent)
EOF

echo "smoke: tmux-agent validate --scenario a"
"$bin/tmux-agent" validate --scenario a
test -s reports/orchestrator_real_world_test_report.md

echo "smoke: python -m pytest -p tmuxagent --pyargs tmuxagent_scenarios -m scenario_b -q"
"$bin/python" -m pytest -p tmuxagent --pyargs tmuxagent_scenarios -m scenario_b -q

echo "smoke: installed playbook passed"

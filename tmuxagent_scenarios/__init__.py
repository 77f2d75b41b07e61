"""The A–G real-world validation playbook, shipped with tmuxagent.

Run it with `tmux-agent validate` (all of it, as an acceptance gate) or with pytest itself:
`python -m pytest -p tmuxagent --pyargs tmuxagent_scenarios -m scenario_b`. Each test module
carries the marker of its scenario (pytest_tmuxagent.registry lists them).
"""

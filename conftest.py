"""Root conftest: the tmuxagent plugin (and its observability fixtures) load through the
pytest11 entry point; pytester runs nested pytest sessions for the plugin's own tests.
The playbook itself is the `tmuxagent_scenarios` package (testpaths collects it too)."""

pytest_plugins = ["pytester"]

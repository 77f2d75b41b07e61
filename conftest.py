"""Root conftest: the tmuxagent plugin is loaded through its pytest11 entry point;
pytester runs nested pytest sessions for the plugin's own tests."""
# pytest_tmuxagent.observability: Prometheus server, dashboard process and Chromium fixtures.
pytest_plugins = ["pytester", "pytest_tmuxagent.observability"]

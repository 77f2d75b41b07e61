"""Root conftest: the tmuxagent plugin is loaded through its pytest11 entry point."""

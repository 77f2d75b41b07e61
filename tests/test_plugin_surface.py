"""The plugin as a public surface: the facade, typed factories without **kwargs, fixture
names that cannot clash (with libtmux's plugin either), the override fixtures, the ini twins
of the options, and the hooks that add scenarios and acceptance criteria."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import pytest_tmuxagent
from pytest_tmuxagent import observability, plugin
from pytest_tmuxagent.registry import BUILTIN_SCENARIOS, Scenario, merge

HEADLINE = {"tmux_server", "agent_pane", "fake_codex", "wecom_mock", "metrics_scraper", "orchestrator_service"}


def fixture_names(module: object) -> set[str]:
    """Fixtures a module defines (pytest 8.4+ wraps them in FixtureFunctionDefinition)."""
    found = set()
    for attribute in vars(module).values():
        marker = getattr(attribute, "_fixture_function_marker", None)
        if marker is not None:
            found.add(marker.name or attribute.__name__)
    return found


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tmuxagent-report", "report.md", *args)


# the facade ---------------------------------------------------------------------------------


def test_the_facade_exports_what_it_lists_and_ships_py_typed() -> None:
    for name in pytest_tmuxagent.__all__:
        assert getattr(pytest_tmuxagent, name) is not None, name
    for name in ("OrchestratorService", "AgentPane", "TmuxTestServer", "WeComMock", "FakeCodex", "MetricsScraper"):
        assert name in pytest_tmuxagent.__all__
    assert {"wait_until", "WaitTimeout", "Evidence", "Scenario", "BUILTIN_SCENARIOS"} <= set(pytest_tmuxagent.__all__)
    assert (Path(pytest_tmuxagent.__file__).parent / "py.typed").exists()


def test_factories_have_real_keyword_parameters() -> None:
    protocols = {
        pytest_tmuxagent.OrchestratorServiceFactory: [
            "panes",
            "settings",
            "env",
            "extra_args",
            "session_overrides",
            "start",
            "start_args",
        ],
        pytest_tmuxagent.AgentPaneFactory: ["name", "workdir", "shell"],
        pytest_tmuxagent.PrometheusServerFactory: ["base_config", "targets", "scrape_interval", "evaluation_interval"],
        pytest_tmuxagent.DashboardServerFactory: ["db", "audit_log", "token", "extra_args", "dsn"],
    }
    for protocol, names in protocols.items():
        parameters = list(inspect.signature(protocol.__call__).parameters.values())[1:]
        assert [p.name for p in parameters] == names, protocol
        assert all(p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters), protocol


def test_an_unknown_keyword_to_orchestrator_service_is_a_type_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_typo(agent_pane, orchestrator_service):
            with pytest.raises(TypeError, match="setings"):
                orchestrator_service([agent_pane("weather/bot")], setings={}, start=False)
        """
    )
    run(pytester).assert_outcomes(passed=1)


# names ----------------------------------------------------------------------------------------


def test_fixture_names_are_headline_or_prefixed() -> None:
    names = fixture_names(plugin) | fixture_names(observability)
    assert HEADLINE | {"tmuxagent_evidence", "tmuxagent_settings", "tmuxagent_pane_shell"} <= names
    generic = sorted(n for n in names - HEADLINE if not n.startswith(("tmuxagent_", "_tmuxagent_")))
    assert generic == []
    for old in ("browser_page", "save_screenshot", "prometheus_server", "dashboard_server", "dashboard_page"):
        assert old not in names


def test_no_clash_with_libtmux_plugin() -> None:
    libtmux_plugin = pytest.importorskip("libtmux.pytest_plugin")
    theirs = fixture_names(libtmux_plugin)
    assert {"server", "session"} <= theirs
    assert not theirs & (fixture_names(plugin) | fixture_names(observability))


def test_both_plugins_load_and_list_their_fixtures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    text = result.stdout.str()
    assert result.ret == 0
    for name in ("tmux_server", "orchestrator_service", "tmuxagent_settings", "tmuxagent_browser_page", "server"):
        assert f"\n{name} " in text or f"\n{name}\n" in text or f"\n{name} [" in text, name


# override fixtures -------------------------------------------------------------------------------


def test_pane_shell_override_reaches_every_pane(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def tmuxagent_pane_shell():
            return "env PS1='custom> ' HISTFILE=/dev/null bash --norc --noprofile"
        """
    )
    pytester.makepyfile(
        """
        from pytest_tmuxagent import wait_until

        def test_shell(tmux_server, agent_pane):
            pane = agent_pane("weather/bot")
            assert tmux_server.pane_shell.startswith("env PS1='custom> '")
            wait_until(lambda: any(line.startswith("custom> ") for line in pane.capture()), timeout=10)
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_settings_override_sits_under_each_services_settings(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def tmuxagent_settings(tmuxagent_settings):
            return {**tmuxagent_settings, "stall_timeout_seconds": 9, "cooldown_seconds": 4}
        """
    )
    pytester.makepyfile(
        """
        import tomllib

        def test_merge(agent_pane, orchestrator_service, tmuxagent_settings):
            service = orchestrator_service([agent_pane("weather/bot")], settings={"cooldown_seconds": 5}, start=False)
            toml = tomllib.loads(service.orchestrator_path.read_text())
            assert toml["stall_timeout_seconds"] == 9
            assert toml["cooldown_seconds"] == 5
            assert toml["ai"] == {"backend": "off"}
            assert tmuxagent_settings["stall_timeout_seconds"] == 9
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_default_settings_are_a_fresh_copy_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_tmuxagent import COMPRESSED_SETTINGS

        def test_one(tmuxagent_settings):
            tmuxagent_settings["ai"]["backend"] = "codex"

        def test_two(tmuxagent_settings):
            assert tmuxagent_settings == COMPRESSED_SETTINGS
            assert COMPRESSED_SETTINGS["ai"] == {"backend": "off"}
        """
    )
    run(pytester).assert_outcomes(passed=2)


# ini twins -----------------------------------------------------------------------------------------


def only_scenario_b(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.scenario_b
        def test_b():
            pass
        """
    )


UNMET_CRITERION = """
from pytest_tmuxagent import Criterion


def pytest_tmuxagent_acceptance_criteria(config, summaries, failures):
    return [Criterion("值班已确认 — on-call confirmed", False, "a project's own check said no")]
"""


def test_gate_from_ini_and_the_option_wins(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntmuxagent_gate = true\n")
    pytester.makeconftest(UNMET_CRITERION)
    only_scenario_b(pytester)
    gated = run(pytester)
    assert gated.ret == 1  # every test passed, but a criterion is not met
    gated.stdout.fnmatch_lines(["*acceptance criteria not met: 值班已确认 — on-call confirmed*"])
    assert run(pytester, "--no-tmuxagent-gate").ret == 0


def test_gate_off_by_default_and_on_by_option(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(UNMET_CRITERION)
    only_scenario_b(pytester)
    assert run(pytester).ret == 0
    assert run(pytester, "--tmuxagent-gate").ret == 1


def test_the_gate_passes_a_subset_run_whose_other_criteria_are_not_decided(pytester: pytest.Pytester) -> None:
    """Only B ran: "all seven pass" cannot be decided — not decided, not failed (issue 16/18)."""
    only_scenario_b(pytester)
    result = run(pytester, "--tmuxagent-gate")
    assert result.ret == 0
    assert "acceptance criteria not met" not in result.stdout.str()


def live_probe(pytester: pytest.Pytester, ini: str) -> None:
    pytester.makeini(f"[pytest]\n{ini}")
    pytester.makepyfile(
        """
        def test_probe(tmuxagent_live):
            assert tmuxagent_live is None
        """
    )


def test_live_from_ini_reads_the_ini_config_and_options_win(pytester: pytest.Pytester) -> None:
    live_probe(pytester, "tmuxagent_live = true\ntmuxagent_config = conf/from-ini.yaml\n")
    from_ini = run(pytester)
    assert from_ini.ret != 0
    from_ini.stdout.fnmatch_lines([f"*{pytester.path / 'conf' / 'from-ini.yaml'}: file not found*"])

    from_option = run(pytester, "--tmuxagent-config", "from-option.yaml")
    from_option.stdout.fnmatch_lines(["*from-option.yaml: file not found*"])
    assert "from-ini.yaml" not in from_option.stdout.str()

    run(pytester, "--no-tmuxagent-live").assert_outcomes(passed=1)


def test_live_off_by_default(pytester: pytest.Pytester) -> None:
    live_probe(pytester, "")
    run(pytester).assert_outcomes(passed=1)


def test_report_path_from_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntmuxagent_report = out/acceptance.md\n")
    only_scenario_b(pytester)
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider").ret == 0
    assert "| B 卡顿检测与自愈 — stall detection and self-healing | passed |" in (
        pytester.path / "out" / "acceptance.md"
    ).read_text(encoding="utf-8")


# hooks ---------------------------------------------------------------------------------------------


PROJECT_HOOKS = """
from pytest_tmuxagent import Criterion, Scenario, scenarios_pass


def pytest_tmuxagent_scenarios(config):
    return [Scenario("h", "夜间巡检", "nightly patrol"), Scenario("billing", "计费对账", "billing", marker="billing")]


def pytest_tmuxagent_acceptance_criteria(config, summaries, failures):
    return [
        scenarios_pass("夜间巡检通过 — patrol passes", summaries, "h"),
        Criterion("计费无差错 — billing reconciles", summaries["billing"].result == "passed", "billing says so"),
    ]
"""


def test_project_scenarios_get_markers_rows_and_criteria(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PROJECT_HOOKS)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.scenario_h
        def test_patrol(tmuxagent_evidence):
            tmuxagent_evidence.add("note", "patrol", "all quiet")

        @pytest.mark.billing
        def test_billing():
            assert 1 + 1 == 3, "induced billing failure"
        """
    )
    result = run(pytester, "--strict-markers", "--alluredir", "allure-results")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*scenario H: passed *1 test(s)*夜间巡检 — nightly patrol", "*scenario BILLING: FAILED *计费对账 — billing"]
    )
    report = (pytester.path / "report.md").read_text(encoding="utf-8")
    assert "| H 夜间巡检 — nightly patrol | passed | 1 |" in report and "all quiet" in report
    assert "| BILLING 计费对账 — billing | FAILED | 1 |" in report and "induced billing failure" in report
    assert "| 夜间巡检通过 — patrol passes | ✅ met | scenario H passed |" in report
    assert "| 计费无差错 — billing reconciles | ❌ not met | billing says so |" in report
    assert "| A 命令执行反馈 — command execution feedback | not run |" in report  # the built-in seven stay
    features = "".join(p.read_text() for p in (pytester.path / "allure-results").glob("*-result.json"))
    assert "Scenario H — nightly patrol (夜间巡检)" in features


def test_an_unmet_project_criterion_fails_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from pytest_tmuxagent import Criterion

        def pytest_tmuxagent_acceptance_criteria():
            return [Criterion("always unmet", False, "by design")]
        """
    )
    pytester.makepyfile(
        "\n".join(
            f"import pytest\n@pytest.mark.{s.marker}\ndef test_{s.letter}():\n    pass\n" for s in BUILTIN_SCENARIOS
        )
    )
    result = run(pytester, "--tmuxagent-gate")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*acceptance criteria not met: always unmet"])


def test_a_marker_of_an_unregistered_scenario_is_unknown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.scenario_h
        def test_h():
            pass
        """
    )
    assert run(pytester, "--strict-markers").ret != 0


def test_registry_rejects_duplicates_and_bad_keys() -> None:
    assert list(merge([[Scenario("h", "甲", "one")], [Scenario("h", "甲", "one")]])) == [*"abcdefg", "h"]
    with pytest.raises(ValueError, match="already registered"):
        merge([[Scenario("a", "甲", "another a")]])
    with pytest.raises(ValueError, match="already registered"):
        merge([[Scenario("x", "甲", "x", marker="scenario_b")]])
    with pytest.raises(TypeError, match="Scenario objects"):
        merge([["h"]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="lower-case identifier"):
        Scenario("H-1", "甲", "bad")

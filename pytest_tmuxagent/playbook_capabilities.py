"""The playbook's capabilities, per built-in scenario: which `tmuxagent_scenarios` tests prove
what, in the playbook's words (三、测试场景), and how their failures read in the report.

Keyed by test function name (fnmatch patterns, no parametrize id). tests/test_capabilities.py
collects the shipped scenarios and fails when a test has no entry here (or no `capability`
marker), so a new scenario test cannot land without saying what it proves. Clauses match the
failing statement or its message; the first match wins, so each test lists them in the order
its checks run, the later check saying what the earlier ones already showed ("stall detected
but 命令卡顿 not delivered").
"""

from __future__ import annotations

from .capabilities import Capability, Clause

__all__ = ["PLAYBOOK_CAPABILITIES"]

C = Clause
RATES = r"assert_rates_are_the_dbs|replay's rates|failure_rate|success_rate"  # scenario F's rate checks

# 场景 A：命令执行反馈 — last_command_result, Prometheus 计数, Dashboard 反馈, orchestrator-actions.jsonl
A = (
    Capability(
        ("test_command_feedback",),
        "注入成功/失败命令: exit code and status land in last_command_result, the Prometheus counters and the audit log",
        (
            C(r"row = service\.wait_result", "the injected command's result never came back"),
            C(r"last == \{|last_command_result", "metadata.last_command_result differs from the command's result"),
            C(
                r"row\.exit_code|row\.status|row\.output_tail|row\.duration_s|row\.started_at",
                "last_command_result has the wrong exit code, status or output",
            ),
            C(
                r"orchestrator_command",
                "result recorded but the Prometheus 计数 (orchestrator_commands_total) is wrong",
            ),
            C(
                r"kinds ==|result_event|audit",
                "result recorded but orchestrator-actions.jsonl lacks its queued/dispatched/result events",
            ),
        ),
    ),
    Capability(
        ("test_five_thousand_lines_keep_only_the_configured_tail",),
        "last_command_result keeps only the configured output tail of a 5,000-line command",
    ),
    Capability(
        ("test_cd_and_export_keep_their_effect_on_the_pane_shell",),
        "a dispatched `cd` / `export` keeps its effect in the pane's shell",
    ),
    Capability(
        ("test_duration_is_measured_by_the_pane_shell",),
        "last_command_result.duration_s is the pane shell's own timing",
    ),
    Capability(("test_commands_run_one_at_a_time_in_fifo_order",), "queued commands run one at a time, in FIFO order"),
    Capability(
        ("test_a_failure_under_set_e_keeps_its_exit_code_and_the_shell",),
        "a failure under `set -e` keeps its exit code and the pane's shell",
    ),
    Capability(
        ("test_the_pane_shows_the_header_never_the_script",), "the pane shows the command, never the internal script"
    ),
    Capability(
        (
            "test_bash_history_holds_the_users_commands",
            "test_zsh_history_holds_the_users_commands_from_the_second_dispatch_on",
        ),
        "the shell's history holds the user's commands, not the orchestrator's",
    ),
    Capability(
        ("test_a_builtin_command_forks_nothing_in_the_pane",),
        "a builtin command forks nothing in the pane's shell (the driver's own work is builtins)",
    ),
    Capability(
        ("test_an_unsupported_shell_gets_nothing_typed",),
        "a pane in an unsupported shell gets nothing typed (unsupported)",
    ),
    Capability(
        (
            "test_zsh_a_fatal_expansion_error_still_ends_the_command",
            "test_zsh_an_evaluation_error_keeps_the_exit_code_a_person_sees",
        ),
        "a zsh error still ends the command with the exit code a person sees",
    ),
    Capability(
        ("test_error_messages_never_name_the_internal_script",),
        "error messages in the pane never name the internal script",
    ),
    Capability(("test_no_rc_file_of_the_user_is_read",), "the panes' shells read none of the user's rc files"),
    Capability(("test_the_project_wide_pane_shell_may_name_a_shell",), "the project-wide pane shell may name a shell"),
    Capability(
        ("test_results_appear_on_the_open_dashboard",),
        "Dashboard 反馈: each result appears on the open dashboard in place",
    ),
    Capability(
        (
            "test_a_prompt_turn_lands_with_the_agents_reply",
            "test_a_prompt_turn_ends_with_the_agents_reply_embedded_or_live",
        ),
        "an agent's prompt turn lands in last_command_result with its reply",
    ),
    Capability(
        ("test_a_read_only_tool_is_listed_and_its_output_reaches_the_model",),
        "an agent turn's tool calls are listed in last_command_result",
    ),
    Capability(
        ("test_a_multi_line_unicode_prompt_arrives_whole",), "a multi-line Unicode prompt reaches the agent whole"
    ),
    Capability(
        ("test_two_queued_prompts_run_in_order_one_turn_at_a_time",),
        "queued prompts run in order, one agent turn at a time",
    ),
    Capability(
        ("test_an_agent_session_on_a_pane_running_something_else_types_nothing",),
        "an agent session on a pane running something else gets nothing typed (unsupported)",
    ),
    Capability(
        ("test_an_agent_already_running_without_hooks_is_adopted",),
        "an agent a person started (no hooks) is adopted and its turns followed on screen",
    ),
)

# 场景 B：卡顿检测与自愈 — orchestrator_stall_count 增加, “命令卡顿”通知, 冷却解除后命令能继续执行
B = (
    Capability(
        ("test_stalled_command_is_healed_alerted_and_cooled_down",),
        "卡顿检测与自愈: a stalled `sleep 600` is interrupted, retried, alerted (命令卡顿) and cooled down",
        (
            C(r"row = service\.wait_result\(stuck", "`sleep 600` never ended: stall not detected"),
            C(
                r"row\.status|row\.exit_code|row\.attempts|output_tail\.endswith",
                "stall detected but the command not ended `stalled` after its retry",
            ),
            C(r"stall_count", "stall detected but orchestrator_stall_count not increased"),
            C(r"wait_for_messages|命令卡顿|waited", "stall detected but 命令卡顿 not delivered"),
            C(r"cooldown|until|dispatched_during", "命令卡顿 delivered but the cooldown not kept"),
            C(r"nxt|after|recovered", "cooldown over but the next command did not run (冷却解除后命令能继续执行)"),
            C(r"stall_detected|stall_interrupt|stall_retry", "stall handled but its audit events are missing"),
        ),
    ),
    Capability(
        ("test_a_cooldown_survives_a_restart_of_the_orchestrator",),
        "a restart inside the cooldown keeps cooldown_until: the next command waits for it (冷却解除后命令能继续执行)",
        (
            C(r"cooldown_until\"\] == stored", "the stop lost the session's cooldown_until"),
            C(
                r"started_at\) >= until|dispatched\[|ended\[",
                "after a restart the next command ran inside the cooldown",
            ),
            C(r"row\.status|after-restart", "after a restart the cooldown never ended: the next command did not run"),
        ),
    ),
    Capability(
        ("test_a_long_command_that_keeps_printing_is_not_a_stall",), "a long command that keeps printing is not a stall"
    ),
    Capability(
        ("test_interrupt_keys_are_configurable_per_session",), "a stall is interrupted with the session's own keys"
    ),
    Capability(
        (
            "test_a_question_is_not_a_stall_and_reply_answers_it",
            "test_an_agents_question_is_waiting_input_never_a_stall_and_reply_answers_it",
        ),
        "a question is waiting_input (需要输入), never a stall, and `tmux-agent reply` answers it",
    ),
    Capability(
        ("test_a_command_not_marked_retry_safe_runs_once",), "a stalled command not marked retry-safe runs once"
    ),
    Capability(
        ("test_a_hung_model_stream_is_interrupted_retried_alerted_and_cooled_down",),
        "卡顿检测与自愈 for agents: a hung turn is interrupted, retried, alerted (命令卡顿) and cooled down",
        (
            C(r"wait_for_messages|命令卡顿", "agent stall detected but 命令卡顿 not delivered"),
            C(r"stall_count", "agent stall detected but orchestrator_stall_count not increased"),
            C(r"cooldown", "命令卡顿 delivered but the agent session not cooled down"),
        ),
    ),
    Capability(
        ("test_a_turn_whose_tool_keeps_printing_is_busy_not_stalled",),
        "an agent turn whose tool keeps printing is busy, not stalled",
    ),
    Capability(
        ("test_an_allowlisted_tool_request_is_approved_by_the_policy",),
        "an allowlisted agent tool request is approved by the safety policy",
    ),
    Capability(
        ("test_a_destructive_tool_request_is_refused_and_the_agent_told_why",),
        "a destructive agent tool request is refused and the agent told why",
    ),
    Capability(
        (
            "test_an_escalated_tool_request_waits_for_a_person_who_approves_it",
            "test_a_person_denies_an_escalated_request",
        ),
        "an escalated tool request waits (需要确认) for a person's approve / deny",
    ),
)

# 场景 C：决策辅助 — blocker → metadata.next_actions, “下一步建议”通知, Dashboard 推荐卡片需更新
C_ = (
    Capability(
        ("test_missing_api_key_blocker_gets_next_actions",),
        "缺少 API Key blocker → metadata.next_actions and 下一步建议 (codex, or rules when codex fails)",
        (
            C(r"latency_s", "codex hung: the rules fallback did not come at the configured timeout"),
            C(r"next_actions", "blocker set but metadata.next_actions not written"),
            C(r"wait_for_messages|下一步建议", "next_actions written but 下一步建议 not delivered"),
            C(
                r"fake_codex|call\[|pid_alive",
                "next_actions written but codex not called as configured (or a hung codex not killed)",
            ),
            C(
                r"orchestrator_decisions_total|decision\[",
                "下一步建议 delivered but the decision not counted or audited",
            ),
        ),
    ),
    Capability(
        ("test_suggested_commands_obey_the_safety_policy",),
        "next_actions' suggested commands obey the safety policy (auto-run, denied, needs approval)",
    ),
    Capability(
        ("test_blockers_come_from_pane_output_and_failure_streaks",),
        "blockers come from pane output, command output and failure streaks, once each",
        (C(r"detected|blockers\[", "blockers detected twice or from the wrong source"),),
    ),
    Capability(
        ("test_recommendation_cards_follow_next_actions",),
        "Dashboard 推荐卡片需更新: cards follow next_actions without a reload",
    ),
    Capability(
        ("test_c_a_reply_reporting_a_blocker_gets_a_next_prompt_that_approve_delivers",),
        "an agent's blocker reply gets next_actions (a next prompt) that approve delivers",
    ),
    Capability(
        ("test_c_a_turn_ending_in_an_api_error_is_a_blocker_and_its_prompt_can_be_sent_again",),
        "an agent turn ending in an API error is a blocker whose prompt can be sent again",
    ),
    Capability(
        ("test_c_codex_advises_the_agents_next_prompt_and_the_safety_policy_judges_it",),
        "codex advises an agent's next prompt and the safety policy judges it",
    ),
)

# 场景 D：需求文档分解 — requirements_doc → task_decomposition → 按步骤驱动 orchestrator 执行命令
D = (
    Capability(
        ("test_requirements_doc_drives_execution",),
        "requirements_doc → task_decomposition, its steps driven in order; a failed step stops the plan",
        (
            C(
                r"plan\[\"source\"\]|plan\[\"steps\"\]\[|\"commands\"\]|acceptance|== STEPS",
                "requirements_doc set but task_decomposition wrong",
            ),
            C(r"stopped|\"pending\", \"failed\"", "a failed step did not stop the plan"),
            C(r"下一步建议|Fix the failed plan step", "plan stopped but no 下一步建议 for the failed step"),
            C(r"completed|order\(pane\)", "task_decomposition made but its steps not executed in order"),
        ),
    ),
    Capability(
        ("test_a_step_whose_command_stalled_or_was_cancelled_stops_the_plan",),
        "按步骤驱动: a step whose command stalled or was cancelled stops the plan (only success moves on)",
        (C(r"stopped|steps\]|order\(pane\)|queued_commands", "a stalled or cancelled step did not stop the plan"),),
    ),
    Capability(
        ("test_a_step_the_safety_policy_denies_stops_the_plan_and_is_never_typed",),
        "a plan step the safety policy denies (rm -rf) stops the plan and is never typed",
        (
            C(r"pane\.capture|order\(pane\)|queued_commands", "a denied plan step was typed into the pane"),
            C(r"stopped|denied", "a denied plan step did not stop the plan"),
        ),
    ),
    Capability(
        ("test_codex_decomposes_and_unchanged_content_is_not_sent_again",),
        "codex decomposes the requirements_doc once; unchanged content is not sent again",
    ),
    Capability(("test_once_mode_runs_the_whole_plan_then_exits",), "`--once` runs the whole plan then exits"),
    Capability(
        ("test_by_default_a_plan_waits_for_tmux_agent_approve",),
        "a plan waits for `tmux-agent approve` before its steps run",
    ),
    Capability(
        ("test_d_prompt_steps_run_in_order_one_turn_after_the_other",),
        "a requirements_doc's prompt steps drive an agent one turn after the other",
    ),
    Capability(("test_d_a_failed_turn_stops_the_plan_there",), "a failed agent turn stops the plan at that step"),
)

# 场景 E：连续失败告警 — orchestrator_failure_streak, 通知 (命令连续失败), 阻断行为
E = (
    Capability(
        ("test_failure_streak_alerts_once_blocks_and_resumes",),
        "连续失败 ≥ 阈值: orchestrator_failure_streak, one 命令连续失败, the session blocked until unblock",
        (
            C(r"events\.count\(\"session_blocked\"\)", "block and unblock not in the audit log"),
            C(
                r"orchestrator_failure_streak\", float\(threshold",
                "failures injected but orchestrator_failure_streak not at the threshold",
            ),
            C(r"orchestrator_session_blocked\", 1\.0", "streak at the threshold but the session not blocked (阻断)"),
            C(r"\[alert\] = |命令连续失败\" in alert", "streak at the threshold but 命令连续失败 not delivered"),
            C(
                r"blocked\"\] is True|queued|command_dispatched",
                "session blocked but queued commands dispatched anyway",
            ),
            C(r"in kept\]|kept\.log|cli\(\"unblock\"", "`tmux-agent unblock` did not resume the queued commands"),
            C(
                r"orchestrator_failure_streak\", 0\.0|session_blocked\", session=SESSION\) == 0",
                "unblocked but the streak gauges not reset",
            ),
            C(r"len\(wecom_mock\.messages\(\)\) == 1", "命令连续失败 sent twice for one streak"),
        ),
    ),
    Capability(("test_a_success_resets_the_streak",), "a success resets the failure streak: no block, no 命令连续失败"),
    Capability(
        ("test_unblock_resets_the_streak_*",),
        "`tmux-agent unblock` resets the streak: one more failure does not block or alert again",
        (
            C(
                r"session_blocked\", 1\.0|wait_for_messages\(1\)",
                "before the unblock: streak at the threshold but not blocked or not alerted",
            ),
            C(r"unblock did not reset|failure_streak\"\] == 1", "unblock did not reset the failure streak"),
            C(r"blocked|nxt = |still-dispatched", "one failure after unblock blocked the session again"),
            C(r"second alert|len\(alerts\) == 1", "命令连续失败 sent twice for one streak"),
        ),
    ),
    Capability(
        ("test_failed_agent_turns_alert_once_block_and_resume",),
        "连续失败 of agent turns: one 命令连续失败, the session blocked until unblock",
    ),
)

# 场景 F：指标与审计 — /metrics, 成功率/失败率/队列深度 in Prometheus, replay 复盘 JSONL 日志
F = (
    Capability(
        ("test_prometheus_sees_rates_and_queue_alerts_only_on_a_streak_and_replay_verifies",),
        "Prometheus sees 成功率, 失败率 and 队列深度; alerts only on a streak; replay matches the DB",
        (
            C(r"success ==|failure ==", "Prometheus 成功率/失败率 differ from the commands run"),
            C(r"QUEUE_MAX", "Prometheus 队列深度 differs from the queue"),
            C(r"alerts\(\) == \[\]|health|ALL_ALERTS", "an alert fired on a healthy run (指标无红色告警)"),
            C(r"firing|FIRING_STREAK", "failure streak but its Prometheus alert not firing"),
            C(r"\[alert\] = |命令连续失败\" in alert", "failure streak but 命令连续失败 not delivered"),
            C(r"summary\[|problems|replay|verdict", "replay 复盘 differs from the DB"),
        ),
    ),
    Capability(
        ("test_replay_verifies_the_audit_log_of_a_mixed_run",),
        "tmux-agent-orchestrator-replay 复盘 JSONL 日志 matches the state DB and catches a DB that disagrees",
        (
            C(r"failure_rate", "replay failure_rate differs from the DB"),
            C(RATES, "replay success_rate / failure_rate differ from the DB"),
            C(r"problems|replay_verified", "replay 复盘 differs from the DB"),
            C(r"summary\[", "replay counts differ from the run"),
            C(r"verdict|tampered", "replay did not catch a DB that disagrees with the log"),
        ),
    ),
    Capability(
        ("test_replay_of_stalled_and_cancelled_results_matches_the_db",),
        "replay 复盘 of stalled and cancelled results matches the DB (streak, stall count, rates)",
        (
            C(RATES, "replay success_rate / failure_rate differ from the DB"),
            C(
                r"failure_streak|stall_count|stall_episodes",
                "replay of a stall or cancel changed the failure streak or stall count",
            ),
            C(r"results", "replay counts of stalled / cancelled results differ from the DB"),
        ),
    ),
    Capability(
        ("test_replay_survives_a_damaged_log_names_its_bad_lines_and_keeps_the_numbers",),
        "replay 复盘 of a damaged log names its bad lines and keeps the clean log's numbers",
        (
            C(RATES, "replay of a damaged log: success_rate / failure_rate differ from the DB"),
            C(r"differs from the clean log", "a damaged log changed replay's numbers"),
            C(r"state DB differs", "a damaged log changed replay's numbers: the DB no longer matches"),
            C(r"problems|warning|cut short", "replay did not name the damaged log's bad lines"),
        ),
    ),
    Capability(
        ("test_soak_exports_the_playbook_range_queries_as_csv_and_png",),
        "回归测试 四.2: a soak's Prometheus range queries exported as CSV and PNG",
    ),
    Capability(
        ("test_agent_turns_approvals_questions_and_states_in_metrics_prometheus_and_replay",),
        "agent turns, approvals, questions and states show in /metrics, Prometheus and replay",
    ),
)

# 场景 G：通知降级验证 — 移除 WECOM_WEBHOOK, 不会异常退出, 降级提示, 还原变量后通知恢复正常
G = (
    Capability(
        ("test_removed_channel_degrades_then_recovers_and_flushes",),
        "移除 WECOM_WEBHOOK: no exit, one 降级提示, alerts kept; 还原变量后通知恢复正常",
        (
            C(r"process\.poll", "channel removed and the orchestrator exited (异常退出)"),
            C(r"pending\"\] == 2|notifications_pending", "channel removed but the alerts not kept in the outbox"),
            C(
                r"degraded_lines|health\[|notifications_degraded\"\) == 1",
                "channel removed but no single 降级提示 (degraded state)",
            ),
            C(r"wecom_mock\.requests == \[\]", "channel removed but messages still sent"),
            C(r"state\"\] == \"ok\"|degraded\", 0\.0", "channel restored but notifications still degraded"),
            C(
                r"wait_for_messages|messages|命令连续失败",
                "channel restored but the kept alerts not delivered (通知恢复正常)",
            ),
            C(r"leak|secret", "a WeCom secret reached a log"),
        ),
    ),
    Capability(
        ("test_restored_channel_recovers_with_nothing_pending",),
        "还原变量后通知恢复正常 with an empty outbox: status and the degraded gauge recover without a delivery",
        (
            C(
                r"degraded\", 1\.0|health\[\"state\"\] == \"degraded\"",
                "channel removed but no degraded state (降级提示)",
            ),
            C(
                r"status back to ok|recovered\[|degraded\", 0\.0",
                "channel restored with nothing pending but still degraded",
            ),
        ),
    ),
    Capability(
        ("test_failing_channel_keeps_the_alert_until_it_works",),
        "a failing WeCom channel degrades, keeps the alert and delivers it once it works",
        (
            C(r"process\.poll", "WeCom failing and the orchestrator exited (异常退出)"),
            C(r"state\"\] == \"degraded\"|degraded_lines", "WeCom failing but no single 降级提示"),
            C(r"pending|messages\(\) == \[\]", "WeCom failing but the alert not kept in the outbox"),
            C(r"wait_for_messages|first\.startswith", "channel works again but the kept alert not delivered"),
        ),
    ),
    Capability(
        ("test_an_expired_app_token_is_refreshed_without_degrading",),
        "an expired WeCom app token is refreshed without degrading",
    ),
    Capability(
        ("test_an_escalation_while_wecom_is_down_waits_in_the_outbox_and_the_agent_waits_for_a_person",),
        "an agent's 需要确认 waits in the outbox while WeCom is down, and the agent waits for a person",
    ),
)

PLAYBOOK_CAPABILITIES: dict[str, tuple[Capability, ...]] = {"a": A, "b": B, "c": C_, "d": D, "e": E, "f": F, "g": G}

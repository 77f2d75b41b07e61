from __future__ import annotations

from orchestrator.redact import redact, redact_obj, register_from_env


def test_known_values_and_secret_shapes_are_masked() -> None:
    register_from_env({"WECOM_APP_SECRET": "s3cr3t-app-value", "WECOM_WEBHOOK": "https://h/x?key=hook-KEY-42"})
    text = (
        "secret s3cr3t-app-value, hook hook-KEY-42, url https://h/cgi-bin/gettoken?corpid=ww1&corpsecret=zzz "
        "token access_token=tok-99 key sk-abcdef123456 Bearer eyJhbGciOi.abc"
    )
    out = redact(text)
    for secret in ("s3cr3t-app-value", "hook-KEY-42", "zzz", "tok-99", "sk-abcdef123456", "eyJhbGciOi.abc"):
        assert secret not in out
    assert "corpid=ww1" in out


def test_nested_structures_are_redacted() -> None:
    assert redact_obj({"a": ["OPENAI_API_KEY=sk-zzzzzzzzzz"], "n": 3}) == {"a": ["OPENAI_API_KEY=***"], "n": 3}

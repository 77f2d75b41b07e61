"""`tmux-agent doctor`'s network lines: one real HTTP request to each endpoint the orchestrator
talks to (WeCom; the OpenAI API when `[ai] backend = "openai"`), through the proxy that client
itself takes — the same rule (adapters/proxies.py) and the same HTTP library — so a line says
what the notifier or an AI call would meet, not merely whether a proxy port accepts TCP.

Each line: the endpoint, `via` the proxy (scheme, host, port; never a password) and the variable
that chose it, then the HTTP status or the error; a failing one says what to change.

The WeCom request is `GET /cgi-bin/gettoken` without parameters: it sends no message and no
secret, and WeCom answers it with JSON (errcode 41002), which a proxy's login page does not.
The OpenAI request is `GET {base}/models` with the API key, as the SDK sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from orchestrator.adapters.proxies import (
    ProxyClient,
    describe_proxy,
    httpx_client,
    proxy_for,
    proxy_problem,
    proxy_url,
    proxy_variable,
    requests_proxies,
    requests_session,
)
from orchestrator.cli.doctor_checks import CheckResult
from orchestrator.config import OrchestratorSettings

WECOM_DEFAULT_BASE = "https://qyapi.weixin.qq.com"
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass(frozen=True)
class Endpoint:
    name: str  # as the line names it: "WeCom", "OpenAI"
    url: str  # what is requested; never holds a secret
    client: ProxyClient  # which library the product talks to it with
    fix: str  # what to check when it cannot be reached directly
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


def endpoints(settings: OrchestratorSettings, env: Mapping[str, str]) -> list[Endpoint]:
    """The endpoints this configuration talks to over HTTP."""
    found = []
    webhook = (env.get("WECOM_WEBHOOK") or "").strip()
    app = all((env.get(k) or "").strip() for k in ("WECOM_CORP_ID", "WECOM_AGENT_ID", "WECOM_APP_SECRET"))
    if webhook or app:
        base = (env.get("WECOM_API_BASE") or "").strip() or (_origin(webhook) if webhook else WECOM_DEFAULT_BASE)
        found.append(
            Endpoint(
                "WeCom", f"{base.rstrip('/')}/cgi-bin/gettoken", "requests", "check WECOM_API_BASE / WECOM_WEBHOOK"
            )
        )
    if settings.ai.backend == "openai":
        base = settings.ai.openai_base_url or (env.get("OPENAI_BASE_URL") or "").strip() or OPENAI_DEFAULT_BASE
        key = (env.get("OPENAI_API_KEY") or "").strip()
        found.append(
            Endpoint(
                "OpenAI",
                f"{base.rstrip('/')}/models",
                "httpx",
                "check [ai] openai_base_url / OPENAI_BASE_URL",
                {"Authorization": f"Bearer {key}"} if key else {},
            )
        )
    return found


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def check_network(settings: OrchestratorSettings, env: Mapping[str, str], timeout: float) -> list[CheckResult]:
    """The proxies seen (if any), then one line per endpoint."""
    seen = [
        f"{name} {describe_proxy(proxy_url(value))}"
        for name in PROXY_VARIABLES
        if (value := (env.get(name.lower()) or env.get(name) or "").strip())
    ]
    results = []
    if seen:
        no_proxy = (env.get("no_proxy") or env.get("NO_PROXY") or "").strip()
        results.append(CheckResult("proxies", True, ", ".join(seen) + (f"; NO_PROXY {no_proxy}" if no_proxy else "")))
    return results + [reach(endpoint, env, timeout) for endpoint in endpoints(settings, env)]


def reach(endpoint: Endpoint, env: Mapping[str, str], timeout: float) -> CheckResult:
    """One request to `endpoint` the way its client sends it; ok when the service answered."""
    name = f"reach {endpoint.name}"
    proxy = proxy_for(endpoint.url, env)
    variable = proxy_variable(endpoint.url, env)
    route = f"{endpoint.url} via {describe_proxy(proxy)}" + (f" ({variable})" if variable else "")
    fix = (
        f"start the proxy at {describe_proxy(proxy)} or fix {variable} (or list the host in NO_PROXY)"
        if proxy
        else f"check the network, or {endpoint.fix.removeprefix('check ')}"
    )
    problem = proxy_problem(proxy, endpoint.client)
    if problem is not None:
        return CheckResult(name, False, f"{endpoint.url}: {problem.what}", problem.fix)
    try:
        status, content_type = _GET[endpoint.client](endpoint, env, timeout)
    except Exception as exc:  # every library failure (they differ per client) is one line
        return CheckResult(name, False, f"{route}: {_reason(exc)}", fix)
    answer = f"HTTP {status}" + (f" {content_type}" if "json" not in content_type else "")
    if status >= 500:
        why = "the proxy could not reach it, or the service fails" if proxy else "the service fails"
        return CheckResult(name, False, f"{route}: {answer}", f"{why}: {fix}")
    if "json" not in content_type:
        return CheckResult(
            name,
            False,
            f"{route}: {answer}, not the {endpoint.name} API",
            f"a proxy's login page or a wrong URL: {fix}",
        )
    return CheckResult(name, True, f"{route}: {answer}")


def _get_with_requests(endpoint: Endpoint, env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    with requests_session() as session:
        response = session.get(
            endpoint.url,
            headers=dict(endpoint.headers),
            proxies=requests_proxies(endpoint.url, env),
            timeout=timeout,
            allow_redirects=False,
        )
        return response.status_code, response.headers.get("content-type", "")


def _get_with_httpx(endpoint: Endpoint, env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    with httpx_client(endpoint.url, env, timeout) as client:
        response = client.get(endpoint.url, headers=dict(endpoint.headers))
        return response.status_code, response.headers.get("content-type", "")


_GET: dict[ProxyClient, Callable[[Endpoint, Mapping[str, str], float], tuple[int, str]]] = {
    "requests": _get_with_requests,
    "httpx": _get_with_httpx,
}


def _reason(exc: BaseException) -> str:
    """The exception's kind and its innermost cause (`Connection refused`, not a pool's repr)."""
    root = exc
    for _ in range(10):
        inner = getattr(root, "reason", None)
        inner = inner if isinstance(inner, BaseException) else (root.__cause__ or root.__context__)
        if inner is None:
            break
        root = inner
    detail = root.strerror if isinstance(root, OSError) and root.strerror else str(root) or type(root).__name__
    return f"{type(exc).__name__}: {' '.join(detail.split())[:200]}"

"""Email through the real ``sendgrid`` SDK (v3 mail send; the live API or the stand-in server).

Mail send takes no idempotency key either: a 429/503 or a refused connection was not processed
and may be retried; a timeout, a cut connection or another 5xx is ``UNKNOWN``. Messages with the
same rendered subject and body share one request (up to 1000 personalizations), each carrying
its outbox id in ``custom_args`` so events reconcile per message.
"""

from __future__ import annotations

import http.client
import urllib.error
from collections import defaultdict

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from lifecycle.transports.base import OutboundMessage, SendOutcome, SendResult

MAX_PERSONALIZATIONS = 1000


def _retry_after(exc: http_errors.HTTPError) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else (1.0 if exc.status_code == 429 else None)
    except ValueError:
        return 1.0


class SendGridTransport:
    name = "sendgrid"

    def __init__(self, api_key: str, from_email: str, *, base_url: str | None = None,
                 timeout: float = 10.0):
        self._client = SendGridAPIClient(api_key=api_key,
                                         host=base_url or "https://api.sendgrid.com")
        self._client.client.timeout = timeout
        self._from = from_email

    def _payload(self, group: list[OutboundMessage]) -> dict:
        first = group[0]
        return {
            "from": {"email": self._from},
            "subject": first.subject or "",
            "content": [{"type": "text/plain", "value": first.body}],
            "personalizations": [
                {"to": [{"email": m.to_address}], "custom_args": {"outbox_id": str(m.outbox_id)}}
                for m in group
            ],
        }

    def _send_group(self, group: list[OutboundMessage]) -> SendResult:
        try:
            response = self._client.send(self._payload(group))
        except (http_errors.TooManyRequestsError, http_errors.ServiceUnavailableError) as exc:
            return SendResult(SendOutcome.RETRY, error=f"sendgrid {exc.status_code}",
                              retry_after=_retry_after(exc))
        except http_errors.HTTPError as exc:
            if 400 <= exc.status_code < 500:
                return SendResult(SendOutcome.FAILED, error=f"sendgrid {exc.status_code}")
            return SendResult(SendOutcome.UNKNOWN, error=f"sendgrid {exc.status_code}")
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            outcome = SendOutcome.RETRY if refused else SendOutcome.UNKNOWN
            return SendResult(outcome, error=f"URLError {type(exc.reason).__name__}")
        except (TimeoutError, http.client.HTTPException, ConnectionError) as exc:
            return SendResult(SendOutcome.UNKNOWN, error=type(exc).__name__)
        batch = response.headers.get("X-Message-Id") if response.headers else None
        return SendResult(SendOutcome.SENT, provider_id=batch)

    def send_batch(self, messages: list[OutboundMessage]) -> list[SendResult]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, m in enumerate(messages):
            groups[(m.subject, m.body)].append(i)
        results: list[SendResult | None] = [None] * len(messages)
        for idxs in groups.values():
            for start in range(0, len(idxs), MAX_PERSONALIZATIONS):
                chunk = idxs[start:start + MAX_PERSONALIZATIONS]
                result = self._send_group([messages[i] for i in chunk])
                for i in chunk:
                    results[i] = result
        return results  # type: ignore[return-value]

    def close(self) -> None:
        pass

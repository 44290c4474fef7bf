"""`VastProvider`: the `Provider` protocol over the real vastai SDK (1.9.1), unmodified.

- Endpoint: ``[cloud] api_url``, else ``VAST_URL``, else console.vast.ai. The SDK reads
  ``VAST_URL`` once at import; we pass ``server_url`` on every call instead, so the endpoint
  is whatever this provider was built with, whenever vastai was first imported.
- Key: ``[cloud] api_key_file``, else ``VAST_API_KEY``, else the SDK's own files. It is held as a
  `Secret`; an SDK client (which keeps the raw key) is built per call and dropped after it, and
  the loggers that see HTTP traffic get a redacting filter.
- Creates go out once, SDK retries off: an answer that never came, came late or came as a 5xx
  raises `CreateUncertain` with the create's unique label, to be resolved by listing instances.
- Reads and idempotent changes retry a bounded number of times on 429 (waiting the server's
  Retry-After), 502/503/504 and network errors; destroy retries only a 429 (a refusal) and
  raises anything else, so its caller decides.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import requests

from rigdeck.core.cloud.provider import (
    OFFER_SORTS,
    CloudError,
    CreateUncertain,
    Credit,
    Instance,
    InstanceGone,
    MissingApiKey,
    Offer,
    OfferSort,
    Provider,
    ProviderUnavailable,
    RentRequest,
    new_label,
)
from rigdeck.core.cloud.vast_query import parse_query, server_order, sort_key
from rigdeck.core.cloud.vast_rows import instance_from_row, offer_from_row
from rigdeck.core.config import CloudSettings, Settings
from rigdeck.core.errors import RigdeckError
from rigdeck.core.secrets import RedactingFilter, Secret, read_secret_file, redact

DEFAULT_API_URL = "https://console.vast.ai"
PAGE_SIZE = 25
_HTTP_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.util.retry", "requests", "vastai")

T = TypeVar("T")
Retry = Literal["read", "rate_limit_only"]
Sdk = Any  # vastai.VastAI, imported lazily: the SDK pulls in a lot at import


def resolve_api_url(cloud: CloudSettings, env: Mapping[str, str] | None = None) -> str:
    environ = os.environ if env is None else env
    url = cloud.api_url.strip() or (environ.get("VAST_URL") or "").strip() or DEFAULT_API_URL
    return url.rstrip("/")


def default_key_files(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Where the vastai SDK and CLI keep the key: the XDG config file, then the legacy one."""
    environ = os.environ if env is None else env
    config_home = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return (config_home / "vastai" / "vast_api_key", Path.home() / ".vast_api_key")


def load_api_key(cloud: CloudSettings, env: Mapping[str, str] | None = None) -> Secret:
    """The Vast API key, or `MissingApiKey` saying where to put one."""
    environ = os.environ if env is None else env
    try:
        if cloud.api_key_file.strip():
            path = Path(cloud.api_key_file).expanduser()
            key = read_secret_file(path)
            if key is None:
                raise MissingApiKey(
                    f"[cloud] api_key_file names {path}, which is missing or empty; put your "
                    "Vast.ai API key there (chmod 600), or run with --simulate"
                )
            return key
        value = (environ.get("VAST_API_KEY") or "").strip()
        if value:
            return Secret(value)
        for path in default_key_files(environ):
            key = read_secret_file(path)
            if key is not None:
                return key
    except CloudError:
        raise
    except RigdeckError as exc:  # a key file others can read: its message says chmod 600
        raise CloudError(str(exc)) from None
    primary = default_key_files(environ)[0]
    raise MissingApiKey(
        "No Vast.ai API key: set VAST_API_KEY, save the key to "
        f"{primary} (chmod 600) or name a file in [cloud] api_key_file; "
        "--simulate runs against a simulated account"
    )


class VastProvider:
    """The `Provider` for Vast.ai. Every call blocks; run it in a worker."""

    name = "vast"

    def __init__(
        self,
        api_key: Secret,
        *,
        api_url: str = DEFAULT_API_URL,
        simulated: bool = False,
        timeout_s: float = 30.0,
        create_timeout_s: float = 60.0,
        attempts: int = 4,
        backoff_s: float = 0.25,
        max_retry_after_s: float = 30.0,
        show_unverified: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`attempts`: tries per read (first one included); `max_retry_after_s`: the longest
        Retry-After waited out, a longer one is reported instead."""
        if not isinstance(api_key, Secret) or not api_key:
            raise MissingApiKey("No Vast.ai API key was given")
        self._key = api_key
        self.api_url = api_url.rstrip("/")
        self.simulated = simulated
        self._timeout_s = timeout_s
        self._create_timeout_s = create_timeout_s
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self.show_unverified = show_unverified
        _guard_http_logs(api_key)

    def __repr__(self) -> str:
        kind = "simulated" if self.simulated else "live"
        return f"VastProvider({kind}, {self.api_url})"

    # -- offers ---------------------------------------------------------------------------

    def search_offers(
        self,
        query: str = "",
        *,
        sort: OfferSort = "price",
        interruptible: bool = False,
        limit: int = 50,
        show_unverified: bool | None = None,
        storage_gb: float = 5.0,
    ) -> Sequence[Offer]:
        """Offers matching a Vast query (``gpu_ram>=24 num_gpus=1 gpu_name=RTX_4090``).

        Unverified and unrentable machines are hidden unless `show_unverified` (None: the
        provider's setting, ``[cloud] show_unverified``). `storage_gb` prices the disk into
        the offers' ``dph_total`` on Vast's side; `Offer.dph` excludes it either way. `sort`:
        price ($/h, or the min bid when `interruptible`), tflops ($ per TFLOPS), reliability,
        bandwidth (download).
        """
        if sort not in OFFER_SORTS:
            raise CloudError(f"Unknown offer sort {sort!r}; one of {', '.join(OFFER_SORTS)}")
        if show_unverified is None:
            show_unverified = self.show_unverified
        filters = parse_query(query, show_unverified=show_unverified)
        order = server_order(sort, interruptible=interruptible)
        rows = self._call(
            "search offers",
            lambda sdk: sdk.search_offers(
                query=filters,
                type="bid" if interruptible else "on-demand",
                order=order,
                limit=limit,
                storage=storage_gb,
                no_default=True,
            ),
        )
        read_at = datetime.now(UTC)
        offers = [offer_from_row(row, read_at) for row in rows]
        return sorted(offers, key=sort_key(sort, interruptible=interruptible))

    # -- instances ------------------------------------------------------------------------

    def rent(self, request: RentRequest) -> int:
        label = request.label or new_label()
        what = f"create on offer {request.offer_id} (label {label})"

        from vastai.api.instances import (
            build_create_instance_payload,
            create_instance_from_payload,
        )

        # Built (and checked) before anything is sent, so a bad argument is a plain error and
        # only what happens on the wire can make a create uncertain.
        try:
            payload = build_create_instance_payload(
                image=request.image,
                disk=request.disk_gb,
                env=dict(request.env),
                price=request.bid,
                label=label,
                onstart_cmd=request.onstart,
                ssh=request.ssh,
                direct=request.ssh,
            )
        except ValueError as exc:
            raise CloudError(self._clean(f"Cannot {what}: {exc}")) from None

        def create(sdk: Sdk) -> Any:
            return create_instance_from_payload(sdk.client, request.offer_id, payload)

        try:
            answer = create(self._sdk(self._create_timeout_s))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status >= 500 or status == 0:
                raise self._uncertain(what, f"it answered {status}", label) from None
            raise self._http_error(what, exc.response, gone_is=None) from None
        except requests.ConnectTimeout:
            raise ProviderUnavailable(
                f"Vast.ai could not be reached at {self.api_url}; nothing was created"
            ) from None
        except requests.Timeout:
            raise self._uncertain(what, "its answer did not come in time", label) from None
        except requests.ConnectionError as exc:
            if _never_connected(exc):
                raise ProviderUnavailable(
                    f"Vast.ai could not be reached at {self.api_url}; nothing was created"
                ) from None
            raise self._uncertain(what, "the connection dropped", label) from None
        except ValueError:  # an unreadable answer: the create may have happened
            raise self._uncertain(what, "its answer was unreadable", label) from None
        if not isinstance(answer, dict) or not answer.get("new_contract"):
            msg = answer.get("msg") if isinstance(answer, dict) else None
            raise CloudError(self._clean(f"Vast.ai refused the {what}: {msg or answer}"))
        return int(answer["new_contract"])

    def instances(self) -> Sequence[Instance]:
        rows: list[Instance] = []
        params: dict[str, Any] = {
            "select_filters": {},
            "order_by": [{"col": "id", "dir": "asc"}],
            "limit": PAGE_SIZE,
        }
        while True:
            page = self._call("list instances", lambda sdk: sdk.show_instances_v1(dict(params)))
            rows.extend(instance_from_row(r) for r in page.get("instances") or [])
            token = page.get("next_token")
            if not token:
                return rows
            params["after_token"] = token

    def instances_labelled(self, label: str) -> Sequence[Instance]:
        """The instances carrying `label` (how an uncertain create is resolved)."""
        return [i for i in self.instances() if i.label == label]

    def instance(self, instance_id: int) -> Instance | None:
        try:
            row = self._call(
                f"show instance {instance_id}", lambda sdk: sdk.show_instance(instance_id)
            )
        except InstanceGone:
            return None
        return None if not row else instance_from_row(row)

    def stop(self, instance_id: int) -> None:
        self._call(f"stop instance {instance_id}", lambda sdk: sdk.stop_instance(instance_id))

    def start(self, instance_id: int) -> None:
        self._call(f"start instance {instance_id}", lambda sdk: sdk.start_instance(instance_id))

    def destroy(self, instance_id: int) -> None:
        """Destroy once; `InstanceGone` when it was already gone, other errors raise."""
        self._call(
            f"destroy instance {instance_id}",
            lambda sdk: sdk.destroy_instance(instance_id),
            retry="rate_limit_only",
        )

    def change_bid(self, instance_id: int, bid: float) -> None:
        self._call(
            f"change the bid of instance {instance_id}",
            lambda sdk: sdk.change_bid(instance_id, price=bid),
        )

    def label(self, instance_id: int, label: str) -> None:
        self._call(
            f"label instance {instance_id}", lambda sdk: sdk.label_instance(instance_id, label)
        )

    def credit(self) -> Credit:
        user = self._call("read the account", lambda sdk: sdk.show_user())
        value = user.get("credit", user.get("balance")) if isinstance(user, dict) else None
        return Credit(
            balance_usd=None if value is None else float(value), read_at=datetime.now(UTC)
        )

    def register_ssh_key(self, public_key: str) -> None:
        self._call("register the ssh key", lambda sdk: sdk.create_ssh_key(public_key.strip()))

    def attach_ssh_key(self, instance_id: int, public_key: str) -> None:
        self._call(
            f"attach the ssh key to instance {instance_id}",
            lambda sdk: sdk.attach_ssh(instance_id, public_key.strip()),
        )

    # -- plumbing -------------------------------------------------------------------------

    def _sdk(self, timeout_s: float) -> Sdk:
        from vastai import VastAI

        sdk = VastAI(api_key=self._key.reveal(), server_url=self.api_url, retry=1, raw=True)
        sdk.client.timeout = timeout_s
        return sdk

    def _call(self, what: str, fn: Callable[[Sdk], T], *, retry: Retry = "read") -> T:
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            last = attempt == self._attempts
            try:
                return fn(self._sdk(self._timeout_s))
            except requests.HTTPError as exc:
                response = exc.response
                status = response.status_code if response is not None else 0
                if status == 429:
                    wait = _retry_after(response, delay)
                    if last or wait > self._max_retry_after_s:
                        raise ProviderUnavailable(
                            f"Vast.ai is rate limiting ({what}); try again in {wait:.0f} s"
                        ) from None
                    self._sleep(wait)
                elif status in (502, 503, 504) and retry == "read" and not last:
                    self._sleep(delay)
                else:
                    raise self._http_error(what, response, gone_is=InstanceGone) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if retry != "read" or last:
                    reason = "timed out" if isinstance(exc, requests.Timeout) else "unreachable"
                    raise ProviderUnavailable(
                        f"Vast.ai {reason} at {self.api_url} ({what}) after {attempt} "
                        f"attempt{'s' if attempt > 1 else ''}"
                    ) from None
                self._sleep(delay)
            except (ValueError, KeyError, TypeError) as exc:
                raise CloudError(self._clean(f"Vast.ai answered {what} oddly: {exc!r}")) from None
            delay *= 2
        raise AssertionError("unreachable")

    def _http_error(
        self, what: str, response: requests.Response | None, *, gone_is: type[CloudError] | None
    ) -> CloudError:
        status = response.status_code if response is not None else 0
        detail = _server_message(response)
        if status in (401, 403):
            return CloudError(
                f"Vast.ai rejected the API key ({status}) on {what}; check VAST_API_KEY or "
                "[cloud] api_key_file"
            )
        if status == 429:
            wait = _retry_after(response, 0.0)
            later = f"; try again in {wait:.0f} s" if wait else "; try again shortly"
            return ProviderUnavailable(
                f"Vast.ai is rate limiting ({what}); it was refused, nothing was done{later}"
            )
        if status == 404 and gone_is is not None:
            return gone_is(self._clean(f"{what}: the instance no longer exists"))
        if status >= 500:
            return ProviderUnavailable(self._clean(f"Vast.ai failed to {what} ({status}){detail}"))
        return CloudError(self._clean(f"Vast.ai refused to {what} ({status}){detail}"))

    def _uncertain(self, what: str, why: str, label: str) -> CreateUncertain:
        return CreateUncertain(
            self._clean(
                f"Unsure whether the {what} happened: {why}. It is not sent again; "
                f"list instances labelled {label} to find it"
            ),
            label=label,
        )

    def _clean(self, text: str) -> str:
        return redact(" ".join(text.split()), [self._key])


def _never_connected(exc: BaseException) -> bool:
    """Whether the request never left (refused, unresolvable): then nothing can have happened."""
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if type(item).__name__ in ("NewConnectionError", "ConnectionRefusedError"):
            return True
        pending.extend([*item.args, getattr(item, "reason", None), item.__cause__])
    return False


def _retry_after(response: requests.Response | None, fallback: float) -> float:
    try:
        return max(0.0, float((response.headers if response is not None else {})["Retry-After"]))
    except (KeyError, TypeError, ValueError):
        return fallback


def _server_message(response: requests.Response | None) -> str:
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        text = body.get("msg") or body.get("error")
        if text:
            return f": {str(text)[:200]}"
    return ""


_guarded: set[int] = set()


def _guard_http_logs(key: Secret) -> None:
    """Scrub the key from anything the HTTP stack logs (it sends the key in a header, but a
    debug log or a server echo must not be the one place it leaks)."""
    marker = hash(key)
    if marker in _guarded:
        return
    _guarded.add(marker)
    log_filter = RedactingFilter([key])
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).addFilter(log_filter)


def provider_from_settings(
    settings: Settings | CloudSettings,
    *,
    simulate: bool = False,
    env: Mapping[str, str] | None = None,
) -> Provider:
    """The provider the settings name; with `simulate`, a VastProvider on this process's
    server over the shared simulated account (no key needed, nothing real is touched)."""
    cloud = settings.cloud if isinstance(settings, Settings) else settings
    if simulate:
        from rigdeck.core.cloud.simulator import SIMULATED_API_KEY, start_simulated_api

        url = start_simulated_api()
        return VastProvider(
            Secret(SIMULATED_API_KEY),
            api_url=url,
            simulated=True,
            show_unverified=cloud.show_unverified,
        )
    return VastProvider(
        load_api_key(cloud, env),
        api_url=resolve_api_url(cloud, env),
        simulated=False,
        show_unverified=cloud.show_unverified,
    )

"""`rigdeck cost`: this machine's $/h and the cloud's spend and budgets; `cost job`: one job here
against an offer; `cost upgrade`: when a part pays for itself; `cost history`: how the here/there
ratio moved; and `rigdeck bench --machine`, the torch micro-benchmark the comparison scales by.

Every figure in the JSON is ``{"value", "source", "at"}`` (plus ``low``/``high``/``note`` where
they apply), with source one of measured, ledger, offer, user, default. ``--simulate`` reads the
simulated account's ledger and offers. Exit codes: 0 done, 2 error (one red line).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rigdeck.core.errors import RigdeckError
from rigdeck.tui import words_economics as ew

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2
MAX_UNLOCK_MODELS = 40


def add_parsers(sub: Any) -> None:
    cost = sub.add_parser(
        "cost",
        help="what this machine costs per hour, cloud spend and budgets; job and upgrade costs",
        description="Local and cloud costs, each figure with its source (measured, ledger, "
        "offer, user, default) and time.",
    )
    cost.add_argument(
        "--simulate", dest="cost_simulate", action="store_true", help="the simulated account"
    )
    cost.add_argument("--json", action="store_true")
    cs = cost.add_subparsers(dest="cost_command", metavar="WHAT")

    job = cs.add_parser("job", help="a job spec (or a job) here against a cloud offer")
    job.add_argument("target", metavar="SPEC|JOB", help="a job spec .toml, or a job id or name")
    job.add_argument("--offer", type=int, metavar="ID", help="offer id (default: the spec's best)")
    job.add_argument("--json", action="store_true")

    up = cs.add_parser("upgrade", help='when an upgrade pays for itself: "ram +96G @250"')
    up.add_argument("upgrade", metavar="UPGRADE", help='e.g. "ram +96G @250", "gpu RTX 4090 @1800"')
    up.add_argument(
        "--monthly", type=float, metavar="USD", help="cloud spend it replaces per month"
    )
    up.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model to fit before and after (default: the local models, up to 40)",
    )
    up.add_argument("--json", action="store_true")

    hist = cs.add_parser("history", help="every here-vs-there comparison of a spec, oldest first")
    hist.add_argument("spec", nargs="?", metavar="SPEC", help="a job spec (default: all)")
    hist.add_argument("--json", action="store_true")


def add_bench_flags(bench: argparse.ArgumentParser) -> None:
    """The ``--machine`` side of `rigdeck bench` (the model benchmark keeps the rest)."""
    bench.add_argument(
        "--machine",
        action="store_true",
        help="the torch micro-benchmark of this machine instead of a model",
    )
    bench.add_argument(
        "--device", choices=("cpu", "cuda"), help="with --machine: which device (default: best)"
    )
    bench.add_argument(
        "--fresh",
        dest="bench_fresh",
        action="store_true",
        help="with --machine: measure again instead of reading the cache",
    )


# -- plumbing -----------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _print(line: str) -> None:
    _console().print(line, markup=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _simulated(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "cost_simulate", False) or getattr(args, "simulate", False))


def _json_out(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2))


def read_spend(simulate: bool, now: datetime) -> Any:
    """The ledger's spend (an empty one when nothing was ever rented: no file is made)."""
    from rigdeck.core.cloud.ledger import Ledger
    from rigdeck.core.economics.cloud_spend import empty_cloud_spend, read_cloud_spend
    from rigdeck.tui.cloud_context import ledger_path

    path = ledger_path(simulate)
    if not path.exists():
        return empty_cloud_spend(now)
    return read_cloud_spend(Ledger(path), now)


def cost_json(rate: Any, spend: Any, settings: Any, *, simulated: bool) -> dict[str, Any]:
    """`rigdeck cost --json`: the core report plus the ledger's totals and this month by day."""
    from rigdeck.core.economics.budget_alerts import Budget, project_budgets
    from rigdeck.core.economics.report import cost_report

    report = cost_report(
        rate, spend.summary, Budget.from_settings(settings.cloud), project_budgets(settings.cloud)
    )
    report["cloud"].update(
        {
            "total_usd": spend.total.to_json(),
            "burn_usd_per_hour": spend.burn_usd_per_hour.to_json(),
            "open_instances": spend.open_instances,
            "by_day": [{"date": d.isoformat(), "usd": usd} for d, usd in spend.by_day],
        }
    )
    report["simulated"] = simulated
    return report


def run_cost(args: argparse.Namespace, settings: Any) -> int:
    command = getattr(args, "cost_command", None)
    if command == "job":
        return _job(args, settings)
    if command == "upgrade":
        return _upgrade(args, settings)
    if command == "history":
        return _history(args, settings)
    return _summary(args, settings)


# -- rigdeck cost -------------------------------------------------------------------------------
def _summary(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.economics.power import local_rate_now

    rate = local_rate_now(settings.economics)
    simulate = _simulated(args)
    spend = read_spend(simulate, _now())
    data = cost_json(rate, spend, settings, simulated=simulate)
    if args.json:
        _json_out(data)
        return EXIT_OK
    for line in summary_lines(data):
        _print(line)
    return EXIT_OK


def _fig(doc: dict[str, Any]) -> Any:
    from rigdeck.core.economics.figures import Figure

    at = datetime.fromisoformat(doc["at"]) if doc.get("at") else None
    return Figure(doc["value"], doc["source"], at, doc.get("low"), doc.get("high"))


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The words of `rigdeck cost` from its JSON (so the two never disagree)."""
    local, cloud, budget = data["local"], data["cloud"], data["budget"]
    cur = local["currency"]
    lines = [
        "this machine: "
        + ew.figure(_fig(local["usd_per_hour"]), ew.per_hour(cur))
        + " now; idle "
        + ew.figure(_fig(local["idle_usd_per_hour"]), ew.per_hour(cur))
        + f", {ew.amount(local['idle_usd_per_month']['value'], cur)}/month left on",
        "  power at the wall "
        + ew.figure(_fig(local["watts"]), ew.watts)
        + f": GPUs {ew.watts(local['gpu_watts']['value'])} ({local['gpu_watts']['source']}),"
        + f" rest {ew.watts(local['rest_watts']['value'])} ({local['rest_watts']['source']});"
        + f" tariff {local['price_per_kwh']['value']:g} {cur}/kWh"
        + f" ({ew.SOURCE_WORDS[local['price_per_kwh']['source']]})",
    ]
    month, day, total = _fig(cloud["month_usd"]), _fig(cloud["day_usd"]), _fig(cloud["total_usd"])
    lines.append(
        f"cloud (ledger {ew.clock(month.at)}): today {ew.amount(day.value)}, this month "
        f"{ew.amount(month.value)}, in all {ew.amount(total.value)}; "
        f"{cloud['open_instances']} open, burning "
        f"{ew.amount(cloud['burn_usd_per_hour']['value'])}/h"
        + (" [simulated account]" if data.get("simulated") else "")
    )
    budgets = budget.get("by_project", {})
    for tag in sorted(set(cloud["by_project"]) | set(budgets)):
        spent = cloud["by_project"].get(tag)
        today = spent["day_usd"]["value"] if spent else 0.0
        this_month = spent["month_usd"]["value"] if spent else 0.0
        line = f"  project {tag}: today {ew.amount(today)}, this month {ew.amount(this_month)}"
        shares = _shares(budgets.get(tag, {}), today, this_month)
        lines.append(line + (f" (budget: {shares})" if shares else ""))
    lines.extend(budget_lines(budget, day.value, month.value))
    for note in data.get("notes", []):
        lines.append(f"note: {note}")
    return lines


def _shares(budget: dict[str, Any], day: float | None, month: float | None) -> str:
    """``today $4.00 of $5.00 (80%); this month ...`` for the budgets that are set."""
    parts = []
    for period, cap_key, share_key, spent in (
        ("today", "daily_usd", "day_fraction", day),
        ("this month", "monthly_usd", "month_fraction", month),
    ):
        cap = budget.get(cap_key)
        if cap:
            parts.append(
                f"{period} {ew.amount(spent)} of {ew.amount(cap)} ({budget[share_key]:.0%})"
            )
    return "; ".join(parts)


def budget_lines(budget: dict[str, Any], day: float | None, month: float | None) -> list[str]:
    shares = _shares(budget, day, month)
    lines = ["budget: " + (shares or "none set ([cloud] monthly_budget_usd)")]
    for alert in budget.get("alerts", []):
        lines.append("  " + ew.alert_words(alert))
    return lines


# -- rigdeck cost job ---------------------------------------------------------------------------
def _job(args: argparse.Namespace, settings: Any) -> int:
    data = job_report(
        settings, args.target, offer_id=args.offer, simulate=_simulated(args), record=True
    )
    if args.json:
        _json_out(data)
        return EXIT_OK
    for line in job_lines(data):
        _print(line)
    return EXIT_OK


def _resolve_target(target: str, jobs: Any) -> tuple[Path, Any]:
    """(spec path, job or None) for a spec file or a job reference."""
    path = Path(target).expanduser()
    if path.is_file():
        return path.resolve(), None
    if target.endswith(".toml"):
        raise RigdeckError(f"no such job spec: {path}")
    job = jobs.resolve(target)
    return Path(job.spec_path), job


def _pick_offer(provider: Any, spec: Any, offer_id: int | None) -> Any:
    from rigdeck.core.cloud.provider import CloudError

    if offer_id is not None:
        found = provider.search_offers(f"id={offer_id}", limit=1)
        if not found:
            raise CloudError(
                f"offer {offer_id} is not available (rented or gone); "
                "search again with `rigdeck cloud offers`"
            )
        return found[0]
    found = provider.search_offers(
        spec.offer.query, sort=spec.offer.sort, interruptible=spec.offer.interruptible, limit=1
    )
    if not found:
        raise CloudError(
            f"no offer matches the spec's query {spec.offer.query!r}; loosen it or pass --offer ID"
        )
    return found[0]


def local_tflops() -> float | None:
    """This machine's cached fp32 TFLOPS (None: not benchmarked yet; no run is started here)."""
    from rigdeck.core.economics import machine_bench
    from rigdeck.core.machine import fingerprint

    key = fingerprint().key
    for device in ("cuda", "cpu"):
        hit = machine_bench.cached(key, device)
        if hit is not None and hit.total_flops:
            return hit.total_flops
    return None


def job_report(
    settings: Any,
    target: str,
    *,
    offer_id: int | None,
    simulate: bool,
    record: bool,
    provider: Any = None,
) -> dict[str, Any]:
    """`rigdeck cost job --json` (the pane's re-run asks the same). Blocks: offers, SQLite."""
    from rigdeck.core.cloud.jobs.lifecycle import JobStore
    from rigdeck.core.cloud.jobs.spec import load_spec
    from rigdeck.core.economics.energy_log import EnergyLog
    from rigdeck.core.economics.history import ComparisonHistory
    from rigdeck.core.economics.job_compare import (
        actual_cost,
        compare_spec,
        finished_runs,
        job_json,
    )
    from rigdeck.core.economics.power import local_rate_now
    from rigdeck.tui.cloud_context import open_session

    jobs = JobStore()
    spec_path, job = _resolve_target(target, jobs)
    spec = load_spec(spec_path)
    session = open_session(settings, simulate=simulate, provider=provider)
    now = _now()
    rate = local_rate_now(settings.economics)
    actual = (
        actual_cost(job, energy=EnergyLog(), ledger=session.ledger, now=now, rate=rate)
        if job is not None
        else None
    )
    offer = _pick_offer(session.provider, spec, offer_id)
    runs = finished_runs(jobs, spec.path, session.ledger)
    disk = spec.disk_gb or settings.cloud.disk_gb
    comparison = compare_spec(
        spec.path, offer, rate, runs, disk_gb=disk, local_tflops=local_tflops(), at=now
    )
    if record:
        ComparisonHistory().record(comparison)
    data = job_json(comparison, actual)
    data["spec"] = str(spec.path)
    data["currency"] = rate.currency
    data["simulated"] = session.simulated
    return data


def job_lines(data: dict[str, Any]) -> list[str]:
    comp = data["comparison"]
    cur = data["currency"]
    lines = []
    if data.get("actual"):
        act = data["actual"]
        where = "here" if act["where"] == "here" else f"on instance {act['instance']}"
        kwh = f", {act['kwh']['value']:.3f} kWh" if act.get("kwh") else ""
        lines.append(
            f"job {act['job']} ran {where}: {ew.seconds(act['seconds']['value'])}, "
            f"{ew.figure(_fig(act['usd']), lambda v: ew.amount(v, act['currency']))}{kwh}"
        )
    offer = comp["offer"]
    lines.append(
        f"one run of {Path(comp['spec']).name}: here vs offer {offer['id']} "
        f"({offer['num_gpus']}x {offer['gpu_name']}, "
        f"read {ew.clock(_fig(comp['there']['usd']).at)})"
    )
    for side, name, currency in (("here", "here ", cur), ("there", "there", "USD")):
        doc = comp[side]
        lines.append(
            f"  {name}  {ew.figure(_fig(doc['seconds']), ew.seconds)}  "
            f"{ew.figure(_fig(doc['usd']), lambda v, c=currency: ew.amount(v, c))}"
        )
    basis = data["basis"]
    sure = {True: "", False: " (the ranges overlap: it could go either way)"}
    lines.append(
        f"  cheaper: {comp['cheaper']}{sure[comp['cheaper_certain']]}; "
        f"faster: {comp['faster']}{sure[comp['faster_certain']]}"
    )
    lines.append(
        f"  basis: {basis['kind']} — {basis['detail']}; offer x{basis['factor']['value']:.2f} "
        f"({basis['factor'].get('low', basis['factor']['value']):.2f}–"
        f"{basis['factor'].get('high', basis['factor']['value']):.2f})"
    )
    return lines


# -- rigdeck cost upgrade -----------------------------------------------------------------------
def _unlock_models(names: list[str], settings: Any) -> list[Any]:
    from rigdeck.core.errors import ModelFileError
    from rigdeck.core.models import launch

    paths: list[Path] = []
    if names:
        paths = [launch.resolve_model(n, settings.models.dirs) for n in names]
    else:
        from rigdeck.core.models.sources.local import discover

        found = discover([Path(d).expanduser() for d in settings.models.dirs])
        paths = [m.path for m in found if m.complete and not m.is_projector]
    models = []
    for path in paths[:MAX_UNLOCK_MODELS]:
        try:
            models.append(launch.model_info(path))
        except ModelFileError:
            continue  # a damaged file is the models pane's to report
    return models


def upgrade_report(
    settings: Any, text: str, *, monthly: float | None, models: list[Any], simulate: bool
) -> dict[str, Any]:
    """`rigdeck cost upgrade --json`. Blocks (the fit reads this machine)."""
    from rigdeck.core.economics.breakeven import parse_upgrade
    from rigdeck.core.economics.cloud_spend import monthly_figure
    from rigdeck.core.economics.figures import Figure
    from rigdeck.core.economics.report import upgrade_json
    from rigdeck.core.models import launch

    upgrade = parse_upgrade(text)  # a typo fails before any slower read
    if monthly is not None:
        if monthly < 0:
            raise RigdeckError(f"--monthly {monthly}: a monthly spend is 0 or more")
        month = Figure(monthly, "user", note="--monthly")
    else:
        month = monthly_figure(read_spend(simulate, _now()), settings.economics)
    base = launch.machine_budget() if models else None
    run_settings = launch.build_run_settings(settings.models) if models else None
    data = upgrade_json(
        upgrade, month, settings.economics, models=models, base=base, run_settings=run_settings
    )
    data["currency"] = settings.economics.currency
    data["sentences"] = [ew.unlock_sentence(upgrade.label, u) for u in data["unlocks"]]
    return data


def _upgrade(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.economics.breakeven import parse_upgrade

    parse_upgrade(args.upgrade)
    models = _unlock_models(args.model, settings)
    data = upgrade_report(
        settings, args.upgrade, monthly=args.monthly, models=models, simulate=_simulated(args)
    )
    if args.json:
        _json_out(data)
        return EXIT_OK
    cur = data["currency"]
    _print(ew.breakeven_line(data, cur))
    _print(
        f"  against {ew.figure(_fig(data['monthly_cloud']), lambda v: ew.amount(v))}/month of "
        f"cloud, less {ew.amount(data['extra_electricity_per_month']['value'], cur)}/month "
        "of extra electricity"
    )
    if data["breakeven_months_with_resale"] is not None:
        _print(
            f"  selling it afterwards for {ew.amount(data['resale_value']['value'], cur)}: "
            f"{ew.months(data['breakeven_months_with_resale'])}"
        )
    _print("  assumes: " + "; ".join(data["assumptions"]))
    for sentence in data["sentences"]:
        _print(sentence)
    if not data["unlocks"] and models:
        _print(f"  none of {len(models)} local models fits better or runs 25% faster with it")
    return EXIT_OK


# -- rigdeck cost history -----------------------------------------------------------------------
def _history(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.economics.history import ComparisonHistory
    from rigdeck.core.economics.job_compare import spec_key

    store = ComparisonHistory()
    specs = [spec_key(args.spec)] if args.spec else store.specs()
    data = {
        "specs": {
            key: [
                {
                    "at": r.at,
                    "offer_id": r.offer_id,
                    "gpu_name": r.gpu_name,
                    "num_gpus": r.num_gpus,
                    "basis": r.basis,
                    "speedup": r.speedup,
                    "local_seconds": r.local_seconds,
                    "cloud_seconds": r.cloud_seconds,
                    "local_usd": r.local_usd,
                    "cloud_usd": r.cloud_usd,
                    "cost_ratio": r.cost_ratio,
                    "cheaper": r.cheaper,
                    "faster": r.faster,
                }
                for r in store.history(key)
            ]
            for key in specs
        }
    }
    if args.json:
        _json_out(data)
        return EXIT_OK
    if not specs:
        _print("no comparisons yet: `rigdeck cost job SPEC` makes one")
    for key, rows in data["specs"].items():
        _print(Path(key).name)
        for r in rows:
            ratio = "-" if r["cost_ratio"] is None else f"{r['cost_ratio']:.2f}"
            _print(
                f"  {r['at']}  {r['num_gpus']}x {r['gpu_name']:<12} cloud/here $ {ratio}  "
                f"x{r['speedup'] or 0:.2f} faster there ({r['basis']}); cheaper {r['cheaper']}"
            )
    return EXIT_OK


# -- rigdeck bench --machine --------------------------------------------------------------------
def cmd_bench_machine(args: argparse.Namespace, settings: Any) -> int:
    from rigdeck.core.economics import machine_bench
    from rigdeck.core.economics.report import bench_report
    from rigdeck.core.machine import fingerprint

    device = args.device or machine_bench.default_device()
    hit = None if args.bench_fresh else machine_bench.cached(fingerprint().key, device)
    bench = hit or machine_bench.load_or_measure(device=device, refresh=True)
    data = bench_report(bench, from_cache=hit is not None)
    if args.json:
        _json_out(data)
        return EXIT_OK
    for line in bench_lines(data):
        _print(line)
    return EXIT_OK


def bench_lines(data: dict[str, Any]) -> list[str]:
    def num(v: float | None, unit: str) -> str:
        return "n/a" if v is None else f"{v:.3g} {unit}"

    tf = data["matmul_tflops"]
    where = "cached from" if data["cached"] else "measured"
    return [
        f"{data['device_name']} ({data['device']}, {data['threads']} threads, torch "
        f"{data['torch_version']}), {where} {data['measured_at']}",
        f"  matmul fp32 {num(tf['fp32'], 'TFLOPS')}, fp16 {num(tf['fp16'], 'TFLOPS')}, "
        f"bf16 {num(tf['bf16'], 'TFLOPS')}",
        f"  memory bandwidth {num(data['memory_bandwidth_gbps'], 'GB/s')}, host to GPU "
        f"{num(data['h2d_gbps'], 'GB/s')}",
        "  offers list fp32 TFLOPS as total_flops: `rigdeck cost job` scales by it",
    ]


def cmd_cost(args: argparse.Namespace, settings: Any) -> int:
    return run_cost(args, settings)


HANDLERS = {"cost": cmd_cost}

__all__ = ["HANDLERS", "add_bench_flags", "add_parsers", "cmd_bench_machine"]


# -- energy of a local run (`rigdeck run` and `rigdeck bench`) -----------------------------------
def start_meter(settings: Any) -> Any:
    """A started `RunMeter`, or None where this machine cannot be read (the run goes on)."""
    from rigdeck.core.economics.run_meter import RunMeter

    try:
        return RunMeter(settings.economics).start()
    except Exception:  # metering is a bonus: a run must never fail for it
        return None


def record_energy(
    meter: Any, kind: str, run_id: str | int | None, label: str, settings: Any
) -> dict[str, Any] | None:
    """Stop ``meter`` and keep its kWh and cost beside the run; the record's JSON, or None."""
    if meter is None:
        return None
    from rigdeck.core.economics.energy_log import EnergyLog

    energy = meter.stop()
    try:
        record = EnergyLog().record(kind, run_id, label, energy, settings.economics.currency)
    except RigdeckError:
        return None
    return record.to_json()


def energy_line(energy: dict[str, Any] | None) -> str | None:
    """``energy 0.0021 kWh, $0.001 (measured)`` for the note after a run."""
    if energy is None:
        return None
    kwh = energy["kwh"]
    cost = ew.amount(energy["cost"]["value"], energy["currency"])
    watts = "" if energy["mean_watts"] is None else f", {energy['mean_watts']:.0f} W average"
    return f"energy {kwh['value']:.4f} kWh at the wall, {cost}{watts} ({kwh['source']})"

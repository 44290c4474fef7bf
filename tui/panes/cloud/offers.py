"""The offers table: one row per offer, the fit column when a model is chosen."""

from __future__ import annotations

from rich.text import Text

from rigdeck.core.cloud.offer_fit import OfferFit
from rigdeck.core.cloud.provider import Offer
from rigdeck.tui import words
from rigdeck.tui.cli_cloud_views import per_hour
from rigdeck.tui.panes.cloud.controller import OffersView
from rigdeck.tui.panes.cloud.tables import Cell, KeyedTable

COLUMNS = ("id", "GPUs", "VRAM", "$/h", "$/TFLOP", "reliab.", "down Mb/s")
FIT_COLUMN = "fits {model}"
VERDICT_STYLES = {"gpu": "green", "partial": "yellow", "cpu": "cyan", "none": "red"}


def fit_text(fit: OfferFit | None) -> Text:
    if fit is None:
        return Text("-")
    p = fit.placement
    if not p.fits:
        return Text("no fit", style="red")
    cost = "" if fit.usd_per_mtok is None else f" {words.money(fit.usd_per_mtok)}/Mtok"
    return Text(
        f"{words.verdict_short(p)} {p.gpu_layers}L {words.tps(p.decode_tps)} tok/s{cost}",
        style=VERDICT_STYLES.get(p.verdict, ""),
    )


def offer_cells(offer: Offer, fit: OfferFit | None, view: OffersView) -> list[Cell]:
    price = offer.interruptible_min_bid if view.interruptible else offer.dph
    cells: list[Cell] = [
        str(offer.id),
        f"{offer.num_gpus}x {offer.gpu_name}",
        words.size(offer.gpu_ram_bytes),
        per_hour(price),
        "-" if not offer.tflops else words.money(offer.dph / offer.tflops),
        f"{offer.reliability:.1%}",
        f"{offer.inet_down_mbps:.0f}",
    ]
    if view.model_name is not None:
        cells.append(fit_text(fit))
    return cells


class OffersTable(KeyedTable):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(COLUMNS, **kwargs)
        self.view: OffersView | None = None

    def show(self, view: OffersView) -> None:
        self.view = view
        columns = list(COLUMNS)
        if view.interruptible:
            columns[3] = "min bid"
        if view.model_name is not None:
            columns.append(FIT_COLUMN.format(model=view.model_name[:24]))
        self.set_columns(columns)
        self.show_rows(
            [(str(o.id), offer_cells(o, view.fits.get(o.id), view)) for o in view.offers]
        )

    def selected_offer(self) -> Offer | None:
        key = self.selected_key()
        if key is None or self.view is None:
            return None
        return next((o for o in self.view.offers if str(o.id) == key), None)

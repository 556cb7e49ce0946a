"""Which symbols exist: the exchange's list (``exchangeInfo``), checks of user-given symbols with close matches,
whole quote-asset selections (``--all --quote USDT``), and the first month each symbol has an archive for."""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from marketpipe.domain.errors import InvalidInputError, UnknownSymbolError
from marketpipe.domain.value_objects import Symbol
from marketpipe.infrastructure.data.binance_api import BinanceApiClient, SymbolInfo
from marketpipe.infrastructure.data.binance_client import BinanceDataClient
from marketpipe.infrastructure.storage.atomic import atomic_write, path_lock

TRADING = "TRADING"
MAX_SUGGESTIONS = 3


class SymbolCatalog:
    """The symbols of one market, from its ``exchangeInfo`` (fetched once per catalog)."""

    def __init__(self, api: BinanceApiClient) -> None:
        self._api = api

    def symbols(self, *, quote: str | None = None, status: str | None = TRADING) -> list[SymbolInfo]:
        """The market's symbols, optionally only those quoted in ``quote`` and/or in ``status``, sorted by name."""
        wanted_quote = quote.strip().upper() if quote else None
        wanted_status = status.strip().upper() if status else None
        return sorted(
            (
                info
                for info in self._api.exchange_info()
                if (wanted_quote is None or info.quote_asset == wanted_quote)
                and (wanted_status is None or info.status == wanted_status)
            ),
            key=lambda info: info.symbol,
        )

    def check(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """``symbols`` normalised, if the exchange lists every one of them.

        Raises:
            UnknownSymbolError: naming the first unknown symbol and up to three close matches the exchange lists.
        """
        known = {info.symbol: info for info in self._api.exchange_info()}
        checked = []
        for given in symbols:
            symbol = Symbol(given).value
            if symbol not in known:
                raise unknown_symbol(symbol, known, self._api.market.value)
            checked.append(symbol)
        return tuple(dict.fromkeys(checked))

    def select(self, quote: str, *, status: str = TRADING) -> tuple[str, ...]:
        """Every symbol quoted in ``quote`` with ``status`` (``--all --quote USDT``)."""
        selected = tuple(info.symbol for info in self.symbols(quote=quote, status=status))
        if not selected:
            raise InvalidInputError(f"The {self._api.market.value} market lists no {status} symbol quoted in {quote}")
        return selected


def unknown_symbol(symbol: str, known: Iterable[str], market: str) -> UnknownSymbolError:
    """The error for a symbol the exchange does not list, with its close matches."""
    matches = tuple(difflib.get_close_matches(symbol, list(known), n=MAX_SUGGESTIONS, cutoff=0.6))
    hint = f"; did you mean {', '.join(matches)}?" if matches else "; `marketpipe symbols` lists them"
    return UnknownSymbolError(f"Unknown symbol {symbol} on Binance {market}{hint}", matches)


def first_months(
    archive: BinanceDataClient,
    symbols: Sequence[str],
    *,
    interval: str = "1d",
    workers: int = 8,
    cache: Path | None = None,
    on_probed: Callable[[], None] | None = None,
) -> dict[str, date | None]:
    """The first month each symbol has a monthly archive (None: none published), probed in parallel.

    ``cache`` (a JSON file) keeps months found before: a symbol's first month never changes once published.
    """
    known: dict[str, str] = {}
    if cache is not None and cache.is_file():
        with contextlib.suppress(ValueError, OSError):
            loaded = json.loads(cache.read_text())
            known = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}

    def probe(symbol: str) -> date | None:
        month = archive.first_available_month(symbol, interval)
        if on_probed is not None:
            on_probed()
        return month

    todo = [symbol for symbol in symbols if symbol not in known]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo) or 1))) as pool:
        found = dict(zip(todo, pool.map(probe, todo), strict=True))
    if cache is not None and any(found.values()):
        known.update({symbol: month.isoformat() for symbol, month in found.items() if month is not None})
        text = json.dumps(known, sort_keys=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with path_lock(cache.with_name(cache.name + ".lock")):
            atomic_write(cache, lambda path: path.write_text(text))
    return {symbol: found[symbol] if symbol in found else date.fromisoformat(known[symbol]) for symbol in symbols}

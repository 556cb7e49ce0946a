"""Market-data sources: Binance's public kline archive (client, parser, layout) and a local mirror/server."""

from marketpipe.infrastructure.data.binance_client import BinanceDataClient, FetchedArchive
from marketpipe.infrastructure.data.binance_layout import ArchiveFile, Market

__all__ = ["ArchiveFile", "BinanceDataClient", "FetchedArchive", "Market"]

"""Market-data sources (the Binance public archive client arrives with the ingestion issue)."""

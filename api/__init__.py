"""lorabox service: HTTP edge, persistence and the services behind them."""

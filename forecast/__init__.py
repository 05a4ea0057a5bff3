"""forecast: driving-behaviour forecasting pipeline."""

__version__ = "0.1.0"

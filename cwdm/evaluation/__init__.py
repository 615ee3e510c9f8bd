"""Evaluation: the challenge's metrics, scoring of folders, reports, montages and the linear baseline."""

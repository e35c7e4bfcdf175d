"""Outputs: MLflow tracking and read-back, leaderboards, theory tables, plots and the HTML report."""

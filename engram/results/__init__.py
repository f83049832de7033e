"""Results: what a researcher reads after runs -- MLflow tracking, reports and plots, the UI, and
DVC sweeps whose outputs are versioned."""

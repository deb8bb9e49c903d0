"""Fidelity of a world model against its real simulator: open-loop rollouts, baselines, reports."""

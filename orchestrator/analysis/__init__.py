"""What runs mean: comparisons with bootstrap intervals and verdicts, history and change points, Lambda
cost, memory sweeps, and calibration against a target that knows the truth."""

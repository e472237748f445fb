"""Evaluation: metrics, the shapes evaluator, cost meters, the bench runner and reports."""

"""Arithmetic that fails on an empty list, called from a task."""


def mean(values: list[float]) -> float:
    return sum(values) / len(values)

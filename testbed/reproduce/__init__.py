"""`testbed reproduce`: the three papers' suites (experiments/papers/<paper>/), their figures and claims tables."""

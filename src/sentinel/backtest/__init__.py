"""Backtest: what rules would have raised on stored readings, without paging anyone.

`sources` reads stored readings in the order the daemon evaluated them, `replay` runs the
real rule engine and incident book over them on a simulated clock, `compare` sets the result
beside the recorded incidents or another rule set, `report` writes it for people or
programs, and `command` is what `sentinel backtest` calls.
"""

"""Incidents: the state machine people act on, its persistent store and its stream."""

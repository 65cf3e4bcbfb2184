"""Notification: the outbox, storm control, the apprise sender and the message templates."""

"""Rules: declarative conditions over readings and silence, evaluated purely."""

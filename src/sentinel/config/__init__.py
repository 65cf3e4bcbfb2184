"""Configuration: the settings model, loading with environment overrides, the device
inventory, device profiles, and the cross-checks of `sentinel check`."""

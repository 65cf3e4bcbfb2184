"""Reports computed from the stored incidents and their audit trail."""

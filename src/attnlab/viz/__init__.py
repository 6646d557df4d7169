"""Pictures people read: training curves (and, later, attention maps)."""
